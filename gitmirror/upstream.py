"""Talking to the upstream index: project pages in, verified blobs out.

Pages are asked for as PEP 691 JSON and parsed by ``pypi_simple`` whichever serialization comes
back (an HTML-only upstream just works). Every request goes through one bounded pool with retries
on timeouts, resets, 429 and 5xx, honouring ``Retry-After``. Downloads stream into a
``BlobWriter``, so bytes are hashed as they arrive and memory stays flat whatever the file size.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

if importlib.util.find_spec("sniffio") is None:
    # httpcore runs ``import sniffio`` on every request and falls back to asyncio when it fails; not
    # installed (anyio 4 no longer needs it), each attempt searched sys.path again (7 % of a sync's
    # event loop). A failed import recorded once gives the same answer at once.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

from . import workers
from .fetch import RETRY_STATUSES, FetchError, FileFetcher, Transient, describe, retry_after, store_with
from .hosts import HostNotAllowed, HostPolicy
from .manifest import format_time
from .names import UnsafeNameError, check_filename, check_sha256, normalize
from .store import BlobStore, BlobWriter, IntegrityError
from .tls import USER_AGENT, proxy_configured, system_trust

MAX_PAGE_BYTES = 64 * 1024 * 1024
# pypi_simple.ACCEPT_JSON_PREFERRED, spelled out so that a run of 304s never imports pypi_simple
ACCEPT_JSON_PREFERRED = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.5, text/html;q=0.01"
)
T = TypeVar("T")


class UpstreamError(RuntimeError):
    """A failure talking to upstream, phrased as one line for the per-project report."""


class ProjectNotFound(UpstreamError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    version: str
    sha256: str
    size: int | None
    requires_python: str | None
    upload_time: str | None
    yanked: bool | str
    core_metadata: str | None
    metadata_url: str | None


@dataclass
class RemoteProject:
    name: str
    files: list[RemoteFile]
    status: str = "active"
    status_reason: str | None = None
    etag: str | None = None
    last_serial: str | None = None
    rejected: list[str] = field(default_factory=list)


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
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.hosts = HostPolicy(self.base_url, allowed_hosts)
        self.retries = retries
        self.backoff = backoff
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gitmirror-upstream")
        self._client = httpx.Client(
            http2=True,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": USER_AGENT},
            verify=system_trust(),
            event_hooks={"request": [self._check_host]},
        )
        self._files = None if proxy_configured() else FileFetcher(self.hosts, timeout, USER_AGENT)
        self._timeout = timeout
        self._concurrency = concurrency
        self._processes: workers.DownloadProcesses | None = None

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
        self._client.close()
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

        def attempt() -> RemoteProject | None:
            headers = {"Accept": ACCEPT_JSON_PREFERRED}
            if etag:
                headers["If-None-Match"] = etag
            try:
                with self._client.stream("GET", url, headers=headers) as response:
                    _raise_for_transient(response)
                    if response.status_code == 304:
                        return None
                    if response.status_code == 404:
                        raise ProjectNotFound(f"{name}: not found upstream")
                    if response.status_code != 200:
                        raise UpstreamError(f"{name}: upstream answered HTTP {response.status_code}")
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > MAX_PAGE_BYTES:
                            raise UpstreamError(f"{name}: project page larger than {MAX_PAGE_BYTES} bytes")
                    return _parse_page(name, response, bytes(body))
            except httpx.TooManyRedirects:
                raise UpstreamError(f"{name}: too many redirects") from None
            except (httpx.TransportError, httpx.DecodingError) as exc:
                raise Transient(_describe(exc)) from None

        return await self._retrying(name, attempt)

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
        self._check_file_url(url, label)
        if self._processes is None:  # started by the first file to download: a run without starts none
            self._processes = workers.DownloadProcesses(self._concurrency, self.hosts, self._timeout)
        processes, root = self._processes, str(store.root)
        with _one_line(label):
            return await self._retrying_async(label, lambda: processes.store_file(root, url, sha256, size))

    def _check_file_url(self, url: str, label: str) -> None:
        _check_url(url)
        try:
            self.hosts.check(url)
        except HostNotAllowed as exc:
            raise UpstreamError(f"{label}: {exc}") from None

    def _stream_with_httpx(self, url: str, writer: BlobWriter) -> None:
        """``FileFetcher.fetch`` through httpx, which speaks to proxies: same failures, same checks."""
        try:
            with self._client.stream("GET", url) as response:
                _raise_for_transient(response)
                if response.status_code != 200:
                    raise FetchError(f"upstream answered HTTP {response.status_code}")
                declared = response.headers.get("Content-Length")
                for chunk in response.iter_bytes():
                    writer.write(chunk)
                encoded = "Content-Encoding" in response.headers
                if declared and declared.isdigit() and not encoded and int(declared) != writer.size:
                    raise Transient(f"truncated body ({writer.size} of {declared} bytes)")
        except httpx.TooManyRedirects:
            raise FetchError("too many redirects") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise Transient(_describe(exc)) from None


def _describe(exc: Exception) -> str:
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


def _check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise UpstreamError(f"refusing non-HTTP file URL {url!r}")


def _parse_page(name: str, response: httpx.Response, body: bytes) -> RemoteProject:
    content_type = response.headers.get("Content-Type", "text/html").split(";")[0].strip().lower()
    base_url = str(response.url)
    from pypi_simple import ProjectPage  # imported when a page is parsed: ~0.2 s, not needed for 304s

    try:
        if content_type == "application/vnd.pypi.simple.v1+json":
            import json

            page = ProjectPage.from_json_data(json.loads(body), base_url=base_url)
        elif content_type in ("text/html", "application/vnd.pypi.simple.v1+html"):
            _check_html_text(name, body, response.charset_encoding)
            page = ProjectPage.from_html(name, body, base_url=base_url, from_encoding=response.charset_encoding)
        else:
            raise UpstreamError(f"{name}: unsupported page content type {content_type!r}")
    except UpstreamError:
        raise
    except Exception as exc:  # pypi_simple raises many kinds on garbage; all mean "invalid page"
        raise UpstreamError(f"{name}: invalid project page ({type(exc).__name__})") from None
    project = RemoteProject(
        name=name,
        files=[],
        status=str(page.status.value) if page.status else "active",
        status_reason=page.status_reason,
        etag=response.headers.get("ETag"),
        last_serial=str(page.last_serial or response.headers.get("X-PyPI-Last-Serial") or "") or None,
    )
    for package in page.packages:
        try:
            project.files.append(_remote_file(name, package))
        except (UpstreamError, UnsafeNameError) as exc:
            project.rejected.append(str(exc))
    return project


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _check_html_text(name: str, body: bytes, charset: str | None) -> None:
    """Refuse bytes that are no HTML text: the HTML parser reads garbage as a page without files.

    A page without files is legitimate (upstream deleted them) and marks every recorded file as
    removed upstream, so an unreadable answer must fail loudly instead of looking like that.
    """
    try:
        text = body.decode(charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise UpstreamError(f"{name}: invalid project page (not {charset or 'utf-8'} text)") from None
    if _CONTROL_CHARACTERS.search(text):
        raise UpstreamError(f"{name}: invalid project page (control characters in HTML)")


def _remote_file(project: str, package: object) -> RemoteFile:
    filename = check_filename(package.filename)  # type: ignore[attr-defined]
    version = _version_of(project, filename)
    sha256 = (package.digests or {}).get("sha256")  # type: ignore[attr-defined]
    if not sha256:
        raise UpstreamError(f"{filename}: upstream gives no sha256, cannot mirror it immutably")
    url = package.url.split("#", 1)[0]  # type: ignore[attr-defined]
    _check_url(url)
    metadata_sha = None
    metadata_url = None
    if package.has_metadata:  # type: ignore[attr-defined]
        metadata_sha = (package.metadata_digests or {}).get("sha256")  # type: ignore[attr-defined]
        metadata_url = url + ".metadata" if metadata_sha else None
    upload = package.upload_time  # type: ignore[attr-defined]
    yanked: bool | str = False
    if package.is_yanked:  # type: ignore[attr-defined]
        yanked = package.yanked_reason or True  # type: ignore[attr-defined]
    return RemoteFile(
        filename=filename,
        url=url,
        version=version,
        sha256=check_sha256(str(sha256).lower()),  # digests become store paths: checked per file
        size=package.size,  # type: ignore[attr-defined]
        requires_python=package.requires_python or None,  # type: ignore[attr-defined]
        upload_time=format_time(upload) if upload else None,
        yanked=yanked,
        core_metadata=check_sha256(str(metadata_sha).lower()) if metadata_sha else None,
        metadata_url=metadata_url,
    )


def _version_of(project: str, filename: str) -> str:
    """The version a file claims, refusing files that claim to belong to another project."""
    try:
        if filename.endswith(".whl"):
            dist, version, *_ = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            dist, version = parse_sdist_filename(filename)
        else:
            raise UpstreamError(f"{filename}: not a wheel or sdist, skipped")
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise UpstreamError(f"{filename}: unparseable distribution filename") from exc
    if normalize(str(dist)) != project:
        raise UpstreamError(f"{filename}: belongs to project {dist}, not {project}")
    return str(version)
