"""A file downloaded once (``Downloads``) and streamed to every client asking for it meanwhile.

Bytes go from upstream into the store's writer (``Blobs.writer``: hashed, kept aside unnamed) and,
as they arrive, to every waiting client, whichever store it is. The last byte is held back until the
writer verified the sha256 and size: a client never receives a whole body that failed, and a
mismatch aborts its response while the store keeps nothing. A retried attempt restreams from the
start; only bytes past what the clients already got are passed on (the hash check at the end
proves they were the same).

Memory stays bounded by the slowest reader's lag, not the file's size: bytes every reader has
taken are let go, and so are bytes more than ``MAX_LAG_BYTES`` behind the download (a client that
stops reading, or a download every client left). A reader that fell that far behind, or arrives
after bytes were let go, waits until the verified blob is named and reads it from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO

from ..model.page import UpstreamError
from ..storage.blobs import Blobs, BlobWriting
from ..upstream.upstream import Upstream
from .singleflight import SingleFlight

#: bytes every reader has taken are let go in steps of at least this many
RELEASE_BYTES = 1 << 20
CHUNK_BYTES = 256 * 1024
#: the most bytes a reader may fall behind the download before it reads the rest from the stored blob
MAX_LAG_BYTES = 32 << 20


class DownloadFailed(Exception):
    """The download ended without a verified blob; the message is one line of why."""


class SharedBody:
    """The bytes of one download not yet taken by every reader, and how it ended.

    ``store`` and ``sha256``: where the verified blob will be, for readers arriving after bytes were
    let go; ``keep`` False: nobody reads along (a download for the record only), nothing is kept.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, store: Blobs, sha256: str, keep: bool = True) -> None:
        self.loop = loop
        self.store = store
        self.sha256 = sha256
        self.keep = keep
        self.body = bytearray()
        self.base = 0  # the offset of ``body[0]``: bytes before it were let go
        self.verified = False  # the bytes are the announced ones: readers may take the last byte
        self.stored = False  # the blob is named in the store: late readers may read it there
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
                if self.received - MAX_LAG_BYTES - self.base >= RELEASE_BYTES:  # nobody took them in time
                    self._drop_to(self.received - MAX_LAG_BYTES)
            else:
                self.base += offset + len(data) - known
            self._wake()

    def checked(self) -> None:
        """The bytes are verified; the blob is named next (``finish``)."""
        self.verified = True
        self._wake()

    def finish(self, error: str | None = None) -> None:
        """The blob is verified and named (``error`` None), or the download failed."""
        self.verified, self.stored, self.error = error is None, error is None, error
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _let_go(self) -> None:
        """Drop the bytes every reader has taken (all of them once nobody reads along), and those more
        than ``MAX_LAG_BYTES`` behind: a client that stops reading must not pin the file in memory."""
        low = max(min(self._readers.values(), default=self.received), self.received - MAX_LAG_BYTES)
        if low - self.base >= RELEASE_BYTES or (not self._readers and low > self.base):
            self._drop_to(low)

    def _drop_to(self, low: int) -> None:
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
            while sent >= self.base:  # else it fell too far behind: the rest comes from the blob
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
        async for chunk in self._from_store(sent):
            yield chunk

    async def _from_store(self, offset: int = 0) -> AsyncIterator[bytes]:
        """The verified blob from ``offset`` on, once it is named."""
        while not self.stored and self.error is None:
            await self._changed.wait()
        if self.error is not None:
            raise DownloadFailed(self.error)
        handle = await asyncio.to_thread(self.store.open, self.sha256)
        try:  # a reader that fell behind has the bytes before ``offset``: not read again (both stores seek)
            await asyncio.to_thread(handle.seek, offset)
        except BaseException:
            handle.close()
            raise
        async for chunk in read_blob(handle):
            yield chunk


async def read_blob(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """A blob opened with ``Blobs.open``, read in a thread a chunk at a time, then closed (any store:
    a file here or ranges of an object in a bucket)."""
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


class TeeWriter:
    """A store's writer (``BlobWriting``) that also hands every chunk to the clients of a ``SharedBody``."""

    def __init__(self, writer: BlobWriting, shared: SharedBody) -> None:
        self.writer = writer
        self.shared = shared
        self.expected_sha256 = writer.expected_sha256
        self.expected_size = writer.expected_size
        self.size = 0

    @property
    def store(self) -> Blobs:
        return self.writer.store

    def write(self, chunk: bytes | memoryview) -> None:
        offset = self.size
        self.writer.write(chunk)  # refuses a body past its announced size before anyone sees it
        self.size += len(chunk)
        self.shared.from_thread(offset, bytes(chunk))

    def check(self) -> None:
        """Once the bytes are the announced ones, readers get the last byte (the blob is named next)."""
        self.writer.check()
        self.shared.loop.call_soon_threadsafe(self.shared.checked)

    def publish(self, durable: bool = False) -> str:
        return self.writer.publish(durable)

    def commit(self) -> str:
        self.check()
        return self.publish()

    def abort(self) -> None:
        self.writer.abort()

    def __enter__(self) -> TeeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class Downloads:
    """The proxy's downloads in flight: one per blob, whoever asks, streamed to every reader.

    ``keep`` False: nobody reads along (review mode records files without serving them).
    """

    def __init__(self, upstream: Upstream, store: Blobs, log: Callable[[str], None], keep: bool = True) -> None:
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
            body = self._bodies[sha256] = SharedBody(asyncio.get_running_loop(), self.store, sha256, self.keep)
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

    async def settle(self, timeout: float) -> None:
        """Let the downloads in flight be stored and recorded, ``timeout`` seconds at most: a client
        may have every byte of a file before its blob is named (a bucket's upload) and recorded."""
        await self._flights.settle(timeout)

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
            stored = await self.upstream.download(url, lambda: TeeWriter(self.store.writer(sha256, size), body), label)
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
