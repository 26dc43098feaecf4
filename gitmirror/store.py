"""The content-addressed blob store: release files live outside git, named by their sha256.

Layout: ``<store>/blobs/<aa>/<bb>/<sha256>``, temporary files in ``<store>/tmp/``. A blob appears
under its final name only by an atomic rename after its bytes were hashed and checked, so a
reader (or a crash) never sees a half-written or unverified blob, and the same bytes are stored
once however many files or projects refer to them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import crashpoints
from .names import check_sha256


class IntegrityError(ValueError):
    """Bytes that do not match the sha256 or size they were announced with."""


class BlobWriter:
    """Receives a blob's bytes in chunks, hashing as they arrive; ``commit`` verifies and publishes."""

    def __init__(self, store: BlobStore, expected_sha256: str, expected_size: int | None) -> None:
        self._store = store
        self.expected_sha256 = check_sha256(expected_sha256)
        self.expected_size = expected_size
        self._hash = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        crashpoints.reached("store.tmp-created")

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise IntegrityError(f"body longer than the announced {self.expected_size} bytes")
        self._file.write(chunk)
        crashpoints.reached("store.chunk-written")

    def commit(self) -> Path:
        """Check size and hash, then make the blob visible; raises IntegrityError and keeps nothing."""
        try:
            digest = self._hash.hexdigest()
            if self.expected_size is not None and self.size != self.expected_size:
                raise IntegrityError(f"got {self.size} bytes, announced {self.expected_size}")
            if digest != self.expected_sha256:
                raise IntegrityError(f"sha256 mismatch: announced {self.expected_sha256}, got {digest}")
            crashpoints.reached("store.verified")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            crashpoints.reached("store.fsynced")
            target = self._store.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self._tmp, 0o444)
            crashpoints.reached("store.read-only")
            os.replace(self._tmp, target)
            crashpoints.reached("store.published")
            return target
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"

    def init(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted writes; they were never visible, so nothing is lost."""
        removed = 0
        if self.tmp_dir.is_dir():
            for leftover in self.tmp_dir.iterdir():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.blobs_dir / sha256[:2] / sha256[2:4] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def writer(self, sha256: str, size: int | None = None) -> BlobWriter:
        self.init()
        return BlobWriter(self, sha256, size)

    def put_bytes(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data`` (checked against ``sha256`` when given) and return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        if self.has(digest) and (sha256 is None or sha256 == digest):
            return digest
        with self.writer(sha256 or digest, len(data)) as writer:
            writer.write(data)
            writer.commit()
        return digest

    def verify(self, sha256: str, size: int | None = None) -> str | None:
        """Re-hash a stored blob; returns a problem description, or None when it is intact."""
        path = self.path(sha256)
        if not path.is_file():
            return "missing from the store"
        digest = hashlib.sha256()
        length = 0
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                length += len(chunk)
        if size is not None and length != size:
            return f"size {length}, expected {size}"
        if digest.hexdigest() != sha256:
            return f"content hashes to {digest.hexdigest()}"
        return None

    def remove(self, sha256: str) -> bool:
        """Delete a blob (takedown only); returns whether it existed."""
        path = self.path(sha256)
        if path.exists():
            os.chmod(path, 0o644)
            path.unlink()
            return True
        return False

    def __iter__(self) -> Iterator[str]:
        if not self.blobs_dir.is_dir():
            return
        for path in self.blobs_dir.glob("*/*/*"):
            yield path.name
