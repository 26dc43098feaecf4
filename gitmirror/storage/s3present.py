"""Which blobs a bucket holds, known on this machine: ``<local_dir>/state/s3-blobs-<key>``.

A sync asks whether each file it sees is stored, thousands of times per run; against a bucket each
question is a request. This record answers them locally. A sync makes it by one listing of the
bucket's ``blobs/`` (other commands use it when it is there and never list a bucket); it then grows
by one line (a sha256) per blob a process of this machine uploads or finds, appended with
``O_APPEND`` so the sync and its download processes share it; each reader picks up the lines
appended since it last looked before it answers "absent".

It is local state (docs/local-state.md): delete it and the next sync lists the bucket again. A
blob it lists is taken to be in the bucket: right while blobs leave the bucket only through this
machine's ``gitmirror takedown``, which rewrites it; an object deleted behind gitmirror's back is
still reported by ``verify`` and ``status --verify``, which read the bucket itself. What to make
of a blob it does not list is ``S3Store.has``'s choice.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path

_SHA256 = re.compile(rb"[0-9a-f]{64}")
RETRY_SECONDS = 60.0
HEADER = b"gitmirror blob record 1\n"  # written last by the listing: a record without it is not trusted


class PresentRecord:
    """The set of blobs in one bucket prefix, as far as this machine knows."""

    def __init__(self, path: Path, list_bucket: Callable[[], Iterable[str]] | None) -> None:
        """``list_bucket``: how to make the record when there is none (a sync's); None: use one when
        it exists, looking again every ``RETRY_SECONDS`` (a server must not list a whole bucket)."""
        self.path = path
        self._list_bucket = list_bucket
        self._known: set[str] = set()
        self._offset = -1  # bytes of the file read so far; -1: not loaded
        self._retry_at = 0.0

    def contains(self, sha256: str) -> bool:
        """Whether the record (or what this process found itself) lists the blob."""
        if sha256 in self._known:
            return True
        if self._offset >= 0:
            self._read_more()
        elif time.monotonic() >= self._retry_at:
            self._load()
        return sha256 in self._known

    def add(self, sha256: str) -> None:
        """Record a blob just uploaded or found."""
        if sha256 in self._known:
            return
        self._known.add(sha256)
        if self._offset < 0:
            return  # not loaded: the listing will find it
        with contextlib.suppress(OSError):  # a record that cannot be written costs requests, nothing else
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, sha256.encode() + b"\n")
            finally:
                os.close(fd)

    def discard(self, sha256: str) -> None:
        """Forget a deleted blob (takedown): the record, if there is one, is rewritten without it."""
        self.contains(sha256)  # loaded and up to date
        if self._offset >= 0:
            self._write(self._known - {sha256})
        self._known.discard(sha256)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        if not data.startswith(HEADER):
            if self._list_bucket is not None:
                self._write(set(self._list_bucket()) | self._known)
            else:
                self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        self._offset = 0
        self._take(data)

    def _read_more(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                self._take(handle.read())
        except FileNotFoundError:  # deleted meanwhile: list again
            self._load()

    def _take(self, data: bytes) -> None:
        complete = data[: data.rfind(b"\n") + 1]  # a line still being appended waits for the next read
        self._offset += len(complete)
        self._known.update(match.decode() for match in _SHA256.findall(complete))

    def _write(self, blobs: set[str]) -> None:
        """Replace the record atomically: the header, then one line per blob."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = HEADER + b"".join(blob.encode() + b"\n" for blob in sorted(blobs))
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._known, self._offset = set(blobs), len(data)
