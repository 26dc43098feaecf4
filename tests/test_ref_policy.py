"""Names that shadow other names, histories that rewrite dates: the ref policy under real ``git push``
(to a bare repository with the hook, and through ``git daemon`` on 127.0.0.1), the resolver's
index of commit ids, out-of-range dates, and ``verify`` on a backdated commit written around the hook."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dulwich.objects import Commit, Tree

from gitmirror.audit.hooks import install
from gitmirror.audit.verify import verify
from gitmirror.model.manifest import format_time
from gitmirror.storage import history
from gitmirror.storage.refpolicy import (
    MAX_CLOCK_SKEW,
    date_problem,
    looks_like_commit_id,
    looks_like_date,
    name_problem,
    ref_problem,
    stamp,
)
from gitmirror.storage.repo import MetadataRepo, RepoError
from gitmirror.storage.snapshot import (
    COMMIT,
    DATE,
    Resolver,
    RevisionError,
    at_time,
    check_tag_name,
    commit_index,
    first_parent_line,
    resolve,
)

from conftest import free_port, isolated_env

DEMO = "projects/de/mo/demo-pkg.jsonl"


# -- the pure rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("release-2026.1", None),
        ("incoming", None),
        ("main", None),
        ("deadbeef", "looks like a commit id"),
        ("DEADBEEF", "looks like a commit id"),
        ("abc", None),  # 3 hex digits are not read as an id
        ("a" * 40, "looks like a commit id"),
        ("2026-01-31", "looks like a date"),
        ("2026-01-31T12:00:00Z", "not a valid name"),  # ':' is not allowed by git anyway
        ("2026-13-45", "looks like a date"),  # a date the resolver would refuse still shadows one
        ("HEAD", "HEAD is reserved"),
        ("a/b", "not a valid name"),
        ("x..y", "not a valid name"),
        ("v1.lock", "not a valid name"),
        ("bell\x07", "not a valid name"),
        ("del\x7f", "not a valid name"),
        ("", "not a valid name"),
    ],
)
def test_name_rules(name: str, expected: str | None) -> None:
    problem = name_problem(name)
    assert (problem is None) if expected is None else (expected in (problem or "")), problem


def test_lookalike_checks_are_full_matches() -> None:
    assert not looks_like_commit_id("deadbeef\n") and not looks_like_date("2026-01-31\n")
    assert looks_like_date("2026-01-31 12:00") and not looks_like_date("2026-01-31x")
    assert not looks_like_date("٢٠٢٦-٠١-٣١")  # other scripts' digits are not dates


@pytest.mark.parametrize(
    "ref, expected",
    [
        (b"refs/heads/main", None),
        (b"refs/tags/v1", None),
        (b"refs/replace/" + b"a" * 40, "only refs/heads/<name> and refs/tags/<name>"),
        (b"refs/notes/commits", "only refs/heads/<name> and refs/tags/<name>"),
        (b"refs/foo/bar", "only refs/heads/<name> and refs/tags/<name>"),
        (b"HEAD", "only refs/heads/<name> and refs/tags/<name>"),
        (b"refs/heads/team/x", "not a valid name"),
        (b"refs/tags/\xff", "not UTF-8"),
    ],
)
def test_ref_namespace(ref: bytes, expected: str | None) -> None:
    problem = ref_problem(ref)
    assert (problem is None) if expected is None else (expected in (problem or "")), problem


def test_date_rule() -> None:
    now = 1_800_000_000
    assert date_problem(now - 10, now - 20, now) is None
    assert date_problem(now - 20, now - 20, now) is None  # equal dates are not going back
    assert date_problem(now + MAX_CLOCK_SKEW, None, now) is None
    assert "earlier than its first parent's" in (date_problem(now - 30, now - 20, now) or "")
    assert "in the future" in (date_problem(now + MAX_CLOCK_SKEW + 1, now, now) or "")
    assert "in the future" in (date_problem(2**62, now, now) or "")  # not representable: still one line


# -- the resolver ------------------------------------------------------------------------------------


def build_history(path: Path, count: int, start: int = 1_700_000_000) -> tuple[MetadataRepo, list[bytes]]:
    """A bare repository whose main has ``count`` commits one second apart (written in one pack)."""
    repo = MetadataRepo.init(path)
    ids = append_commits(repo, None, count, start)
    return repo, ids


def append_commits(repo: MetadataRepo, parent: bytes | None, count: int, start: int) -> list[bytes]:
    tree = Tree()
    objects: list = [(tree, None)]
    ids = []
    for number in range(count):
        commit = Commit()
        commit.tree = tree.id
        commit.parents = [parent] if parent else []
        commit.author = commit.committer = b"Test <test@example.invalid>"
        commit.author_time = commit.commit_time = start + number
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = f"commit {start + number}\n".encode()
        objects.append((commit, None))
        parent = commit.id
        ids.append(commit.id)
    repo.git.object_store.add_objects(objects)
    repo.git.refs[b"refs/heads/main"] = parent
    return ids


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[MetadataRepo, list[bytes]]:
    repo, ids = build_history(tmp_path_factory.mktemp("big") / "repo.git", 2000)
    yield repo, ids
    repo.close()


class CountingWalker(history.Walker):
    """dulwich's Walker, counting walks and the commits they visit."""

    walks = 0
    visited = 0

    def __init__(self, *args, **kwargs) -> None:
        type(self).walks += 1
        super().__init__(*args, **kwargs)

    def __iter__(self):
        for entry in super().__iter__():
            type(self).visited += 1
            yield entry


def test_abbreviated_ids_resolve_from_an_index_misses_walk_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "Walker", CountingWalker)
    monkeypatch.setattr(CountingWalker, "walks", 0)
    monkeypatch.setattr(CountingWalker, "visited", 0)
    repo, ids = build_history(tmp_path / "repo.git", 2000)
    target = ids[1234]
    assert resolve(repo, target.decode()[:9]).commit == target
    assert resolve(repo, target.decode()[:9].upper()).kind == COMMIT
    assert (CountingWalker.walks, CountingWalker.visited) == (1, 2000)  # built once

    resolver = Resolver(repo)
    misses = [f"{n:04x}fffff"[:9] for n in range(300)]
    misses = [m for m in misses if not any(sha.startswith(m.encode()) for sha in ids)]

    def hammer() -> None:
        for rev in misses:
            with pytest.raises(RevisionError, match="unknown revision"):
                resolver(rev)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (CountingWalker.walks, CountingWalker.visited) == (1, 2000)  # 8 x ~300 misses: no walk at all
    assert commit_index(repo).walks == 1  # one index per repository, shared by every resolver

    # A moved tip walks only what is new; the new commit then resolves.
    new = append_commits(repo, ids[-1], 1, 1_700_000_000 + 5000)[0]
    assert resolve(repo, new.decode()[:10]).commit == new
    assert (CountingWalker.walks, CountingWalker.visited) == (2, 2001)
    assert repo.resolve(new.decode()[:10]) == new  # MetadataRepo.resolve is the same resolution
    repo.close()


def test_ambiguous_abbreviation_and_full_ids(big: tuple[MetadataRepo, list[bytes]]) -> None:
    repo, ids = big
    prefixes: dict[bytes, int] = {}
    for sha in ids:
        prefixes[sha[:4]] = prefixes.get(sha[:4], 0) + 1
    shared = next(prefix for prefix, count in prefixes.items() if count > 1)
    with pytest.raises(RevisionError, match=rf"revision '{shared.decode()}' is ambiguous \(\d+ commits\)"):
        resolve(repo, shared.decode())
    with pytest.raises(RepoError, match="ambiguous"):
        repo.resolve(shared.decode())
    full = ids[7].decode()
    assert resolve(repo, full.upper()).commit == ids[7]
    with pytest.raises(RevisionError, match="unknown commit"):
        resolve(repo, "f" * 40)


def test_a_full_commit_id_is_never_shadowed_by_a_ref(tmp_path: Path) -> None:
    repo, ids = build_history(tmp_path / "repo.git", 5)
    # Refs the hook would refuse, written around it: a branch named like another commit's id.
    repo.git.refs[b"refs/heads/" + ids[1]] = ids[3]
    repo.git.refs[b"refs/tags/" + ids[2][:8]] = ids[4]
    assert (resolve(repo, ids[1].decode()).commit, resolve(repo, ids[1].decode()).kind) == (ids[1], COMMIT)
    assert resolve(repo, ids[2][:8].decode()).commit == ids[4]  # an old look-alike tag keeps its meaning
    repo.close()


@pytest.mark.parametrize(
    "rev, message",
    [
        ("0001-01-01", "no commit on main at or before"),
        ("0001-01-01T00:00:00+14:00", "invalid date"),
        ("9999-12-31T23:59:59-14:00", "invalid date"),
        ("2026-13-45", "invalid date"),
        ("2026-02-30T25:61", "invalid date"),
        ("2026-01-31T12:00+99:99", "invalid date"),
        ("\x00", "unknown revision"),
        ("../../config", "unknown revision"),
        ("a..b", "unknown revision"),
        ("\udc80", "unknown revision"),
        ("zz" * 30, "unknown revision"),
    ],
)
def test_bad_revisions_are_one_line_revision_errors(
    big: tuple[MetadataRepo, list[bytes]], rev: str, message: str
) -> None:
    repo, _ = big
    with pytest.raises(RevisionError, match=message) as raised:
        Resolver(repo)(rev)
    assert "\n" not in str(raised.value)


def test_far_dates_in_range_resolve(big: tuple[MetadataRepo, list[bytes]]) -> None:
    repo, ids = big
    latest = resolve(repo, "9999-12-31T23:59:59+14:00")
    assert (latest.kind, latest.commit) == (DATE, ids[-1])
    assert resolve(repo, "2023-11-14T22:13:20Z").commit == ids[0]  # the first commit's second


def test_dates_resolve_from_the_cached_first_parent_line(tmp_path: Path) -> None:
    repo, ids = build_history(tmp_path / "repo.git", 300)
    start = 1_700_000_000
    assert resolve(repo, format_time(datetime.fromtimestamp(start + 99.5, UTC))).commit == ids[99]
    for offset in range(0, 300, 7):
        assert at_time(repo, datetime.fromtimestamp(start + offset, UTC)) == ids[offset]
    line = first_parent_line(repo, "main")
    assert line.walks == 1  # read once, then every date is a bisection
    new = append_commits(repo, ids[-1], 2, start + 1000)
    assert at_time(repo, datetime.fromtimestamp(start + 1000, UTC)) == new[0]
    assert line.walks == 2
    repo.close()


def test_a_line_dated_out_of_order_resolves_as_a_walk_back_from_the_tip_would(tmp_path: Path) -> None:
    """A history written before the date rule (or around the hook) keeps its old meaning."""
    repo = MetadataRepo.init(tmp_path / "repo.git")
    times = [100, 200, 150, 300, 250, 400]
    tip = None
    for when in times:
        tip = append_commits(repo, tip, 1, when)[0]
    line = [tip]
    while parents := repo.commit(line[-1]).parents:
        line.append(parents[0])
    for limit in range(90, 420, 10):
        expected = next((sha for sha in line if repo.commit(sha).commit_time <= limit), None)
        moment = datetime.fromtimestamp(limit, UTC)
        if expected is None:
            with pytest.raises(RevisionError, match="the first is from 1970-01-01T00:01:40Z"):
                at_time(repo, moment)
        else:
            assert at_time(repo, moment) == expected, limit
    repo.close()


def test_tag_names_follow_the_ref_policy() -> None:
    assert check_tag_name("product-2026.1") == "product-2026.1"
    for bad in ("cafe", "HEAD", "2026-01-31", "a/b"):
        with pytest.raises(RevisionError, match=f"invalid tag name {bad!r}"):
            check_tag_name(bad)


# -- dates written by the mirror and checked by verify ------------------------------------------


def test_write_commit_never_dates_before_its_parent_and_verify_reports_a_backdated_commit(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo.git")
    ahead = int(time.time()) + 120  # a parent from a clock two minutes fast
    parent = append_commits(repo, None, 1, ahead)[0]
    child = repo.write_commit({"README": b"x\n"}, "next", parent=parent)
    assert repo.commit(child).commit_time == ahead  # max(now, parent): still in order
    assert verify(repo, None).problems == []
    # Written around the hook: a commit dated two hours back, then one dated a day ahead.
    backdated = append_commits(repo, child, 1, ahead - 7200)[0]
    future = append_commits(repo, backdated, 1, ahead + 86400)[0]
    assert verify(repo, None).problems == [
        f"commit {future.decode()[:12]} (commit {ahead + 86400}): main: committer date "
        f"{stamp(ahead + 86400)} is in the future (more than {MAX_CLOCK_SKEW} s ahead)",
        f"commit {backdated.decode()[:12]} (commit {ahead - 7200}): main: committer date "
        f"{stamp(ahead - 7200)} is earlier than its first parent's ({stamp(ahead)}); dates on main never go back",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gitmirror", "verify", "--repo", str(repo.path), "--history-only"],
        env=isolated_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "dates on main never go back" in result.stdout
    repo.close()


# -- pushes through git ---------------------------------------------------------------------------


class Remote:
    """A bare repository with the hook installed and a clone to push from."""

    def __init__(self, source: Path, tmp_path: Path) -> None:
        self.bare = tmp_path / "served.git"
        shutil.copytree(source, self.bare)
        install(self.bare, sys.executable)
        self.env = isolated_env(HOME=str(tmp_path))
        self.work = tmp_path / "work"
        self.git("clone", "-q", str(self.bare), str(self.work), cwd=tmp_path)
        self.url = "origin"

    def git(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd or self.work,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr}")
        return result

    def commit(self, message: str, env: dict[str, str] | None = None) -> str:
        self.commits = getattr(self, "commits", 0) + 1
        (self.work / f"note-{self.commits}").write_text(f"{message}\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, env=env)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, *refspecs: str) -> subprocess.CompletedProcess[str]:
        return self.git("push", self.url, *refspecs, check=False)

    def refs(self) -> str:
        return self.git("for-each-ref", cwd=self.bare).stdout


@pytest.fixture
def remote(synced_repo: Path, tmp_path: Path) -> Remote:
    return Remote(synced_repo, tmp_path)


def assert_refused(remote: Remote, refspecs: tuple[str, ...], expected: str) -> None:
    """The push fails, the pusher sees one line naming the ref and the rule, and no ref moved."""
    before = remote.refs()
    result = remote.push(*refspecs)
    assert result.returncode != 0
    lines = [line.rstrip() for line in result.stderr.splitlines() if line.startswith("remote: gitmirror: ")]
    assert lines[-1] == "remote: gitmirror: push rejected: what the mirror once served, it serves forever"
    assert [line for line in lines[:-1] if expected in line], result.stderr
    assert len(lines) == 2, result.stderr  # exactly one reason
    assert remote.refs() == before


@pytest.mark.parametrize(
    "refspec, expected",
    [
        ("HEAD:refs/heads/deadbeef", "refs/heads/deadbeef: looks like a commit id"),
        ("HEAD:refs/tags/CAFE1234", "refs/tags/CAFE1234: looks like a commit id"),
        ("HEAD:refs/heads/{full}", "refs/heads/{full}: looks like a commit id"),
        ("HEAD:refs/tags/2026-01-31", "refs/tags/2026-01-31: looks like a date"),
        ("HEAD:refs/heads/HEAD", "refs/heads/HEAD: HEAD is reserved"),
        ("HEAD:refs/heads/team/x", "refs/heads/team/x: not a valid name"),
        ("HEAD:refs/replace/{full}", "refs/replace/{full}: only refs/heads/<name> and refs/tags/<name> may be pushed"),
        ("HEAD:refs/notes/commits", "refs/notes/commits: only refs/heads/<name> and refs/tags/<name>"),
        ("HEAD:refs/foo/bar", "refs/foo/bar: only refs/heads/<name> and refs/tags/<name>"),
    ],
)
def test_lookalike_names_and_foreign_refs_are_refused(remote: Remote, refspec: str, expected: str) -> None:
    full = remote.commit("a commit to name")  # a real id: nothing can be named like it
    assert_refused(remote, (refspec.format(full=full),), expected.format(full=full))


def test_orphan_branch_and_tag_on_an_orphan_are_refused(remote: Remote) -> None:
    main_tip = remote.git("rev-parse", "HEAD").stdout.strip()
    remote.git("checkout", "-q", "--orphan", "rewritten")
    remote.commit("same content, other hashes")
    assert_refused(
        remote, ("rewritten",), f"refs/heads/rewritten: a new branch must contain main's tip {main_tip[:12]}"
    )
    remote.git("tag", "orphan-tag")
    assert_refused(remote, ("orphan-tag",), "refs/tags/orphan-tag: a new tag must name a commit of main or another")
    # Merged into main (main first), the orphan would still bring its unrelated root in.
    orphan = remote.git("rev-parse", "HEAD").stdout.strip()
    remote.git("checkout", "-q", "main")
    remote.git("merge", "-q", "--no-ff", "--allow-unrelated-histories", "-m", "merge the rewrite", "rewritten")
    assert_refused(remote, ("main",), f"commit {orphan[:12]} (same content, other hashes): a new root commit")


def test_main_must_keep_its_old_tip_on_the_first_parent_line(remote: Remote) -> None:
    root = remote.git("rev-parse", "HEAD").stdout.strip()
    old = remote.commit("on main")
    assert remote.push("main").returncode == 0
    remote.git("checkout", "-q", "-b", "side", root)
    remote.commit("side work")
    remote.git("merge", "-q", "--no-ff", "-m", "merge main into side", "main")
    assert_refused(
        remote, ("side:main",), f"refs/heads/main: the old tip {old[:12]} is not on the new tip's first-parent line"
    )
    # The same change merged the other way round (main first) is accepted.
    remote.git("checkout", "-q", "main")
    remote.git("merge", "-q", "--no-ff", "-m", "merge side", "side~1")
    assert remote.push("main").returncode == 0


def test_backdated_and_future_commits_on_main_are_refused(remote: Remote) -> None:
    tip_time = int(remote.git("log", "-1", "--format=%ct").stdout)
    back = remote.commit("backdated", env={"GIT_COMMITTER_DATE": f"@{tip_time - 3600} +0000"})
    assert_refused(remote, ("main",), f"refs/heads/main: commit {back[:12]} (backdated): committer date")
    assert "earlier than its first parent's" in remote.push("main").stderr
    remote.git("reset", "-q", "--hard", "HEAD~1")
    ahead = remote.commit("from the future", env={"GIT_COMMITTER_DATE": f"@{int(time.time()) + 86400} +0000"})
    assert_refused(remote, ("main",), f"refs/heads/main: commit {ahead[:12]} (from the future): committer date")
    # A branch other than main may carry any dates (only main's line names dates).
    assert remote.push("HEAD:refs/heads/experiment").returncode == 0


def test_honest_pushes_are_accepted(remote: Remote, synced_repo: Path, tmp_path: Path) -> None:
    # A snapshot tag made by gitmirror, a review branch with a commit, and main moving on, in one push.
    remote.git("tag", "-a", "-m", "snapshot", "release-2026.1")
    remote.git("checkout", "-q", "-b", "incoming")
    remote.commit("sync into incoming")
    remote.git("checkout", "-q", "main")
    remote.commit("approve")
    result = remote.push("main", "incoming", "release-2026.1")
    assert result.returncode == 0, result.stderr
    assert "refs/heads/incoming" in remote.refs() and "refs/tags/release-2026.1" in remote.refs()
    # A tag on an older commit of main, pushed later, is fine too.
    remote.git("tag", "older", "HEAD~1")
    assert remote.push("older").returncode == 0
    # Fresh repositories with the hook: a sync's history; a review branch before main exists, then main.
    for name, pushes in [
        ("sync.git", [(synced_repo, "main")]),
        ("review.git", [(remote.work, "incoming"), (remote.work, "main"), (remote.work, "older")]),
    ]:
        fresh = tmp_path / name
        subprocess.run(["git", "init", "-q", "--bare", str(fresh)], env=remote.env, check=True)
        install(fresh, sys.executable)
        for source, refspec in pushes:
            pushed = subprocess.run(
                ["git", "push", str(fresh), refspec],
                cwd=source,
                env=remote.env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert pushed.returncode == 0, (name, refspec, pushed.stderr)


def test_refusals_through_git_daemon(remote: Remote, tmp_path: Path) -> None:
    """The same hook behind git's own server on the loopback: one line naming the ref and rule."""
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            "--enable=receive-pack",
            f"--base-path={remote.bare.parent}",
            f"--port={port}",
            "--listen=127.0.0.1",
            "--reuseaddr",
        ],
        env=remote.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        remote.url = f"git://127.0.0.1:{port}/{remote.bare.name}"
        deadline = time.monotonic() + 20
        while remote.git("ls-remote", remote.url, check=False).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, "git daemon did not start"
            time.sleep(0.1)
        remote.commit("a commit")
        assert_refused(remote, ("HEAD:refs/heads/2026-01-31",), "refs/heads/2026-01-31: looks like a date")
        assert_refused(remote, ("HEAD:refs/replace/x",), "refs/replace/x: only refs/heads/<name> and refs/tags/<name>")
        accepted = remote.push("main")
        assert accepted.returncode == 0, accepted.stderr
        assert remote.git("rev-parse", "main", cwd=remote.bare).stdout == remote.git("rev-parse", "HEAD").stdout
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
