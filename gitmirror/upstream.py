"""Talking to the upstream index: project pages in, verified blobs out.

Pages are asked for as PEP 691 JSON and parsed by ``pypi_simple`` whichever serialization comes
back (an HTML-only upstream just works; ``gitmirror.page``). Every request is retried on timeouts,
resets, 429 and 5xx, honouring ``Retry-After``. Downloads stream into a ``BlobWriter``, so bytes
are hashed as they arrive and memory stays flat whatever the file size. Every path (the download
processes, this process's threads, httpx through a proxy) applies the same ``limits.Limits``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urljoin

from . import workers
from .fetch import RETRY_STATUSES, FetchError, FileFetcher, Transient, describe, oversize_error, retry_after, store_with
from .hosts import HostNotAllowed, HostPolicy
from .limits import DeadlineExceeded, Limits
from .metadata import WheelMetadata, read_stored_wheel
from .page import (
    ACCEPT_JSON_PREFERRED,
    MAX_PAGE_BYTES,
    PageAnswer,
    RemoteFile,
    RemoteProject,
    UpstreamError,
    check_url,
    project_from,
)
from .store import BlobStore, BlobWriter, IntegrityError
from .tls import USER_AGENT, proxy_configured, system_trust

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")


class Upstream:
    """An upstream simple index; use as ``async with Upstream(...) as upstream``.

    The run is orchestrated on an event loop, but each request runs blocking in a bounded pool of
    threads (pages through httpx, release files through ``fetch.FileFetcher``): a file streams
    socket -> sha256 -> temporary file, and socket reads, hashing and writes all release the GIL.
    The same requests through httpx's asyncio stack kept the event-loop thread 90 % busy with
    per-chunk and per-request bookkeeping; it was the limit of a cold sync's throughput.
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
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gitmirror-upstream")
        self.limits = limits or Limits()
        self._files = None if proxy_configured() else FileFetcher(self.hosts, timeout, USER_AGENT, self.limits)
        self._timeout = timeout
        self._concurrency = concurrency
        self._client_lock = threading.Lock()
        self._made_client: httpx.Client | None = None
        self._processes: workers.DownloadProcesses | None = None
        self.pages_in_html: bool | None = None  # whether upstream answered in HTML (None: no page parsed)

    @property
    def _client(self) -> httpx.Client:
        """The client for runs through a proxy (the download processes speak to none); made when
        first used, by whichever pool thread comes first: importing httpx, loading the CA store and
        HTTP/2 took 0.24 s of every sync's start."""
        with self._client_lock:
            if self._made_client is None:
                self._made_client = self._new_client()
            return self._made_client

    def _new_client(self) -> httpx.Client:
        if importlib.util.find_spec("sniffio") is None:
            # httpcore runs ``import sniffio`` on every request and falls back to asyncio when it fails;
            # not installed (anyio 4 no longer needs it), each attempt searched sys.path again (7 % of
            # a sync's event loop). A failed import recorded once gives the same answer at once.
            sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
        import httpx

        return httpx.Client(
            http2=True,
            timeout=httpx.Timeout(self._timeout),
            limits=httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": USER_AGENT},
            verify=system_trust(),
            event_hooks={"request": [self._check_host]},
        )

    def _check_host(self, request: httpx.Request) -> None:
        """Runs before every request, redirect hops included: a redirect cannot lead past the policy."""
        try:
            self.hosts.check(str(request.url))
        except HostNotAllowed as exc:
            raise UpstreamError(str(exc)) from None

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._processes is not None:
            self._processes.close()  # on the loop's thread: it reads their pipes
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._made_client is not None:
            self._made_client.close()
        if self._files is not None:
            self._files.close()

    async def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """Run the blocking ``attempt`` in the pool with retries; transient failures wait with jittered
        exponential backoff (on the event loop, so a waiting retry holds no thread).

        The pool's own queue bounds the concurrency: a thread that finishes takes the next request at
        once, where a semaphore on the event loop left it idle until the loop came round (workers sat
        idle 47 % of a cold sync).
        """
        loop = asyncio.get_running_loop()
        return await self._retrying_async(what, lambda: loop.run_in_executor(self._threads, attempt))

    async def _retrying_async(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        for tries in range(self.retries + 1):
            try:
                return await attempt()
            except Transient as exc:
                if tries == self.retries:
                    raise UpstreamError(f"{what}: {exc.reason} (after {tries + 1} attempts)") from None
                delay = exc.retry_after if exc.retry_after is not None else self.backoff * 2**tries
                await asyncio.sleep(min(delay, 60.0) * (1 + random.random() / 4))
        raise AssertionError("unreachable")

    async def project(self, name: str, etag: str | None = None) -> RemoteProject | None:
        """The project's page, or None when ``etag`` still matches (HTTP 304)."""
        url = urljoin(self.base_url, f"{name}/")
        headers = {"Accept": ACCEPT_JSON_PREFERRED}
        if etag:
            headers["If-None-Match"] = etag
        if self._files is None:
            page = await self._retrying(name, lambda: project_from(name, self._page_with_httpx(name, url, headers)))
        else:
            processes = self._processes_started()
            page = await self._retrying_async(name, lambda: processes.project(name, url, headers))
        if page is not None:
            self.pages_in_html = self.pages_in_html or page.html
        return page

    def _page_with_httpx(self, name: str, url: str, headers: dict[str, str]) -> PageAnswer:
        """``FileFetcher.get_page`` through httpx, which speaks to proxies (the deadline is checked
        at each piece of the body; httpx bounds the head by its size and ``timeout`` per read)."""
        import httpx

        clock = self.limits.clock()
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                _raise_for_transient(response)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_PAGE_BYTES:
                        raise UpstreamError(f"{name}: project page larger than {MAX_PAGE_BYTES} bytes")
                    clock.check(response.num_bytes_downloaded)
                answer = {key.lower(): value for key, value in response.headers.items()}
                return PageAnswer(response.status_code, str(response.url), answer, bytes(body))
        except httpx.TooManyRedirects:
            raise UpstreamError(f"{name}: too many redirects") from None
        except (httpx.TransportError, httpx.DecodingError, DeadlineExceeded) as exc:
            raise Transient(_describe(exc)) from None

    async def download(self, url: str, open_writer: Callable[[], BlobWriter], label: str) -> int:
        """Stream ``url`` into a fresh writer per attempt and commit it (verifying hash and size);
        returns the size."""
        self._check_file_url(url, label)
        stream = self._files.fetch if self._files is not None else self._stream_with_httpx

        def attempt() -> int:
            with _one_line(label):
                return store_with(stream, url, open_writer())

        return await self._retrying(label, attempt)

    async def store_file(self, store: BlobStore, url: str, sha256: str, size: int | None, label: str) -> int:
        """Download ``url`` into ``store`` as blob ``sha256``; returns the bytes stored.

        In the download processes (``gitmirror.workers``), or in this process's threads through
        httpx when a proxy is configured (the processes do not speak to proxies).
        """
        if self._files is None:
            return await self.download(url, lambda: store.writer(sha256, size), label)
        root = str(store.root)
        return await self._in_processes(url, label, lambda processes: processes.store_file(root, url, sha256, size))

    async def store_wheel(self, store: BlobStore, remote_file: RemoteFile) -> tuple[int, WheelMetadata]:
        """``store_file`` of a wheel, and its core metadata (``metadata.read_stored_wheel``)."""
        label, url, sha256, size = remote_file.filename, remote_file.url, remote_file.sha256, remote_file.size
        if self._files is None:
            stored = await self.store_file(store, url, sha256, size, label)
            return stored, await asyncio.to_thread(read_stored_wheel, store, sha256, remote_file.core_metadata)
        root, metadata_sha256 = str(store.root), remote_file.core_metadata
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

    def _stream_with_httpx(self, url: str, writer: BlobWriter) -> None:
        """``FileFetcher.fetch`` through httpx, which speaks to proxies: same failures, same checks,
        the same limits (the deadline checked at each piece of the body)."""
        import httpx

        announced = writer.expected_size
        cap = self.limits.cap(url, announced)
        clock = self.limits.clock()
        try:
            with self._client.stream("GET", url) as response:
                _raise_for_transient(response)
                if response.status_code != 200:
                    raise FetchError(f"upstream answered HTTP {response.status_code}")
                declared = response.headers.get("Content-Length")
                encoded = "Content-Encoding" in response.headers
                if declared and declared.isdigit() and not encoded and int(declared) > cap:
                    raise oversize_error(self.limits.too_large(url, announced, int(declared)), announced)
                for chunk in response.iter_bytes():
                    if writer.size + len(chunk) > cap:
                        raise oversize_error(self.limits.too_large(url, announced), announced)
                    writer.write(chunk)
                    clock.check(response.num_bytes_downloaded)
                if declared and declared.isdigit() and not encoded and int(declared) != writer.size:
                    raise Transient(f"truncated body ({writer.size} of {declared} bytes)")
        except httpx.TooManyRedirects:
            raise FetchError("too many redirects") from None
        except (httpx.TransportError, httpx.DecodingError, DeadlineExceeded) as exc:
            raise Transient(_describe(exc)) from None


def _describe(exc: Exception) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return describe(exc)


def _raise_for_transient(response: httpx.Response) -> None:
    if response.status_code in RETRY_STATUSES:
        raise Transient(f"HTTP {response.status_code}", retry_after(response.headers.get("Retry-After")))


@contextmanager
def _one_line(label: str) -> Iterator[None]:
    """What a rejected or refused file becomes: one line of the per-project report."""
    try:
        yield
    except IntegrityError as exc:
        raise UpstreamError(f"{label}: rejected, {exc}") from None
    except FetchError as exc:
        raise UpstreamError(f"{label}: {exc}") from None
