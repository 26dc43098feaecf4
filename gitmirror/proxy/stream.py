"""A file downloaded once and streamed to every client asking for it meanwhile.

Bytes go from upstream into a ``BlobWriter`` (hashed, written to the store's temporary file) and,
as they arrive, to every waiting client. The last byte is held back until the writer verified the
sha256 and size and named the blob: a client never receives a whole body that failed, and a
mismatch aborts its response while the store keeps nothing. A retried attempt restreams from the
start; only bytes past what the clients already got are passed on (the hash check at the end
proves they were the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..storage.store import BlobStore, BlobWriter


class DownloadFailed(Exception):
    """The download ended without a verified blob; the message is one line of why."""


class SharedBody:
    """The bytes received so far and how the download ended; clients read it with ``stream``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.body = bytearray()
        self.verified = False
        self.error: str | None = None
        self._changed = asyncio.Event()

    def from_thread(self, offset: int, data: bytes) -> None:
        """Bytes an attempt received at ``offset`` (called in a download thread)."""
        self.loop.call_soon_threadsafe(self.extend, offset, data)

    def extend(self, offset: int, data: bytes) -> None:
        """Keep the part of ``data`` past what was received before (an attempt's retry repeats bytes)."""
        known = len(self.body)
        if offset <= known < offset + len(data):
            self.body += data[known - offset :]
            self._wake()

    def finish(self, error: str | None = None) -> None:
        """The blob is verified and named (``error`` None), or the download failed."""
        self.verified, self.error = error is None, error
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def stream(self, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The body from its first byte, as it arrives; raises ``DownloadFailed`` when it fails."""
        sent = 0
        while True:
            changed = self._changed
            ready = len(self.body) if self.verified else len(self.body) - 1
            if sent < ready:
                end = min(ready, sent + chunk)
                yield bytes(self.body[sent:end])
                sent = end
                continue
            if self.error is not None:
                raise DownloadFailed(self.error)
            if self.verified:
                return
            await changed.wait()


class TeeWriter(BlobWriter):
    """A ``BlobWriter`` that also hands every chunk to the clients of a ``SharedBody``."""

    def __init__(self, store: BlobStore, sha256: str, size: int | None, shared: SharedBody) -> None:
        super().__init__(store, sha256, size)
        self.shared = shared

    def write(self, chunk: bytes | memoryview) -> None:
        offset = self.size
        super().write(chunk)  # refuses a body past its announced size before anyone sees it
        self.shared.from_thread(offset, bytes(chunk))
