"""Full-index scale: the routine operations of a mirror of N projects, each beside its target.

Builds a synthetic metadata repository of N projects (10 files each) through the project's own
write path (``MetadataRepo.write_commit`` with the sync's ``commit_message``), with names clustered
as real ones are (``django-*``, ``pytest-*``, ``python-*`` fill shards of 20,000 entries), then one
sync-like commit of 1,000 changed projects on top, and times each operation in its own process
(time and peak RSS). Targets are the issue's, for 500k projects.

    python bench/scale.py                   # 50k projects
    python bench/scale.py --projects 500000 # the full-index size (builds for several minutes once)
    python bench/scale.py --only status,verify

Built trees are kept under ``--workdir`` (default /tmp/gitmirror-scale), keyed by N and by the
source of the code that shapes them, so a rerun only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gitmirror.model.manifest import FileEntry, ProjectManifest, manifest_path  # noqa: E402
from gitmirror.storage.repo import MetadataRepo  # noqa: E402
from gitmirror.sync import merge  # noqa: E402

CHANGED = 1_000
FILES = 10
SEEN = "2024-01-02T03:04:05Z"
CLUSTERS = ("django-", "pytest-", "python-")
CLUSTER_SIZE = 20_000  # names sharing a 4-letter prefix, as the largest real clusters
#: row -> (what it measures, target at 500k projects: seconds, MB)
ROWS = {
    "commit": ("commit of 1,000 changed projects", 2.0, 300),
    "hook": ("hook on a push of that commit", 2.0, 300),
    "root": ("first /simple/ after a commit", 1.0, 500),
    "project": ("first project page after start", 0.05, None),
    "render-incremental": ("incremental render of 1,000 changed", 3.0, None),
    "review": ("review of 1,000 changed", 5.0, None),
    "status": ("status", 10.0, None),
    "status-full": ("status, nothing counted before", None, None),
    "verify": ("verify --history-only", None, 1000),
    "render-full": ("full render", 300.0, None),
    "warm": ("warm-sync check", 0.2, 100),
}


def project_name(number: int) -> str:
    """Three clusters of up to ``CLUSTER_SIZE`` names (each fills one shard directory), the rest spread out."""
    kind = number % 4
    if kind < 3 and number < 4 * CLUSTER_SIZE:
        return f"{CLUSTERS[kind]}{_word(number)}"
    return f"{_word(number)}{_word(number * 7 + 3)[:3]}"


def _word(number: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = ""
    value = number * 2654435761 % 10**12
    for _ in range(7):
        text += letters[value % 26]
        value //= 26
    return f"{text}{number}"


def _sha(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def manifest(name: str, files: int) -> ProjectManifest:
    entries = {}
    for release in range(files):
        filename = f"{name.replace('-', '_')}-1.{release}-py3-none-any.whl"
        entries[filename] = FileEntry(
            filename=filename,
            version=f"1.{release}",
            sha256=_sha(name, release),
            size=10_000 + release,
            requires_python=">=3.8",
            upload_time=SEEN,
            core_metadata=_sha(name, release, "metadata"),
            first_seen=SEEN,
        )
    return ProjectManifest(name=name, files=entries)


def _outcome(name: str, old: ProjectManifest | None, new: ProjectManifest) -> merge.ProjectOutcome:
    added = sorted(set(new.files) - set(old.files if old else ()))
    return merge.ProjectOutcome(name=name, old=old, new=new, added=added)


def build_key(count: int) -> str:
    """Trees depend on the write path and the commit message: rebuilt when either changes."""
    shaping = inspect.getsource(merge.commit_message) + inspect.getsource(MetadataRepo.write_commit)
    shaping += inspect.getsource(_empty_store) + inspect.getsource(project_name)
    return f"{count}-{hashlib.sha256(shaping.encode()).hexdigest()[:10]}"


def build(workdir: Path, count: int) -> Path:
    """The repository: one commit of ``count`` projects (branch ``base``), then 1,000 of them changed
    (branch ``changed``); ``main`` stands at ``base``. Built once per key."""
    where = workdir / build_key(count)
    if (where / "built").exists():
        if count > 100_000 and not (where / "store-linked").exists():
            _linked_store(where)
        return where
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    start = time.perf_counter()
    repo = MetadataRepo.init(where / "repo")
    names = [project_name(number) for number in range(count)]
    changes, outcomes = {}, []
    for name in names:
        new = manifest(name, FILES)
        changes[manifest_path(name)] = new.dumps()
        outcomes.append(_outcome(name, None, new))
    base = repo.write_commit(changes, merge.commit_message(outcomes))
    del changes, outcomes
    repo.move_ref(b"refs/heads/base", None, base)
    changed = _changed_commit(repo, base, names)
    repo.move_ref(b"refs/heads/changed", None, changed)
    _empty_store(where / "store", repo, changed, count)
    (where / "changed-names").write_text("\n".join(_changed_names(names)) + "\n")
    (where / "built").write_text(f"{base.decode()} {changed.decode()}\n")
    repo.close()
    print(f"built {count:,} projects in {time.perf_counter() - start:.0f} s: {where}", flush=True)
    return where


def _empty_store(store: Path, repo: MetadataRepo, tip: bytes, count: int) -> None:
    """Every blob the served files need, as an empty file (the operations look for blobs, they do
    not read them); only up to 100k projects (a million files: more would fill the inode table)."""
    store.mkdir()
    if count > 100_000:
        return
    from gitmirror.model.layout import BLOBS_DIR, blob_path

    blobs = os.path.join(store, BLOBS_DIR)
    for recorded in repo.manifests(tip):
        for entry in recorded.files.values():
            for digest in (entry.sha256, entry.core_metadata):
                if digest:
                    path = blob_path(blobs, digest)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o444))


def _linked_store(where: Path) -> None:
    """Above 100k projects: every blob the served files need as a hard link to one of a few empty
    files (a directory entry each, not an inode each). What the timed operations see is the same
    (an existence check per blob, a ``stat`` per leaf directory), only the inodes are shared."""
    from gitmirror.model.layout import BLOBS_DIR, blob_path

    start = time.perf_counter()
    repo = MetadataRepo(where / "repo")
    blobs = os.path.join(where / "store", BLOBS_DIR)
    for prefix in range(0x10000):
        os.makedirs(os.path.join(blobs, f"{prefix:04x}"[:2], f"{prefix:04x}"[2:]), exist_ok=True)
    sources, links = where / "store-sources", 0
    sources.mkdir(exist_ok=True)
    source = ""
    for recorded in repo.manifests(repo.tip("changed")):
        for entry in recorded.files.values():
            for digest in (entry.sha256, entry.core_metadata):
                if not digest:
                    continue
                if links % 50_000 == 0:  # ext4 allows 65,000 links to one inode
                    source = str(sources / str(links))
                    os.close(os.open(source, os.O_CREAT | os.O_WRONLY, 0o444))
                with contextlib.suppress(FileExistsError):
                    os.link(source, blob_path(blobs, digest))
                links += 1
    repo.close()
    (where / "store-linked").write_text(f"{links}\n")
    print(f"linked {links:,} blobs in {time.perf_counter() - start:.0f} s", flush=True)


def _changed_names(names: list[str]) -> list[str]:
    step = max(1, len(names) // CHANGED)
    return names[::step][:CHANGED]


def _changed_commit(repo: MetadataRepo, base: bytes, names: list[str]) -> bytes:
    """What one sync of 1,000 changed projects commits (a new release each), through its message."""
    changes, outcomes = {}, []
    for name in _changed_names(names):
        old = repo.manifest(base, name)
        new = manifest(name, FILES + 1)
        changes[manifest_path(name)] = new.dumps()
        outcomes.append(_outcome(name, old, new))
    repo.git.refs[b"refs/heads/scratch"] = base
    return repo.write_commit(changes, merge.commit_message(outcomes), branch="scratch", parent=base)


# -- the operations, each run in its own process -------------------------------------------------


def _config(where: Path) -> Path:
    config = where / "mirror.yaml"
    config.write_text(f"repo: {where / 'repo'}\nstore: {where / 'store'}\nprojects: []\n")
    return config


def _reset(repo: MetadataRepo, where: Path) -> tuple[bytes, bytes]:
    base, changed = (part.encode() for part in (where / "built").read_text().split())
    repo.git.refs[b"refs/heads/main"] = base
    return base, changed


def op_commit(where: Path) -> str:
    repo = MetadataRepo(where / "repo")
    base, _ = _reset(repo, where)
    names = (where / "changed-names").read_text().split()
    olds = {name: repo.manifest(base, name) for name in names}
    news = {name: manifest(name, FILES + 2) for name in names}
    repo.git.refs[b"refs/heads/scratch"] = base
    start = _start()
    outcomes = [_outcome(name, olds[name], news[name]) for name in names]
    changes = {manifest_path(name): news[name].dumps() for name in names}
    repo.write_commit(changes, merge.commit_message(outcomes), branch="scratch", parent=base)
    return _done(start)


def op_hook(where: Path) -> str:
    from gitmirror.audit.hooks import RefUpdate, judge

    repo = MetadataRepo(where / "repo")
    base, changed = _reset(repo, where)
    hidden = {ref: repo.git.refs[ref] for ref in (b"refs/heads/changed", b"refs/heads/scratch")}
    for ref in hidden:  # as pushed: no ref of the repository names the new commit yet
        del repo.git.refs[ref]
    try:
        start = _start()
        decision = judge(repo, [RefUpdate(base, changed, b"refs/heads/main")])
        assert not decision.rejected, decision.messages
        return _done(start)
    finally:
        for ref, sha in hidden.items():
            repo.git.refs[ref] = sha


def op_root(where: Path) -> str:
    from gitmirror.serve.index import HTML_TYPE
    from gitmirror.serve.view import MirrorView
    from gitmirror.storage.store import BlobStore

    repo = MetadataRepo(where / "repo")
    base, changed = _reset(repo, where)
    view = MirrorView(repo, BlobStore(where / "store"))
    asyncio.run(view.root_page(base, HTML_TYPE))  # the server was serving the tip before the commit
    start = _start()
    asyncio.run(view.root_page(changed, HTML_TYPE))
    return _done(start)


def op_project(where: Path) -> str:
    start = _start()
    from gitmirror.serve.index import HTML_TYPE
    from gitmirror.serve.view import MirrorView
    from gitmirror.storage.store import BlobStore

    repo = MetadataRepo(where / "repo")
    view = MirrorView(repo, BlobStore(where / "store"), branch="changed")
    import_done = _start()
    page = view.project_page(view.tip(), project_name(3 * 7), HTML_TYPE)
    assert page is not None
    return _done(import_done, f"(+{import_done - start:.2f} s imports)")


def _render(where: Path, commit: bytes, full: bool) -> None:
    from gitmirror.serve.render import render_site
    from gitmirror.storage.store import BlobStore

    repo = MetadataRepo(where / "repo")
    render_site(repo, BlobStore(where / "store"), commit, where / "site", files_mode="none", full=full)


def op_render_full(where: Path) -> str:
    start = _start()
    _render(where, _reset(MetadataRepo(where / "repo"), where)[0], full=True)
    return _done(start, _rss_split())


def op_render_incremental(where: Path) -> str:
    base, changed = _reset(MetadataRepo(where / "repo"), where)
    site = where / "site" / ".gitmirror-render.json"
    if not site.exists() or json.loads(site.read_text())["commit"] != base.decode():
        _render(where, base, full=True)
    start = _start()
    _render(where, changed, full=False)
    result = _done(start)
    _render(where, base, full=False)  # back, for the next run
    return result


def op_review(where: Path) -> str:
    from gitmirror.review.review import build as build_review
    from gitmirror.storage.store import BlobStore
    from gitmirror.sync.config import load as load_config

    config = load_config(_config(where))
    repo = MetadataRepo(where / "repo")
    _reset(repo, where)
    start = _start()
    report = build_review(repo, BlobStore(where / "store"), config, "main", "changed")
    assert len(report.projects) == CHANGED, len(report.projects)
    return _done(start)


def op_status(where: Path) -> str:
    """A status of the commit of 1,000 changed projects after one of the commit before it, or of
    that commit after one of the changed commit (the same diff): whichever the kept counts allow."""
    from gitmirror.audit.status import TOTALS, collect
    from gitmirror.audit.status_counts import StatusCounts
    from gitmirror.storage.store import BlobStore

    repo = MetadataRepo(where / "repo")
    store = BlobStore(where / "store")
    counts = StatusCounts(store.root, TOTALS)
    before = counts.load()
    counts.close()
    tips = {branch: repo.tip(branch) for branch in ("base", "changed")}
    following = {tips["base"]: "changed", tips["changed"]: "base"}.get(before.commit.encode() if before else b"")
    primed = where / "status-primed"
    if following is None:
        start = _start()
        collect(repo, store, tips["base"], branch="base")  # in a fresh process: the priming is not the figure
        priming = json.loads(_done(start))
        primed.write_text(f"{priming['seconds']:.1f} s, {priming['rss_mb']:.0f} MB")
        return json.dumps({"again": True})
    start = _start()
    status = collect(repo, store, tips[following], branch=following)
    assert status.projects > 0
    priming = primed.read_text().strip() if primed.exists() else "not in this run"
    return _done(start, f"({following} after the other; priming status: {priming})")


def op_status_full(where: Path) -> str:
    """A status with no counts kept: every manifest and every blob."""
    from gitmirror.audit.status import collect
    from gitmirror.audit.status_counts import StatusCounts
    from gitmirror.storage.store import BlobStore

    repo = MetadataRepo(where / "repo")
    store = BlobStore(where / "store")
    StatusCounts(store.root, ()).path.unlink(missing_ok=True)
    start = _start()
    status = collect(repo, store, repo.tip("changed"), branch="changed")
    assert status.projects > 0
    return _done(start)


def op_verify(where: Path) -> str:
    from gitmirror.audit.verify import verify

    repo = MetadataRepo(where / "repo")
    start = _start()
    report = verify(repo, None, "changed")
    assert report.ok, report.problems[:3]
    return _done(start, _rss_split())


def op_warm(where: Path) -> str:
    """The record a clean run of every project leaves, then the check a warm run makes of it."""
    from gitmirror.sync import unchanged

    record_file = where / "warm" / "record.json"
    config = _config(where)
    if not record_file.exists():
        _write_warm_record(where, record_file, config)
        return json.dumps({"again": True})  # measured in a fresh process: the writing is not the check's
    start = _start()
    holding = unchanged.still_holds(config)
    return _done(start, "(holds)" if holding else "(full run: no upstream here)")


def _write_warm_record(where: Path, record_file: Path, config: Path) -> None:
    """What ``Syncer._record`` leaves after a clean run of every project. Upstream is a closed local
    port: the check's one request is refused at once, so the figure is the local part."""
    from gitmirror.sync import unchanged

    repo = MetadataRepo(where / "repo")
    names, digests = [], []
    for recorded in repo.manifests(repo.tip("main")):
        names.append(recorded.name)
        digests += [entry.sha256 for entry in recorded.files.values() if entry.served]
    dirs = unchanged.blob_dirs(digests)
    unchanged.Record(
        serial="1",
        config_file=str(config),
        config_sha256=hashlib.sha256(config.read_bytes()).hexdigest(),
        upstream="http://127.0.0.1:9/simple/",
        timeout=1.0,
        repo=str(where / "repo"),
        store=str(where / "store"),
        branches=["main"],
        inputs={},
        refs=unchanged.refs_digest(where / "repo", ["main"]),
        blob_dirs=dirs,
        blob_dirs_state=unchanged.blob_dirs_state(str(where / "store"), dirs) or "",
        projects=len(names),
    ).save(record_file, names)


def _rss_split() -> str:
    """This process's resident memory now: its own (``RssAnon``) and the mapped pack files' pages
    (``RssFile``, shared with the page cache and reclaimable)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    anon, mapped = (int(fields[name].split()[0]) // 1024 for name in ("RssAnon", "RssFile"))
    return f"(at the end {anon} MB anonymous, {mapped} MB file-backed)"


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_cpu_at_start = [0.0]


def _start() -> float:
    """The wall clock now; ``_done`` also counts this process's CPU from here."""
    _cpu_at_start[0] = time.process_time()
    return time.perf_counter()


def _done(start: float, note: str = "") -> str:
    seconds = time.perf_counter() - start
    cpu = time.process_time() - _cpu_at_start[0]
    peak = _peak_rss_mb()
    return json.dumps({"seconds": seconds, "cpu": cpu, "rss_mb": peak, "note": note})


def cold_sync(workdir: Path, projects: int) -> str:
    """``projects: all`` from a loopback upstream of ``projects`` one-wheel projects, into an empty
    mirror: wall time per upstream request (pages, files, PEP 658 files), the sync's own CPU per
    request (it and its download processes, through ``cpu_of.py``) beside the upstream's (this
    process's threads serve it), and the sync's peak RSS."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fakeupstream import FakeUpstream, build_wheel

    where = workdir / f"cold-{projects}"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    cpu_of = [sys.executable, str(Path(__file__).resolve().parent / "cpu_of.py"), str(where / "cpu")]
    with FakeUpstream() as upstream:
        for number in range(projects):
            upstream.add(f"cold-{number}", build_wheel(f"cold-{number}", "1.0"))
        (where / "mirror.yaml").write_text(f"upstream: {upstream.url}\nprojects: all\nbatch_projects: 1000\n")
        start, upstream_start = time.perf_counter(), time.process_time()
        done = subprocess.run(
            [*cpu_of, sys.executable, "-c", _COLD_SYNC, str(where / "mirror.yaml")], capture_output=True, text=True
        )
        seconds, upstream_cpu = time.perf_counter() - start, time.process_time() - upstream_start
        requests = len(upstream.requests)
    if done.returncode != 0:
        return f"error: {done.stderr.strip().splitlines()[-1:]}"
    main_cpu, peak = map(float, done.stdout.split()[-2:])
    sync_cpu = float((where / "cpu").read_text().split()[1])
    return (
        f"{1000 * seconds / requests:.2f} ms wall per request ({requests} requests, {seconds:.1f} s); "
        f"sync's own CPU {1000 * sync_cpu / requests:.2f} ms per request ({sync_cpu:.2f} core-s, "
        f"{main_cpu:.2f} of them its main process), "
        f"upstream's {1000 * upstream_cpu / requests:.2f} ms; {peak:.0f} MB"
    )


_COLD_SYNC = """
import os
import sys
from pathlib import Path
from gitmirror.cli.cli_sync import run
code = run(Path(sys.argv[1]), quiet=True)
hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")]
own = os.times()
print(own.user + own.system, int(hwm[0].split()[1]) / 1024)
sys.exit(code)
"""


OPS = {
    "commit": op_commit,
    "hook": op_hook,
    "root": op_root,
    "project": op_project,
    "render-incremental": op_render_incremental,
    "review": op_review,
    "status": op_status,
    "status-full": op_status_full,
    "verify": op_verify,
    "render-full": op_render_full,
    "warm": op_warm,
}


def measure(where: Path, row: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, "--op", row, "--where", str(where)],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "XDG_CACHE_HOME": str(where / "cache")},
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return measure(where, row) if result.get("again") else result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gitmirror-scale"))
    parser.add_argument("--only", default="", help="comma-separated rows: " + ", ".join(OPS))
    parser.add_argument("--cold", type=int, default=0, help="also a cold `projects: all` sync of N tiny projects")
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--where", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.op:
        print(OPS[args.op](args.where), flush=True)
        os._exit(0)  # the repository's packs need no orderly close here
    where = build(args.workdir, args.projects)
    rows = [row for row in OPS if not args.only or row in args.only.split(",")]
    print(f"| operation | {args.projects:,} projects | peak RSS | target at 500k |")
    print("|---|---|---|---|")
    for row in rows:
        label, seconds, megabytes = ROWS[row]
        result = measure(where, row)
        target = " ".join(
            part for part in (f"< {seconds:g} s" if seconds else "", f"< {megabytes} MB" if megabytes else "") if part
        )
        if "error" in result:
            print(f"| {label} | error: {result['error']} | | {target} |", flush=True)
            continue
        figure = f"{result['seconds']:.3f} s ({result['cpu']:.2f} core-s) {result['note']}".strip()
        print(f"| {label} | {figure} | {result['rss_mb']:.0f} MB | {target} |", flush=True)
    if args.cold:
        print(f"| cold sync of {args.cold} projects | {cold_sync(args.workdir, args.cold)} | | < 0.3 ms, < 2 GB |")


if __name__ == "__main__":
    main()
