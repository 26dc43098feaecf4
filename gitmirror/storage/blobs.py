"""What every blob store offers: a directory (``store.BlobStore``) or an S3 bucket (``s3store.S3Store``).

The sync, the server, verify, status, hydrate, render and takedowns see a store only through
``Blobs``; each backend keeps the same promise (a blob exists under its sha256 only with complete,
verified bytes; the same bytes are stored once; only a takedown deletes). ``location`` names a
store in one string, so that a download process, which gets only strings, opens the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

#: how a store in a bucket is written in ``mirror.yaml`` and in a ``location``
S3_SCHEME = "s3://"


class BlobWriting(Protocol):
    """Receives one blob's bytes; ``check`` verifies them, ``publish`` names them, ``abort`` drops them."""

    @property
    def store(self) -> Blobs: ...

    expected_sha256: str
    expected_size: int | None
    size: int

    def write(self, chunk: bytes | memoryview) -> None: ...

    def check(self) -> None: ...

    def publish(self, durable: bool = False) -> str: ...

    def commit(self) -> object: ...

    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriting: ...

    def __exit__(self, *exc: object) -> None: ...


class Blobs(Protocol):
    """A content-addressed store of release files, named by sha256."""

    #: a directory on this machine: the blobs of a directory store; for any store its local state
    #: (``state/``) and temporary files
    root: Path

    @property
    def location(self) -> str:
        """The store in one string, for ``open_location`` in another process."""
        ...

    def init(self) -> None: ...

    def clean_tmp(self) -> int: ...

    def has(self, sha256: str) -> bool: ...

    def writer(self, sha256: str, size: int | None = None) -> BlobWriting: ...

    def put_bytes(self, data: bytes, sha256: str | None = None) -> str: ...

    def verify(self, sha256: str, size: int | None = None) -> str | None: ...

    def remove(self, sha256: str) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...

    def open(self, sha256: str) -> IO[bytes]:
        """The blob's bytes, seekable (a wheel is read as a zip); FileNotFoundError when absent."""
        ...

    def read_bytes(self, sha256: str) -> bytes: ...

    def size(self, sha256: str) -> int: ...

    def local_file(self, sha256: str) -> str | None:
        """The blob's file on this machine (it may not exist yet); None for a store elsewhere."""
        ...

    def sync_handle(self) -> int | None: ...

    def sync_all(self, handle: int) -> None: ...


def store_bytes(store: Blobs, data: bytes, sha256: str | None = None) -> str:
    """``Blobs.put_bytes`` for every backend: store ``data`` (checked against ``sha256`` when given)
    through the store's own writer, once, and return its digest."""
    digest = hashlib.sha256(data).hexdigest()
    if store.has(digest) and (sha256 is None or sha256 == digest):
        return digest
    with store.writer(sha256 or digest, len(data)) as writer:
        writer.write(data)
        writer.commit()
    return digest


def problem_of(chunks: Iterable[bytes], sha256: str, size: int | None) -> str | None:
    """``Blobs.verify``'s verdict on a blob read as ``chunks``: None when intact, else what is wrong."""
    digest, length = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        length += len(chunk)
    if size is not None and length != size:
        return f"size {length}, expected {size}"
    if digest.hexdigest() != sha256:
        return f"content hashes to {digest.hexdigest()}"
    return None


def open_location(location: str) -> Blobs:
    """The store a ``Blobs.location`` names: an S3 location, else a directory."""
    if location.startswith(S3_SCHEME):
        from .s3store import S3Store

        return S3Store.from_location(location)
    from .store import BlobStore

    return BlobStore(location)
