"""Talking to the upstream index: project pages in, verified blobs out.

Pages are asked for as PEP 691 JSON and parsed by ``pypi_simple`` whichever serialization comes
back (an HTML-only upstream just works; ``gitmirror.model.page``). Every request is retried on timeouts,
resets, 429 and 5xx, honouring ``Retry-After``. Downloads stream into a ``BlobWriter``, so bytes
are hashed as they arrive and memory stays flat whatever the file size. Every path (the download
processes, this process's threads, requests through a proxy) applies the same ``limits.Limits``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urljoin

from ..model.hosts import HostNotAllowed, HostPolicy
from ..model.limits import Limits
from ..model.page import ACCEPT_JSON_PREFERRED, RemoteFile, RemoteProject, UpstreamError, check_url
from ..storage.blobs import Blobs, BlobWriting
from ..storage.metadata import WheelMetadata
from ..storage.store import IntegrityError
from . import workers
from .transport import FetchError, Transient, Transport, store_with, with_retries

T = TypeVar("T")


class Upstream:
    """An upstream simple index; use as ``async with Upstream(...) as upstream``.

    Pages and release files are fetched in the download processes (``gitmirror.upstream.workers``): a cold
    sync's hashing and writing run beside the sync's event loop, not under its interpreter lock.
    ``download`` (files kept in memory, such as lockfile targets) runs in this process's threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 8,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        allowed_hosts: tuple[str, ...] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.hosts = HostPolicy(self.base_url, allowed_hosts)
        self.retries = retries
        self.backoff = backoff
        self.limits = limits or Limits()
        self._timeout = timeout
        self._concurrency = concurrency
        self._threads: ThreadPoolExecutor | None = None
        self._transport: Transport | None = None
        self._processes: workers.DownloadProcesses | None = None

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._processes is not None:
            self._processes.close()  # on the loop's thread: it reads their pipes
        if self._threads is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._transport is not None:
            self._transport.close()

    async def _retrying_async(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt`` retried on ``Transient`` failures; the last one becomes one line."""
        try:
            return await with_retries(attempt, self.retries, self.backoff)
        except Transient as exc:
            raise UpstreamError(f"{what}: {exc.reason} (after {self.retries + 1} attempts)") from None

    async def project(self, name: str, etag: str | None = None) -> RemoteProject | None:
        """The project's page, or None when ``etag`` still matches (HTTP 304)."""
        url = urljoin(self.base_url, f"{name}/")
        headers = {"Accept": ACCEPT_JSON_PREFERRED}
        if etag:
            headers["If-None-Match"] = etag
        processes = self._processes_started()
        return await self._retrying_async(name, lambda: processes.project(name, url, headers))

    async def download(self, url: str, open_writer: Callable[[], BlobWriting], label: str) -> int:
        """Stream ``url`` into a fresh writer per attempt, in this process, and commit it (verifying
        hash and size); returns the size."""
        self._check_file_url(url, label)
        transport, threads, loop = self._threaded()

        def attempt() -> int:
            with _one_line(label):
                return store_with(transport.fetch, url, open_writer())

        return await self._retrying_async(label, lambda: loop.run_in_executor(threads, attempt))

    async def document(self, url: str, label: str, limit: int) -> bytes:
        """A small document kept in memory (a PEP 740 provenance object), in this process's threads:
        the file rules (URL, host policy, retries, deadline) and at most ``limit`` bytes."""
        self._check_file_url(url, label)
        transport, threads, loop = self._threaded()

        def attempt() -> bytes:
            with _one_line(label):
                answer = transport.get_page(url, {"Accept": "application/json"}, limit, what="body")
                if answer.status != 200:
                    raise FetchError(f"upstream answered HTTP {answer.status}")
                return answer.body

        return await self._retrying_async(label, lambda: loop.run_in_executor(threads, attempt))

    async def start_workers(self) -> None:
        """Start the download processes, and this process's own transport, now rather than on the first
        page or file (a server's first request need not wait for them); returns once one process is
        ready, raises ``RuntimeError`` when none can start."""
        transport, threads, loop = self._threaded()
        await asyncio.gather(
            self._processes_started().start(), loop.run_in_executor(threads, transport.prepare, self.base_url)
        )

    def _threaded(self) -> tuple[Transport, ThreadPoolExecutor, asyncio.AbstractEventLoop]:
        """This process's transport and threads (started by the first request that needs them)."""
        if self._transport is None or self._threads is None:
            self._transport = Transport(self.hosts, self._timeout, self.limits, connections=self._concurrency)
            self._threads = ThreadPoolExecutor(self._concurrency, thread_name_prefix="gitmirror-upstream")
        return self._transport, self._threads, asyncio.get_running_loop()

    async def store_file(self, store: Blobs, url: str, sha256: str, size: int | None, label: str) -> int:
        """Download ``url`` into ``store`` as blob ``sha256`` in a download process; returns the bytes stored."""
        root = store.location
        return await self._in_processes(url, label, lambda processes: processes.store_file(root, url, sha256, size))

    async def store_wheel(self, store: Blobs, remote_file: RemoteFile) -> tuple[int, WheelMetadata]:
        """``store_file`` of a wheel, and its core metadata (``metadata.read_stored_wheel``)."""
        label, url, sha256, size = remote_file.filename, remote_file.url, remote_file.sha256, remote_file.size
        root, metadata_sha256 = store.location, remote_file.core_metadata
        return await self._in_processes(
            url, label, lambda processes: processes.store_wheel(root, url, sha256, size, metadata_sha256)
        )

    async def _in_processes(self, url: str, label: str, job: Callable[[workers.DownloadProcesses], Awaitable[T]]) -> T:
        """A file's job for the download processes: its URL checked first, retried, failures in one line."""
        self._check_file_url(url, label)
        processes = self._processes_started()
        with _one_line(label):
            return await self._retrying_async(label, lambda: job(processes))

    def _processes_started(self) -> workers.DownloadProcesses:
        """Started by the first page or file a run asks for: a run that asks for nothing starts none."""
        if self._processes is None:
            self._processes = workers.DownloadProcesses(self._concurrency, self.hosts, self._timeout, self.limits)
        return self._processes

    def _check_file_url(self, url: str, label: str) -> None:
        check_url(url)
        try:
            self.hosts.check(url)
        except HostNotAllowed as exc:
            raise UpstreamError(f"{label}: {exc}") from None


@contextmanager
def _one_line(label: str) -> Iterator[None]:
    """What a rejected or refused file becomes: one line of the per-project report."""
    try:
        yield
    except IntegrityError as exc:
        raise UpstreamError(f"{label}: rejected, {exc}") from None
    except FetchError as exc:
        raise UpstreamError(f"{label}: {exc}") from None
