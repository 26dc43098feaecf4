"""gitmirror's writers beside git itself: a ``git push`` through the hook (or ``git gc``) writing
the same bare repository keeps its ref locks and packs, and each side succeeds or fails in one
clean line.

The stale-lock cleanup every writer runs removes only ref locks older than ten minutes and packs
without an index older than dulwich's prune grace period; younger ones may belong to a live git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gitmirror.audit.hooks import install
from gitmirror.storage.repo import STALE_REF_LOCK_AGE, MetadataRepo

from conftest import GITMIRROR, Mirror, isolated_env
from fakeupstream import FakeUpstream, build_wheel

DEMO = "projects/de/mo/demo-pkg.jsonl"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
OLD = time.time() - 15 * 24 * 3600  # older than every grace period


def age(path: Path, when: float) -> None:
    os.utime(path, (when, when))


# -- the cleanup itself --------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> MetadataRepo:
    repo = MetadataRepo.init(tmp_path / "repo")
    repo.write_commit({"a": b"a\n"}, "first")
    return repo


def test_fresh_ref_locks_are_kept_and_old_ones_removed(repo: MetadataRepo) -> None:
    fresh = [repo.path / "refs/heads/main.lock", repo.path / "refs/tags/v1.lock", repo.path / "packed-refs.lock"]
    old = [repo.path / "refs/heads/feature.lock", repo.path / "HEAD.lock"]
    for path in fresh + old:
        path.write_text("0" * 40 + "\n")
    for path in old:
        age(path, time.time() - STALE_REF_LOCK_AGE - 5)
    age(fresh[1], time.time() - STALE_REF_LOCK_AGE + 60)  # nine minutes: still a live transaction's
    with repo.writer_lock():
        pass
    assert all(path.exists() for path in fresh)
    assert not any(path.exists() for path in old)


def test_fresh_orphan_packs_are_kept_and_old_ones_removed(repo: MetadataRepo) -> None:
    pack_dir = repo.path / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    migrating = pack_dir / f"pack-{'1' * 40}.pack"  # git moves a pack in before its index
    abandoned = pack_dir / f"pack-{'2' * 40}.pack"
    dulwich_tmp = repo.path / "objects" / "tmp_pack_abandoned"
    for path in (migrating, abandoned, dulwich_tmp):
        path.write_bytes(b"PACK")
    age(abandoned, OLD)
    age(dulwich_tmp, OLD)
    indexed = pack_dir / f"pack-{'3' * 40}.pack"
    indexed.write_bytes(b"PACK")
    indexed.with_suffix(".idx").write_bytes(b"IDX")
    age(indexed, OLD)
    with repo.writer_lock():
        pass
    assert migrating.exists() and indexed.exists() and indexed.with_suffix(".idx").exists()
    assert not abandoned.exists() and not dulwich_tmp.exists()


def test_a_commit_onto_a_ref_git_holds_locked_fails_in_one_line(repo: MetadataRepo) -> None:
    from gitmirror.storage.repo import RepoError

    lock = repo.path / "refs/heads/main.lock"
    lock.write_text("")
    tip = repo.tip()
    with pytest.raises(RepoError, match=r"refs/heads/main is locked by another git process"), repo.writer_lock():
        repo.write_commit({"b": b"b\n"}, "second", parent=tip)
    assert lock.exists() and repo.tip() == tip


# -- a real push racing a real gitmirror writer ----------------------------------------------

PAUSING_HOOK = """#!/bin/sh
# reference-transaction: hold the push's ref locks until the test says go
[ "$1" = prepared ] || exit 0
cat >/dev/null
touch '{paused}'
i=0
while [ ! -e '{go}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
exit 0
"""


class Pusher:
    """A clone of the mirror's bare repository (hook installed) that pushes manifest edits."""

    def __init__(self, mirror: Mirror, tmp_path: Path) -> None:
        self.bare = mirror.repo
        install(self.bare, sys.executable)
        tmp_path.mkdir()
        self.env = isolated_env(HOME=str(tmp_path))
        self.work = tmp_path / "work"
        self.git("config", "receive.unpackLimit", "1", cwd=self.bare)  # each push keeps its pack
        self.git("clone", "-q", str(self.bare), str(self.work), cwd=tmp_path)

    def git(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
        return result

    def commit_yank(self, reason: str) -> None:
        """Catch up with the bare repository, then yank the 1.0 wheel with ``reason`` in a commit."""
        self.git("fetch", "-q", "origin")
        self.git("reset", "-q", "--hard", "origin/main")
        file = self.work / DEMO
        records = [json.loads(line) for line in file.read_text().splitlines()]
        next(r for r in records if r.get("filename") == WHEEL)["yanked"] = reason
        file.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self.git("commit", "-q", "-am", f"yank: {reason}")

    def push(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["git", "push", "origin", "main"],
            cwd=self.work,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


@pytest.fixture
def pusher(mirror: Mirror, sample, tmp_path: Path) -> Pusher:
    mirror.configure("projects:\n  - demo-pkg\n")
    mirror.run("sync", check=True)
    return Pusher(mirror, tmp_path / "pusher")


def assert_repository_sound(mirror: Mirror) -> None:
    fsck = subprocess.run(
        ["git", "--git-dir", str(mirror.repo), "fsck", "--full", "--strict"],
        env=isolated_env(),
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    verified = mirror.run("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@contextmanager
def push_holding_its_ref_lock(mirror: Mirror, pusher: Pusher, tmp_path: Path) -> Iterator[Path]:
    """A push of a yank, held at its ref update (main's lock taken) while the block runs; then it
    must land, and the pausing hook goes."""
    paused, go = tmp_path / "paused", tmp_path / "go"
    hook = mirror.repo / "hooks" / "reference-transaction"
    hook.write_text(PAUSING_HOOK.format(paused=paused, go=go))
    hook.chmod(0o755)
    pusher.commit_yank("yanked by a push")
    push = pusher.push()
    try:
        deadline = time.monotonic() + 60
        while not paused.exists():
            assert push.poll() is None, push.communicate()
            assert time.monotonic() < deadline, "the push never reached its ref update"
            time.sleep(0.05)
        yield mirror.repo / "refs/heads/main.lock"
    finally:
        go.touch()
        _out, err = push.communicate(timeout=60)
    assert push.returncode == 0, err
    hook.unlink()


def test_a_writer_started_while_a_push_holds_its_ref_lock_leaves_the_lock(
    mirror: Mirror, pusher: Pusher, tmp_path: Path
) -> None:
    with push_holding_its_ref_lock(mirror, pusher, tmp_path) as lock:
        assert lock.exists()
        racing = mirror.run("yank", "demo-pkg", "2.0", "--reason", "yanked by gitmirror")
        assert racing.returncode == 2, racing.stdout + racing.stderr
        [line] = racing.stderr.splitlines()
        assert line.startswith("gitmirror: error: refs/heads/main is locked by another git process"), line
        assert lock.exists(), "the writer deleted the lock of a push in progress"
    assert "yank: yanked by a push" in mirror.git("log", "-1", "--format=%s", "main")
    mirror.run("yank", "demo-pkg", "2.0", "--reason", "yanked by gitmirror", check=True)
    assert_repository_sound(mirror)


SLOW_HOOK = """#!/bin/sh
# reference-transaction: hold the push's ref locks a little, so a writer started meanwhile meets them
[ "$1" = prepared ] && sleep 0.4
cat >/dev/null
exit 0
"""


def start_yank(mirror: Mirror, reason: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GITMIRROR, "yank", "demo-pkg", "2.0", "--reason", reason],
        cwd=mirror.root,
        env=isolated_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_pushes_and_writers_in_a_loop_each_succeed_or_fail_cleanly(mirror: Mirror, pusher: Pusher) -> None:
    """Each round starts a push and a ``gitmirror yank``, one a little before the other: the writer
    meets the push before, during and after its ref update."""
    hook = mirror.repo / "hooks" / "reference-transaction"
    hook.write_text(SLOW_HOOK)
    hook.chmod(0o755)
    pushed = written = 0
    started = time.monotonic()
    for round_, lead in enumerate((-0.6, -0.3, 0.0, 0.3, 0.6, 0.9)):  # < 0: the writer starts first
        pusher.commit_yank(f"push {round_}")
        if lead < 0:
            writer = start_yank(mirror, f"writer {round_}")
            time.sleep(-lead)
            push = pusher.push()
        else:
            push = pusher.push()
            time.sleep(lead)
            writer = start_yank(mirror, f"writer {round_}")
        _out, err = push.communicate(timeout=60)
        _out, writer_err = writer.communicate(timeout=60)
        if push.returncode == 0:
            pushed += 1
        else:  # lost the race to gitmirror's commit: refused as a non-fast-forward, not broken
            assert "rejected" in err or "failed to update ref" in err or "cannot lock ref" in err, err
        if writer.returncode == 0:
            written += 1
        else:
            assert writer.returncode == 2 and len(writer_err.splitlines()) == 1, writer_err
            assert "locked by another git process" in writer_err or "moved" in writer_err, writer_err
        assert not list((mirror.repo / "refs").rglob("*.lock"))
        assert time.monotonic() - started < 120
    assert pushed + written >= 6  # every round at least one side got through
    log = mirror.git("log", "--format=%s", "main")
    assert log.count("yank: push ") == pushed and log.count("yank: demo-pkg 2.0") == written
    hook.unlink()
    assert_repository_sound(mirror)


def test_a_sync_racing_a_push_never_takes_its_lock_and_finishes_after_it(
    mirror: Mirror, pusher: Pusher, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A sync with a new release to commit meets a push holding main's ref lock: it stops in one
    line and leaves the lock; once the push has landed, the next sync commits on top of it."""
    wheel = build_wheel("demo-pkg", "9.0")
    upstream.add("demo-pkg", wheel)
    with push_holding_its_ref_lock(mirror, pusher, tmp_path) as lock:
        racing = mirror.run("sync")
        assert racing.returncode != 0, racing.stdout + racing.stderr
        errors = [line for line in racing.stderr.splitlines() if line.startswith("gitmirror: error:")]
        assert len(errors) == 1 and "locked by another git process" in errors[0], racing.stderr
        assert "Traceback" not in racing.stderr
        assert lock.exists(), "the sync deleted the lock of a push in progress"
    synced = mirror.run("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    log = mirror.git("log", "--format=%s", "main").splitlines()
    assert log[1] == "yank: yanked by a push" and wheel.filename in mirror.git("show", f"main:{DEMO}")
    assert_repository_sound(mirror)
