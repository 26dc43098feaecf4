"""Blobs are written as unnamed files (``O_TMPFILE``) and named once verified and fsynced.

Nothing appears in ``tmp/`` while a blob is written, so nothing can be left there by a crash; a
file system without unnamed files gets named temporary files, which a run's start removes. Either
way a blob is visible only under its digest, read-only, with exactly the announced bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import pytest

from gitmirror.storage import store as store_module
from gitmirror.storage.store import BlobStore, IntegrityError

DATA = b"release file bytes " * 300
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def no_unnamed_files(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A file system that refuses ``O_TMPFILE`` (as some network file systems do); counts refusals."""
    refused: list[int] = []
    real_open = os.open

    def refusing_open(path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            refused.append(flags)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(store_module.os, "open", refusing_open)
    return refused


def test_a_blob_being_written_has_no_name_until_it_is_verified(store: BlobStore) -> None:
    writer = store.writer(DIGEST, len(DATA))
    writer.write(DATA)
    assert os.listdir(store.tmp_dir) == [] and not store.has(DIGEST)
    published = writer.commit()
    assert published == store.path(DIGEST) and published.read_bytes() == DATA
    assert stat.S_IMODE(published.stat().st_mode) == 0o444
    assert os.listdir(store.tmp_dir) == []


def test_a_refused_blob_leaves_nothing_anywhere(store: BlobStore) -> None:
    with store.writer(DIGEST, len(DATA)) as writer:
        writer.write(DATA[:-1] + b"!")
        with pytest.raises(IntegrityError, match="sha256 mismatch"):
            writer.commit()
    assert list(store) == [] and os.listdir(store.tmp_dir) == []


def test_the_same_blob_published_twice_at_once_is_kept_once(store: BlobStore) -> None:
    """Two writers of the same digest (two projects sharing a file): both succeed, one blob."""
    first, second = store.writer(DIGEST, len(DATA)), store.writer(DIGEST, len(DATA))
    first.write(DATA)
    second.write(DATA)
    assert first.commit() == second.commit() == store.path(DIGEST)
    assert list(store) == [DIGEST] and store.path(DIGEST).stat().st_nlink == 1


def test_unnamed_files_are_named_in_a_forked_child_too(store: BlobStore) -> None:
    """The name comes from ``/proc/self/fd`` of the process holding the file: a child forked after
    the parent used it must not link the parent's descriptor of the same number."""
    store.put_bytes(b"parent's blob")
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which reports by exit status
        try:
            os._exit(0 if store.put_bytes(DATA) == DIGEST and store.path(DIGEST).read_bytes() == DATA else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.path(DIGEST).read_bytes() == DATA


def test_without_unnamed_files_named_temporaries_are_used_and_cleaned(
    store: BlobStore, no_unnamed_files: list[int]
) -> None:
    for data in (DATA, DATA[::-1]):
        digest = hashlib.sha256(data).hexdigest()
        assert store.put_bytes(data) == digest and store.path(digest).read_bytes() == data
    assert len(no_unnamed_files) == 1  # asked once; later blobs do not ask again
    assert os.listdir(store.tmp_dir) == []
    # what a killed writer leaves there, never visible as a blob, goes at the next run's start
    other = hashlib.sha256(b"never finished").hexdigest()
    leftover = store.writer(other, 1000)
    leftover.write(DATA[:100])
    assert len(os.listdir(store.tmp_dir)) == 1 and not store.has(other)
    assert store.clean_tmp() == 1 and os.listdir(store.tmp_dir) == []
    leftover.abort()
