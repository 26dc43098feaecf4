"""The tip a ``MirrorView`` serves follows its branch however the branch moves: a commit in this
process (dulwich), git's own ``update-ref``, packing the ref and writing it loose again."""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

from gitmirror.serve.view import MirrorView
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY}
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


def test_the_served_tip_follows_every_way_the_branch_moves(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo")
    view = MirrorView(repo, BlobStore(tmp_path / "store"))
    loose = repo.path / "refs" / "heads" / "main"
    assert view.tip() is None  # no commit yet: neither ref file exists
    first = repo.write_commit({"a": b"1\n"}, "sync: 1\n", parent=None)
    assert view.tip() == first
    tree = git(repo.path, "rev-parse", f"{first.decode()}^{{tree}}").strip()
    second = git(repo.path, "commit-tree", tree, "-p", first.decode(), "-m", "by git").strip()
    git(repo.path, "update-ref", "refs/heads/main", second)
    assert view.tip() == second.encode()
    git(repo.path, "pack-refs", "--all")
    assert not loose.exists()
    assert view.tip() == second.encode()
    third = repo.write_commit({"a": b"3\n"}, "sync: 3\n", parent=second.encode())
    assert loose.exists() and view.tip() == third  # the loose ref wins over packed-refs again
    git(repo.path, "update-ref", "refs/heads/main", first.decode())  # moved back, by git
    assert view.tip() == first
    assert view.tip() == first


def test_views_dropped_leave_no_open_ref_file(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo")
    commit = repo.write_commit({"a": b"1\n"}, "sync: 1\n", parent=None)
    store = BlobStore(tmp_path / "store")
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert MirrorView(repo, store).tip() == commit
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before
