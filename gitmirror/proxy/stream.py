"""A file downloaded once (``Downloads``) and streamed to every client asking for it meanwhile.

Bytes go from upstream into a ``BlobWriter`` (hashed, written to the store's temporary file) and,
as they arrive, to every waiting client. The last byte is held back until the writer verified the
sha256 and size and named the blob: a client never receives a whole body that failed, and a
mismatch aborts its response while the store keeps nothing. A retried attempt restreams from the
start; only bytes past what the clients already got are passed on (the hash check at the end
proves they were the same).

Memory stays bounded by the slowest reader's lag, not the file's size: bytes every reader has
taken are let go, and a client arriving after that waits for the verified blob and reads it from
the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from ..model.page import UpstreamError
from ..storage.store import BlobStore, BlobWriter
from ..upstream.upstream import Upstream
from .singleflight import SingleFlight

#: bytes every reader has taken are let go in steps of at least this many
RELEASE_BYTES = 1 << 20
CHUNK_BYTES = 256 * 1024


class DownloadFailed(Exception):
    """The download ended without a verified blob; the message is one line of why."""


class SharedBody:
    """The bytes of one download not yet taken by every reader, and how it ended.

    ``blob``: where the verified blob will be, for readers arriving after bytes were let go;
    ``keep`` False: nobody reads along (a download for the record only), nothing is kept.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, blob: Path, keep: bool = True) -> None:
        self.loop = loop
        self.blob = blob
        self.keep = keep
        self.body = bytearray()
        self.base = 0  # the offset of ``body[0]``: bytes before it were let go
        self.verified = False
        self.error: str | None = None
        self._readers: dict[object, int] = {}  # reader -> bytes it has taken
        self._changed = asyncio.Event()

    @property
    def received(self) -> int:
        return self.base + len(self.body)

    def from_thread(self, offset: int, data: bytes) -> None:
        """Bytes an attempt received at ``offset`` (called in a download thread)."""
        self.loop.call_soon_threadsafe(self.extend, offset, data)

    def extend(self, offset: int, data: bytes) -> None:
        """Keep the part of ``data`` past what was received before (an attempt's retry repeats bytes)."""
        known = self.received
        if offset <= known < offset + len(data) and not self.verified:
            if self.keep:
                self.body += data[known - offset :]
            else:
                self.base += offset + len(data) - known
            self._wake()

    def finish(self, error: str | None = None) -> None:
        """The blob is verified and named (``error`` None), or the download failed."""
        self.verified, self.error = error is None, error
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _let_go(self) -> None:
        """Drop the bytes every reader has taken (all of them once nobody reads along)."""
        low = min(self._readers.values(), default=self.received)
        if low - self.base >= RELEASE_BYTES or (not self._readers and low > self.base):
            del self.body[: low - self.base]
            self.base = low

    async def stream(self) -> AsyncIterator[bytes]:
        """The body from its first byte, as it arrives; raises ``DownloadFailed`` when it fails."""
        if self.base > 0:  # its first bytes were let go: the verified blob, once it is there
            async for chunk in self._from_store():
                yield chunk
            return
        reader = object()  # alive while it reads: its key is its own
        self._readers[reader] = sent = 0
        try:
            while True:
                changed = self._changed
                ready = self.received if self.verified else self.received - 1
                if sent < ready:
                    end = min(ready, sent + CHUNK_BYTES)
                    yield bytes(self.body[sent - self.base : end - self.base])
                    sent = self._readers[reader] = end
                    self._let_go()
                    continue
                if self.error is not None:
                    raise DownloadFailed(self.error)
                if self.verified:
                    return
                await changed.wait()
        finally:
            del self._readers[reader]
            self._let_go()

    async def _from_store(self) -> AsyncIterator[bytes]:
        while not self.verified and self.error is None:
            await self._changed.wait()
        if self.error is not None:
            raise DownloadFailed(self.error)
        with open(self.blob, "rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk


class TeeWriter(BlobWriter):
    """A ``BlobWriter`` that also hands every chunk to the clients of a ``SharedBody``."""

    def __init__(self, store: BlobStore, sha256: str, size: int | None, shared: SharedBody) -> None:
        super().__init__(store, sha256, size)
        self.shared = shared

    def write(self, chunk: bytes | memoryview) -> None:
        offset = self.size
        super().write(chunk)  # refuses a body past its announced size before anyone sees it
        self.shared.from_thread(offset, bytes(chunk))

    def check(self) -> None:
        """Once the bytes are the announced ones, readers get the last byte (the blob is named next)."""
        super().check()
        self.shared.loop.call_soon_threadsafe(self.shared.finish)


class Downloads:
    """The proxy's downloads in flight: one per blob, whoever asks, streamed to every reader.

    ``keep`` False: nobody reads along (review mode records files without serving them).
    """

    def __init__(self, upstream: Upstream, store: BlobStore, log: Callable[[str], None], keep: bool = True) -> None:
        self.upstream = upstream
        self.store = store
        self.log = log
        self.keep = keep
        self._flights: SingleFlight[str, None] = SingleFlight()
        self._bodies: dict[str, SharedBody] = {}
        self._by_project: dict[str, set[asyncio.Future[None]]] = {}

    def start(
        self,
        sha256: str,
        url: str,
        size: int | None,
        label: str,
        then: Callable[[int], Awaitable[None]] | None = None,
        project: str | None = None,
    ) -> SharedBody:
        """The one download of blob ``sha256``, joined by every request while it runs; ``then(size)``
        once it is stored. ``project``: counted among that project's downloads (``of_project``)."""
        body = self._bodies.get(sha256)
        if body is None:
            body = self._bodies[sha256] = SharedBody(asyncio.get_running_loop(), self.store.path(sha256), self.keep)
            task = self._flights.start(sha256, lambda: self._fetch(sha256, url, size, label, body, then))
            task.add_done_callback(lambda _: self._bodies.pop(sha256, None))
            if project is not None:
                self._by_project.setdefault(project, set()).add(task)
                task.add_done_callback(lambda done: self._over(project, done))
        return body

    def _over(self, project: str, task: asyncio.Future[None]) -> None:
        running = self._by_project.get(project, set())
        running.discard(task)
        if not running:
            self._by_project.pop(project, None)

    async def of_project(self, project: str) -> None:
        """Wait until the project's downloads in flight are over (failures are reported where they happen)."""
        await asyncio.gather(*self._by_project.get(project, ()), return_exceptions=True)

    async def cancel_all(self) -> None:
        await self._flights.cancel_all()

    async def _fetch(
        self,
        sha256: str,
        url: str,
        size: int | None,
        label: str,
        body: SharedBody,
        then: Callable[[int], Awaitable[None]] | None,
    ) -> None:
        try:
            stored = await self.upstream.download(url, lambda: TeeWriter(self.store, sha256, size, body), label)
        except UpstreamError as exc:
            self.log(f"proxy: {exc}")
            body.finish(str(exc))
            return
        except OSError as exc:  # the store refused (a full disk): served maybe, kept not
            self.log(f"proxy: {label}: not stored: {exc}")
            body.finish(f"{label}: not stored")
            return
        except BaseException:
            body.finish(f"{label}: download interrupted")
            raise
        body.finish()
        if then is not None:
            await then(stored)
