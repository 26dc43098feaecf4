"""A commit's objects are on disk before the branch moves to it, a tag before its ref
(``MetadataRepo.write_durably``).

dulwich writes object files without fsync and the ref file with one, so without a flush of its own
a power loss could leave the branch naming objects that never reached the disk. Each test records
what the flush saw: the new commit already among the objects, the branch not moved yet.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from gitmirror.storage import durable
from gitmirror.storage import repo_write as repo_module
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.snapshot import create_tag

MANIFESTS = {f"projects/de/demo-{number}.json": b'{"n": %d}\n' % number for number in range(5)}


def _watch(metadata: MetadataRepo, seen: list[tuple[bytes | None, set[bytes]]]) -> None:
    """Record the branch's tip and every object id, at the moment of the flush."""
    seen.append((metadata.tip(), set(metadata.git.object_store)))


@pytest.mark.parametrize("packed", [False, True], ids=["loose-objects", "one-pack"])
def test_one_syncfs_after_the_objects_before_the_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packed: bool
) -> None:
    metadata = MetadataRepo.init(tmp_path / "repo")
    first = metadata.write_commit({"projects/a/a.json": b"{}\n"}, "first")
    if packed:
        monkeypatch.setattr(repo_module, "LOOSE_OBJECT_LIMIT", 2)
    seen: list[tuple[bytes | None, set[bytes]]] = []
    real_sync = durable.sync
    monkeypatch.setattr(durable, "sync", lambda handle, where: _watch(metadata, seen) or real_sync(handle, where))
    monkeypatch.setattr(repo_module.os, "sync", lambda: pytest.fail("os.sync where syncfs exists"))
    second = metadata.write_commit(MANIFESTS, "second", parent=first)
    assert len(seen) == 1
    tip_then, objects_then = seen[0]
    assert tip_then == first and second in objects_then
    assert metadata.tip() == second
    packs = list((tmp_path / "repo" / "objects" / "pack").glob("*.pack"))
    assert bool(packs) is packed


def test_without_syncfs_everything_is_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metadata = MetadataRepo.init(tmp_path / "repo")
    seen: list[tuple[bytes | None, set[bytes]]] = []
    monkeypatch.setattr(durable, "handle", lambda directory: None)
    monkeypatch.setattr(repo_module.os, "sync", lambda: _watch(metadata, seen))
    commit = metadata.write_commit(MANIFESTS, "first")
    assert [(tip, commit in objects) for tip, objects in seen] == [(None, True)]
    assert metadata.tip() == commit


def test_a_failed_flush_leaves_the_branch_where_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refused to write back: the commit may not be on it, so the branch does not move and
    the error names the repository."""
    metadata = MetadataRepo.init(tmp_path / "repo")
    first = metadata.write_commit({"projects/a/a.json": b"{}\n"}, "first")
    real_sync = durable.sync

    def failing(handle: int, where: Path | str) -> None:
        def refuse(_handle: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(durable, "_syncfs", lambda: refuse)
        real_sync(handle, where)

    monkeypatch.setattr(durable, "sync", failing)
    with pytest.raises(OSError, match="Input/output error") as raised:
        metadata.write_commit(MANIFESTS, "second", parent=first)
    assert raised.value.filename == str(metadata.path)
    assert metadata.tip() == first


def test_a_tag_is_on_disk_before_its_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metadata = MetadataRepo.init(tmp_path / "repo")
    commit = metadata.write_commit(MANIFESTS, "first")
    seen: list[tuple[bool, set[bytes]]] = []
    real_sync = durable.sync

    def watch(handle: int, where: Path | str) -> None:
        seen.append((b"refs/tags/v1" in metadata.git.refs, set(metadata.git.object_store)))
        real_sync(handle, where)

    monkeypatch.setattr(durable, "sync", watch)
    tag = create_tag(metadata, "v1", commit)
    assert seen == [(False, seen[0][1])] and tag in seen[0][1]
    assert metadata.git.refs[b"refs/tags/v1"] == tag
