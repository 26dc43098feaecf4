"""Trees git could read differently from gitmirror: refused by git (``receive.fsckObjects``) and by
the hook on its own, each in one ``remote: gitmirror:`` line; found by ``verify`` in history written
around the hook; refused by every reader instead of served; and the pure walker on raw trees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gitmirror.audit.hooks import install
from gitmirror.model.manifest import loads, manifest_path
from gitmirror.serve.render import render_site
from gitmirror.storage import gittree
from gitmirror.storage.repo import MalformedTreeError, MetadataRepo
from gitmirror.storage.store import BlobStore

from conftest import isolated_env

DEMO = manifest_path("demo-pkg")  # projects/de/mo/demo-pkg.jsonl
WHEEL = "demo_pkg-1.0-py3-none-any.whl"


def manifest(sha256: str) -> bytes:
    header = {"gitmirror-manifest": 1, "name": "demo-pkg"}
    line = {
        "filename": WHEEL,
        "version": "1.0",
        "sha256": sha256,
        "size": 3,
        "requires-python": None,
        "upload-time": None,
        "yanked": False,
        "core-metadata": None,
        "first-seen": "2026-01-01T00:00:00Z",
    }
    text = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in (header, line))
    return loads(text.encode(), DEMO).dumps()


ORIGINAL, HOSTILE = manifest("ab" * 32), manifest("cd" * 32)


def git(*args: str, cwd: Path, data: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(["git", *args], cwd=cwd, input=data, capture_output=True, env=isolated_env(), timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr.decode()}")
    return result


def out(*args: str, cwd: Path, data: bytes | None = None) -> str:
    return git(*args, cwd=cwd, data=data).stdout.decode().strip()


def raw_tree(entries: list[tuple[str, bytes, str]]) -> bytes:
    """Tree bytes exactly as given: (mode text, name, hex id), no sorting, no checks."""
    return b"".join(mode.encode() + b" " + name + b"\0" + bytes.fromhex(sha) for mode, name, sha in entries)


class Objects:
    """Writes hostile objects with the real git binary into the repository at ``cwd``."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.original = self.blob(ORIGINAL)
        self.hostile = self.blob(HOSTILE)
        self.mo = self.tree([("100644", b"demo-pkg.jsonl", self.original)])

    def blob(self, data: bytes) -> str:
        return out("hash-object", "-w", "--stdin", cwd=self.cwd, data=data)

    def tree(self, entries: list[tuple[str, bytes, str]]) -> str:
        return out("hash-object", "-t", "tree", "--literally", "-w", "--stdin", cwd=self.cwd, data=raw_tree(entries))

    def root(
        self, mo: str | None = None, de: list | None = None, projects: list | None = None, root: list | None = None
    ) -> str:
        """The mirror's layout with any level replaced: root/projects/de/mo/demo-pkg.jsonl."""
        de_tree = self.tree(de or [("40000", b"mo", mo or self.mo)])
        projects_tree = self.tree(projects or [("40000", b"de", de_tree)])
        return self.tree(root or [("40000", b"projects", projects_tree)])

    def commit(self, tree: str, message: str, parent: str | None = None) -> str:
        return out("commit-tree", tree, *(("-p", parent) if parent else ()), "-m", message, cwd=self.cwd)


def _file_and_dir(o: Objects) -> str:
    return o.root(mo=o.tree([("100644", b"demo-pkg.jsonl", o.original), ("40000", b"demo-pkg.jsonl", o.mo)]))


def _unsorted(o: Objects) -> str:
    base = o.root()
    projects = out("rev-parse", f"{base}:projects", cwd=o.cwd)
    conflicts = o.tree([("100644", b"demo-pkg.jsonl", o.hostile)])
    return o.root(root=[("40000", b"projects", projects), ("40000", b"conflicts", conflicts)])


def _zero_padded(o: Objects) -> str:
    projects = out("rev-parse", f"{o.root()}:projects", cwd=o.cwd)
    return o.root(root=[("040000", b"projects", projects)])


def _gitlink(o: Objects) -> str:
    projects = out("rev-parse", f"{o.root()}:projects", cwd=o.cwd)
    return o.root(root=[("40000", b"projects", projects), ("160000", b"vendor", "12" * 20)])


def _beside(o: Objects, name: bytes, mode: str = "100644") -> str:
    projects = out("rev-parse", f"{o.root()}:projects", cwd=o.cwd)
    return o.root(root=sorted([(mode, name, o.hostile), ("40000", b"projects", projects)], key=lambda e: e[1]))


SYMLINK_RULE = "symlink refused: manifests and audit logs must be regular files"
DUPLICATE = "duplicate entry name (git and dulwich would read different ones)"
# (id, hostile root tree, the one line the hook prints, git's fsck message id or None when git accepts it)
CASES: list[tuple[str, Callable[[Objects], str], str, str | None]] = [
    (
        "slash",
        lambda o: o.root(de=[("40000", b"mo", o.mo), ("100644", b"mo/demo-pkg.jsonl", o.hostile)]),
        "projects/de/mo/demo-pkg.jsonl: entry name contains '/'",
        "fullPathname",
    ),
    (
        "duplicate",
        lambda o: o.root(
            mo=o.tree([("100644", b"demo-pkg.jsonl", o.original), ("100644", b"demo-pkg.jsonl", o.hostile)])
        ),
        f"{DEMO}: {DUPLICATE}",
        "duplicateEntries",
    ),
    ("file-and-dir", _file_and_dir, f"{DEMO}: {DUPLICATE}", "duplicateEntries"),
    ("unsorted", _unsorted, "conflicts: entry out of git's canonical order (git would not find it)", "treeNotSorted"),
    ("zero-padded", _zero_padded, "projects: zero-padded mode 040000", "zeroPaddedFilemode"),
    (
        "dotdot",
        lambda o: o.root(projects=[("40000", b"..", o.root()), ("40000", b"de", o.tree([("40000", b"mo", o.mo)]))]),
        "projects/..: entry named '..'",
        "hasDotdot",
    ),
    (
        "empty-name",
        lambda o: o.root(mo=o.tree([("100644", b"", o.hostile), ("100644", b"demo-pkg.jsonl", o.original)])),
        "projects/de/mo/: empty entry name",
        "emptyName",
    ),
    ("dotgit", lambda o: _beside(o, b".GIT"), ".GIT: entry name is a spelling of .git", "hasDotgit"),
    (
        "mode-664",
        lambda o: o.root(mo=o.tree([("100664", b"demo-pkg.jsonl", o.hostile)])),
        f"{DEMO}: unknown mode 100664",
        None,
    ),
    (
        "symlink",
        lambda o: o.root(mo=o.tree([("120000", b"demo-pkg.jsonl", o.hostile)])),
        f"{DEMO}: {SYMLINK_RULE}",
        None,
    ),
    ("gitlink", _gitlink, "vendor: gitlink (submodule) entries are refused: the repository has no submodules", None),
    (
        "gitmodules",
        lambda o: _beside(o, b".gitmodules"),
        ".gitmodules: entry name is a spelling of .gitmodules (the mirror has no submodules)",
        None,
    ),
]
IDS = [case[0] for case in CASES]
# git's own client refuses to pack a tree with an empty name ("fatal: empty filename in tree entry"),
# so that one reaches a repository only around git: verify and the unit tests cover it.
PUSHABLE = [case for case in CASES if case[0] != "empty-name"]
PUSH_IDS = [case[0] for case in PUSHABLE]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository holding one commit with the demo manifest, the hook installed."""
    bare = tmp_path_factory.mktemp("template") / "served.git"
    repo = MetadataRepo.init(bare)
    repo.write_commit({DEMO: ORIGINAL}, "add demo-pkg")
    repo.close()
    install(bare, sys.executable)
    return bare


@pytest.fixture
def remote(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    bare = tmp_path / "served.git"
    shutil.copytree(template, bare)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    return bare, work


def push_hostile(bare: Path, work: Path, build: Callable[[Objects], str]) -> subprocess.CompletedProcess[bytes]:
    objects = Objects(work)
    commit = objects.commit(build(objects), "hostile tree", parent=out("rev-parse", "HEAD", cwd=work))
    return git("push", "origin", f"{commit}:refs/heads/main", cwd=work, check=False)


def hook_lines(stderr: str) -> list[str]:
    """The hook's lines naming a path and a rule (not the commit header or the closing line)."""
    return [
        line.rstrip()
        for line in stderr.splitlines()
        if line.startswith("remote: gitmirror: ")
        and "breaks the immutability policy" not in line
        and "push rejected" not in line
    ]


@pytest.mark.parametrize("name, build, line, fsck_id", PUSHABLE, ids=PUSH_IDS)
def test_git_itself_refuses_what_its_fsck_flags(
    remote: tuple[Path, Path], name: str, build: Callable[[Objects], str], line: str, fsck_id: str | None
) -> None:
    bare, work = remote
    before = out("rev-parse", "main", cwd=bare)
    result = push_hostile(bare, work, build)
    stderr = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in stderr
    if fsck_id is not None:  # install-hook set receive.fsckObjects: git refuses before the hook runs
        assert f": {fsck_id}: " in stderr, stderr
        assert hook_lines(stderr) == []
    else:  # git accepts these modes and names: the hook is the one refusing
        assert hook_lines(stderr) == [f"remote: gitmirror: {line}"], stderr
    assert out("rev-parse", "main", cwd=bare) == before


@pytest.mark.parametrize("name, build, line, fsck_id", PUSHABLE, ids=PUSH_IDS)
def test_the_hook_alone_refuses_each_in_one_line(
    remote: tuple[Path, Path], name: str, build: Callable[[Objects], str], line: str, fsck_id: str | None
) -> None:
    bare, work = remote
    git("config", "receive.fsckObjects", "false", cwd=bare)
    before = out("rev-parse", "main", cwd=bare)
    result = push_hostile(bare, work, build)
    stderr = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in stderr
    assert hook_lines(stderr) == [f"remote: gitmirror: {line}"], stderr
    assert out("rev-parse", "main", cwd=bare) == before


def test_install_hook_turns_on_gits_object_checks(template: Path) -> None:
    config = out("config", "--list", cwd=template)
    assert "receive.fsckobjects=true" in config and "transfer.fsckobjects=true" in config


# -- history written around the hook -----------------------------------------------------------


def write_around_the_hook(bare: Path, build: Callable[[Objects], str]) -> str:
    objects = Objects(bare)
    commit = objects.commit(build(objects), "hostile tree", parent=out("rev-parse", "main", cwd=bare))
    git("update-ref", "refs/heads/main", commit, cwd=bare)
    return commit


def gitmirror(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitmirror", *args],
        cwd=cwd,
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name, build, line", [case[:3] for case in CASES], ids=IDS)
def test_verify_reports_a_malformed_tree_in_history(
    remote: tuple[Path, Path], name: str, build: Callable[[Objects], str], line: str
) -> None:
    bare, _work = remote
    write_around_the_hook(bare, build)
    # Bury it under a good commit: verify walks the whole history, not the tip.
    good = Objects(bare).commit(
        out("rev-parse", "main~1^{tree}", cwd=bare), "later", parent=out("rev-parse", "main", cwd=bare)
    )
    git("update-ref", "refs/heads/main", good, cwd=bare)
    result = gitmirror("verify", "--repo", str(bare), "--history-only", cwd=bare.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"(hostile tree): {line}" in result.stdout
    assert "Traceback" not in result.stderr


def test_readers_refuse_what_git_reads_differently(remote: tuple[Path, Path], tmp_path: Path) -> None:
    """A duplicate name: git reads the first entry, dulwich's dict the last; gitmirror reads neither."""
    bare, _work = remote
    site = tmp_path / "site"
    store = BlobStore(tmp_path / "store")
    repo = MetadataRepo(bare)
    render_site(repo, store, repo.tip(), site, files_mode="none")
    served = (site / "simple" / "demo-pkg" / "index.json").read_bytes()
    assert "ab" * 32 in served.decode()
    write_around_the_hook(bare, CASES[IDS.index("duplicate")][1])
    assert git("show", f"main:{DEMO}", cwd=bare).stdout == ORIGINAL  # what git shows
    repo = MetadataRepo(bare)
    tip = repo.tip()
    expected = f"malformed tree: {DEMO}: {DUPLICATE}"
    for read in (
        lambda: repo.read_path(tip, DEMO),
        lambda: list(repo.manifest_blobs(tip)),
        lambda: render_site(repo, store, tip, site, files_mode="none"),
    ):
        with pytest.raises(MalformedTreeError) as caught:
            read()
        assert str(caught.value) == expected
    assert (site / "simple" / "demo-pkg" / "index.json").read_bytes() == served  # nothing else served
    (tmp_path / "mirror.yaml").write_text(f"upstream: http://127.0.0.1:9/\nrepo: {bare}\nstore: {tmp_path / 'store'}\n")
    result = gitmirror("render", "--out", str(site), "--files", "none", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"gitmirror: error: {expected}"]


def test_a_gitlink_is_refused_by_readers_not_crashed_on(remote: tuple[Path, Path]) -> None:
    bare, _work = remote
    write_around_the_hook(bare, _gitlink)
    repo = MetadataRepo(bare)
    with pytest.raises(MalformedTreeError, match="vendor: gitlink"):
        repo.read_path(repo.tip(), "vendor")


# -- the pure walker ----------------------------------------------------------------------------

A, B = "aa" * 20, "bb" * 20


def problems(entries: list[tuple[str, bytes, str]], path: str = "") -> list[str]:
    return [str(problem) for problem in gittree.parse(raw_tree(entries), path).problems]


def test_a_canonical_tree_has_no_problems() -> None:
    entries = [
        ("100644", b"a", A),
        ("40000", b"a-b", B),
        ("100755", b"a.c", A),
        ("40000", b"a0", B),
        ("120000", b"link", A),
    ]
    listing = gittree.parse(raw_tree(entries))
    assert listing.problems == [] and list(listing.entries) == [b"a", b"a-b", b"a.c", b"a0", b"link"]
    assert listing.checked()[b"a-b"] == (0o40000, B.encode())


@pytest.mark.parametrize(
    "entries, expected",
    [
        ([("100644", b"x/y", A)], "d/x/y: entry name contains '/'"),
        ([("100644", b"", A)], "d/: empty entry name"),
        ([("40000", b".", B)], "d/.: entry named '.'"),
        ([("100644", b"\xff", A)], "d/\\xff: entry name is not UTF-8"),
        ([("100644", b"a\nb", A)], "d/a\\x0ab: entry name contains a control character"),
        ([("100644", b"a", A), ("100644", b"a", B)], f"d/a: {DUPLICATE}"),
        ([("100644", b"a", A), ("100644", b"a-b", A), ("40000", b"a", B)], f"d/a: {DUPLICATE}"),
        ([("100644", b"b", A), ("100644", b"a", A)], "d/a: entry out of git's canonical order (git would not find it)"),
        (
            [("40000", b"a", B), ("100644", b"a-b", A)],
            "d/a-b: entry out of git's canonical order (git would not find it)",
        ),
        ([("040000", b"a", B)], "d/a: zero-padded mode 040000"),
        ([("0100644", b"a", A)], "d/a: zero-padded mode 0100644"),
        ([("100664", b"a", A)], "d/a: unknown mode 100664"),
        ([("1x0644", b"a", A)], "d/a: malformed mode 1x0644"),
        ([("160000", b"a", A)], "d/a: gitlink (submodule) entries are refused: the repository has no submodules"),
        ([("100644", b"a", "00" * 20)], "d/a: entry points at the null object id"),
    ],
)
def test_each_rule(entries: list[tuple[str, bytes, str]], expected: str) -> None:
    assert problems(entries, "d") == [expected]


@pytest.mark.parametrize(
    "name",
    [
        b".git",
        b".GIT",
        b".git.",
        b".git . ",
        b"git~1",
        b"GIT~1",
        b".git:stream",
        b".git\\x",
        "\u200c.g\u200dit".encode(),
    ],
)
def test_spellings_of_dotgit(name: bytes) -> None:
    assert gittree.name_problem(name) == "entry name is a spelling of .git"


@pytest.mark.parametrize("name", [b".gitmodules", b".GITMODULES ", b"gitmod~1", b"GI7EBA~1"])
def test_spellings_of_dotgitmodules(name: bytes) -> None:
    assert "spelling of .gitmodules" in (gittree.name_problem(name) or "")


@pytest.mark.parametrize("name", [b".github", b".gitignore", b"git", b"git~2", b"demo-pkg.jsonl", "caf\u00e9".encode()])
def test_ordinary_names_pass(name: bytes) -> None:
    assert gittree.name_problem(name) is None


def test_symlinks_are_refused_only_among_manifests_and_audit_logs() -> None:
    for path in ("projects", "projects/de/mo/demo-pkg.jsonl", "conflicts/x.jsonl", "marks/x.jsonl"):
        assert gittree.mode_problem(path, 0o120000) == SYMLINK_RULE
    assert gittree.mode_problem("README.md", 0o120000) is None
    assert gittree.mode_problem("projects-old/x", 0o120000) is None
    assert gittree.mode_problem("README.md", 0o160000) is not None  # gitlinks: everywhere


def test_a_second_entry_never_stands_in_for_a_refused_first() -> None:
    listing = gittree.parse(raw_tree([("100664", b"a", A), ("100644", b"a", B)]))
    assert [p.rule for p in listing.problems] == ["unknown mode 100664", DUPLICATE]
    assert listing.entries == {} and listing.dropped == {b"a"}
    with pytest.raises(gittree.TreeError, match=r"^malformed tree: a: unknown mode 100664 \(and 1 more\)$"):
        listing.checked()


def test_changes_walk_only_what_differs_and_report_new_problems(tmp_path: Path) -> None:
    git("init", "-q", "--bare", str(tmp_path / "r.git"), cwd=tmp_path)
    objects = Objects(tmp_path / "r.git")
    store = MetadataRepo(tmp_path / "r.git").git.object_store
    old, new = objects.root(), objects.root(mo=objects.tree([("100644", b"demo-pkg.jsonl", objects.hostile)]))
    [change] = gittree.changes(store, old.encode(), new.encode())
    assert change.type == "modify" and change.new.path == DEMO.encode() and change.new.sha == objects.hostile.encode()
    assert list(gittree.changes(store, old.encode(), old.encode())) == []
    bad = objects.root(
        mo=objects.tree([("100644", b"demo-pkg.jsonl", objects.original), ("100644", b"x/y", objects.hostile)])
    )
    found: list[gittree.Problem] = []
    assert list(gittree.changes(store, old.encode(), bad.encode(), found.append)) == []
    assert [str(p) for p in found] == ["projects/de/mo/x/y: entry name contains '/'"]
    with pytest.raises(gittree.TreeError):
        list(gittree.changes(store, old.encode(), bad.encode()))


def test_a_truncated_tree_is_one_problem() -> None:
    raw = raw_tree([("100644", b"a", A)])[:-1]
    assert [str(p) for p in gittree.parse(raw).problems] == ["(root tree): unparseable tree: truncated tree entry"]


def test_verify_of_a_malformed_tip_reports_instead_of_failing(remote: tuple[Path, Path]) -> None:
    bare, _work = remote
    write_around_the_hook(bare, CASES[IDS.index("duplicate")][1])
    result = gitmirror("verify", "--repo", str(bare), cwd=bare.parent)
    assert result.returncode == 1 and result.stderr == ""
    assert f"(hostile tree): {DEMO}: {DUPLICATE}" in result.stdout
    assert f"main: malformed tree: {DEMO}: {DUPLICATE}" in result.stdout
