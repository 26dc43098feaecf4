"""Crash safety: a real ``gitmirror sync`` SIGKILLed at every named point loses and corrupts nothing.

Each case: a copy of a mirror that synced ``demo-pkg==1.0`` cleanly (the "old" commit), then a full
sync killed at one point (``GITMIRROR_CRASH_AT``, acted on by the test-side hook ``crashhook``).
Right after the kill the store holds only complete blobs whose sha256 is their name, the branch
is at the old commit or a child of it, ``git fsck`` passes, and every file the tip serves has its
blob. A plain rerun then finishes the work and ends in exactly the state of a run that was never
interrupted. A ref lock the killed writer left refuses the rerun in
one line until it is ``STALE_REF_LOCK_AGE`` old (it could be a live git push's), then goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import gitmirror
from gitmirror.storage.repo import STALE_REF_LOCK_AGE

import crashhook
from conftest import GITMIRROR, Mirror, isolated_env
from fakeupstream import FakeUpstream, make_sample_index

# Points reached more than once per run are also hit later, mid-stream, not only the first time.
CASES = [
    *(point for point in crashhook.POINTS if point not in crashhook.FULL_INDEX_POINTS),
    "store.chunk-written#3",
    "repo.object-packing#4",
    "store.published#5",
]


@pytest.fixture(scope="module")
def shared_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        make_sample_index(server)
        yield server


def new_mirror(root: Path, upstream: FakeUpstream) -> Mirror:
    root.mkdir(parents=True)
    mirror = Mirror(root=root, upstream=upstream)
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n")
    return mirror


def normalized_tree(mirror: Mirror) -> dict[str, str]:
    """Every path of the branch tip with its content, ``first-seen`` times blanked (they are clocks)."""
    tree = {}
    for path in mirror.git("ls-tree", "-r", "--name-only", "main").split():
        lines = []
        for line in mirror.git("show", f"main:{path}").splitlines():
            record = json.loads(line)
            record.pop("first-seen", None)
            lines.append(json.dumps(record, sort_keys=True))
        tree[path] = "\n".join(lines)
    return tree


def blob_names(mirror: Mirror) -> set[str]:
    return {path.name for path in (mirror.store / "blobs").glob("*/*/*")}


@pytest.fixture(scope="module")
def baseline(shared_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    """A mirror after its first run (``demo-pkg==1.0``): each case starts from a copy of it."""
    mirror = new_mirror(tmp_path_factory.mktemp("baseline") / "site", shared_upstream)
    mirror.run("sync", "demo-pkg==1.0", check=True)
    return mirror


def copy_of(baseline: Mirror, root: Path) -> Mirror:
    shutil.copytree(baseline.root, root, symlinks=True)
    return Mirror(root=root, upstream=baseline.upstream)


@pytest.fixture(scope="module")
def reference(shared_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, set[str]]:
    """The state an uninterrupted pair of runs reaches."""
    mirror = new_mirror(tmp_path_factory.mktemp("reference") / "site", shared_upstream)
    mirror.run("sync", "demo-pkg==1.0", check=True)
    mirror.run("sync", check=True)
    return normalized_tree(mirror), blob_names(mirror)


def assert_store_holds_only_complete_blobs(mirror: Mirror) -> None:
    for path in (mirror.store / "blobs").glob("*/*/*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"corrupt blob {path}"
        assert path.parent.name == path.name[2:4] and path.parent.parent.name == path.name[:2]


def assert_repo_consistent(mirror: Mirror, old: str) -> str:
    """fsck passes, the branch is at ``old`` or a direct child, and the tip's blobs are all stored."""
    fsck = subprocess.run(
        ["git", "--git-dir", str(mirror.repo), "fsck", "--full", "--strict"],
        env=isolated_env(),
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    tip = mirror.git("rev-parse", "main").strip()
    if tip != old:
        assert mirror.git("rev-parse", f"{tip}^").strip() == old
    stored = blob_names(mirror)
    for path in mirror.git("ls-tree", "-r", "--name-only", "main").split():
        if not path.startswith("projects/"):
            continue
        for line in mirror.git("show", f"main:{path}").splitlines()[1:]:
            entry = json.loads(line)
            assert entry["sha256"] in stored, f"{entry['filename']} is served but its blob is missing"
            if entry["core-metadata"] and entry["core-metadata"] not in stored:  # read out of the wheel, then
                assert hashlib.sha256(wheel_metadata(mirror, entry["sha256"])).hexdigest() == entry["core-metadata"]
    return tip


def wheel_metadata(mirror: Mirror, sha256: str) -> bytes:
    with zipfile.ZipFile(mirror.store / "blobs" / sha256[:2] / sha256[2:4] / sha256) as wheel:
        [name] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        return wheel.read(name)


@pytest.mark.parametrize("point", CASES)
def test_sync_killed_at_point_loses_nothing(
    point: str, baseline: Mirror, reference: tuple[dict, set[str]], tmp_path: Path
) -> None:
    expected_tree, expected_blobs = reference
    mirror = copy_of(baseline, tmp_path / "site")
    old = mirror.git("rev-parse", "main").strip()

    killed = subprocess.run(
        [*GITMIRROR, "sync"],
        cwd=mirror.root,
        env=crashhook.environment(GITMIRROR_CRASH_AT=point),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stdout}{killed.stderr}"

    assert_store_holds_only_complete_blobs(mirror)
    assert_repo_consistent(mirror, old)
    verified = mirror.run("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    ref_locks = [path for path in mirror.repo.rglob("*.lock") if path.name != "gitmirror.lock"]
    if ref_locks:  # it could be a live git push's: one line, nothing lost, until the lock is old
        refused = mirror.run("sync")
        assert refused.returncode == 2 and "is locked by another git process" in refused.stderr, refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("gitmirror:")]
        assert errors == [refused.stderr.splitlines()[-1]] and ref_locks[0].exists()
        assert_repo_consistent(mirror, old)
        for lock in ref_locks:  # what the clock does to a lock no live git process holds
            then = lock.stat().st_mtime - STALE_REF_LOCK_AGE - 1
            os.utime(lock, (then, then))

    rerun = mirror.run("sync")
    assert rerun.returncode == 0, rerun.stderr
    assert_store_holds_only_complete_blobs(mirror)
    assert_repo_consistent(mirror, mirror.git("rev-parse", "main^").strip())
    assert normalized_tree(mirror) == expected_tree
    assert blob_names(mirror) == expected_blobs
    assert not list((mirror.store / "tmp").iterdir()), "temporary files survived the next start"
    stale = [path for path in mirror.repo.rglob("*.lock") if path.name != "gitmirror.lock"]  # flock file stays
    assert not stale, "a stale git lock file survived the next start"


def test_unknown_crash_point_is_refused(mirror: Mirror, sample) -> None:
    result = subprocess.run(
        [*GITMIRROR, "sync"],
        cwd=mirror.root,
        env=crashhook.environment(GITMIRROR_CRASH_AT="sync.no-such-point"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "names no crash point" in result.stderr.splitlines()[-1]
    assert not mirror.repo.exists()


def test_production_announces_every_point_and_reads_no_kill_switch() -> None:
    """Each point of the hook is a ``sys.audit`` event in gitmirror's code (the ref-lock points are
    the hook's own, inside dulwich); no module of gitmirror reads the tests' variables."""
    sources = "\n".join(path.read_text() for path in Path(gitmirror.__file__).parent.rglob("*.py"))
    announced = re.findall(r'sys\.audit\("gitmirror\.crashpoint", "([^"]+)"\)', sources)
    assert set(announced) == set(crashhook.POINTS + crashhook.BUCKET_POINTS) - set(crashhook.REF_LOCK_POINTS)
    assert len(crashhook.POINTS) >= 20 and len(set(crashhook.POINTS)) == len(crashhook.POINTS)
    assert crashhook.CRASH_VARIABLE not in sources and crashhook.PAUSE_VARIABLE not in sources


def test_a_full_disk_stops_the_sync_in_one_line_and_loses_nothing(
    baseline: Mirror, reference: tuple[dict, set[str]], tmp_path: Path
) -> None:
    """A disk that takes no more bytes (here a file-size limit of one byte: ``EFBIG``, met as a sync
    would meet ``ENOSPC``, in a download process after the first byte of a blob) ends the run with
    one line and exit code 2, the branch where it was: a storage failure is not retried as a
    network one, nor reported file by file. With room again, the next run ends where an
    uninterrupted one would."""
    limit = 1
    expected_tree, expected_blobs = reference
    mirror = copy_of(baseline, tmp_path / "site")
    old = mirror.git("rev-parse", "main").strip()

    full = subprocess.run(
        [*GITMIRROR, "sync"],
        cwd=mirror.root,
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: (
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN),  # EFBIG, as CPython asks for
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        ),
    )
    assert full.returncode == 2, full.stdout + full.stderr
    assert full.stderr.splitlines() == [f"gitmirror: error: File too large: {mirror.store.relative_to(mirror.root)}"]
    assert mirror.git("rev-parse", "main").strip() == old
    assert_store_holds_only_complete_blobs(mirror)
    assert_repo_consistent(mirror, old)

    rerun = mirror.run("sync")
    assert rerun.returncode == 0, rerun.stderr
    assert normalized_tree(mirror) == expected_tree
    assert blob_names(mirror) == expected_blobs
