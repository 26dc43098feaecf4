"""Release files and project pages fetched in the download processes: the bulk of a cold sync.

A cold sync is thousands of file downloads, most of them small. Through httpx each cost about
0.5 ms of Python (client, redirect and auth layers, connection-pool locks, h11 events per read),
and large files moved through 64 KiB byte objects; ``http.client`` answered the same request in
about a third of that, and ``http11`` (plain sockets) in a third of what ``http.client`` took
(60 against 165 us per small file). A body is read straight into one reused, page-aligned
buffer per thread, so the store gets whole buffers and writes large files around the page cache
(``store.BlobWriter``). Measured on 3,000 files / 2 GB from a loopback index: 4.8 s instead of
7.2-8.3 s (bench/RESULTS.md); 3.5 s with direct writes.

What it keeps from the httpx path: the host policy on every request and every redirect hop (at
most ``MAX_REDIRECTS``), TLS verified against the system store, the timeout on every socket
operation, HTTP framing enforced (a body shorter than its ``Content-Length`` is an error), and the
same failure kinds (``Transient`` for what a retry may fix, ``UpstreamError`` for the rest).
Every request when a proxy is configured stays with httpx (``upstream.Upstream``).

Every download is bounded (``limits.Limits``): a body past its announced size, or past the cap for
its kind when none is announced, is cut off and refused; an attempt past its deadline is
``Transient`` (retried like a timeout).
"""

from __future__ import annotations

import mmap
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urljoin, urlsplit

from . import http11
from .hosts import HostNotAllowed, HostPolicy
from .limits import Clock, DeadlineExceeded, Limits
from .page import PageAnswer
from .store import IntegrityError
from .tls import system_trust

if TYPE_CHECKING:
    import ssl

    from .store import BlobWriter

Origin = tuple[str, str, int]  # scheme, host, port
T = TypeVar("T")

MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BUFFER_BYTES = 1 << 20
_REDIRECT_BODY = 65536  # read past to reuse the connection; a longer one is dropped with it
_REDIRECTS = {301, 302, 303, 307, 308}
# what a kept-alive connection the server has closed raises on its next request
_CLOSED_MEANWHILE = (http11.ClosedBeforeAnswer, BrokenPipeError, ConnectionResetError)
# what a broken exchange raises: worth a retry on a new connection
_BROKEN = (OSError, http11.ProtocolError)


class FetchError(Exception):
    """A failure no retry can fix (an HTTP error status, a refused redirect, too many redirects)."""


class Transient(Exception):
    """A failure a retry may fix: a timeout, a broken connection, a truncated body, 429 or 5xx.

    ``retry_after`` is the wait the server asked for (``Retry-After``), in seconds.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[Transient], tuple[str, float | None]]:
        return Transient, (self.reason, self.retry_after)  # from a download process, wait included


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, given as seconds or as an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime  # rare: not in every download process's start

    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass
class _Worker:
    """What one thread keeps between downloads: its keep-alive connections and its read buffer."""

    connections: dict[Origin, http11.Connection]
    buffer: memoryview


class FileFetcher:
    """Downloads for a pool of threads; each thread reuses its own connection per origin."""

    def __init__(self, hosts: HostPolicy, timeout: float, user_agent: str, limits: Limits | None = None) -> None:
        self.hosts = hosts
        self.timeout = timeout
        self.limits = limits or Limits()
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self._local = threading.local()
        self._open: set[http11.Connection] = set()  # every thread's, for close()
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None  # loading the CA store costs: once, when https is first used

    def fetch(self, url: str, writer: BlobWriter) -> memoryview | None:
        """Stream ``url`` into ``writer`` (which hashes and checks the size as bytes arrive).

        Returns the whole body where it fit in this thread's buffer (most files: a wheel's METADATA
        is then read without opening the file just written), valid until its next request.
        A body past its announced size (``writer.expected_size``), or past the cap for its kind
        when none is announced, is refused (``IntegrityError``, ``FetchError``) as soon as its
        ``Content-Length`` or its bytes show it; past the deadline it is ``Transient``.
        """
        worker = self._worker()
        announced = writer.expected_size
        cap = self.limits.cap(url, announced)
        response, origin, _url = self._follow(worker, url, self.headers, self.limits.clock())
        try:
            if response.status != 200:
                raise FetchError(f"upstream answered HTTP {response.status}")
            if response.length is not None and response.length > cap:
                raise oversize_error(self.limits.too_large(url, announced, response.length), announced)
            buffer, whole = worker.buffer, True
            while filled := _received(response, buffer):
                if writer.size + filled > cap:  # nothing of it is written: the body is refused whole
                    raise oversize_error(self.limits.too_large(url, announced), announced)
                # the store's own failures (a full disk) are not the network's: not retried
                writer.write(buffer[:filled])
                if filled < len(buffer):
                    break
                whole = False
        except BaseException:
            self._drop(worker, origin)  # the body was not read to its end: the connection is spent
            raise
        self._spent(worker, origin)
        return buffer[: writer.size] if whole else None

    def get_page(self, url: str, headers: dict[str, str], limit: int) -> PageAnswer:
        """A project page's answer, whatever its status (but those worth a retry: ``Transient``).

        Pages may come compressed (a large project's JSON shrinks tenfold); ``limit`` bounds the
        body as sent and as decompressed.
        """
        worker = self._worker()
        asked = {**self.headers, "Accept-Encoding": "gzip", **headers}
        response, origin, url = self._follow(worker, url, asked, self.limits.clock())
        try:
            body = response.read(limit + 1)
            if len(body) > limit:
                raise FetchError(f"project page larger than {limit} bytes")
            answer = response.headers
            if answer.get("content-encoding", "").strip().lower() == "gzip":
                body = _gunzip(body, limit)
        except _BROKEN as exc:
            self._drop(worker, origin)
            raise Transient(describe(exc)) from None
        except zlib.error:
            self._drop(worker, origin)
            raise Transient("undecodable gzip body") from None
        except BaseException:
            self._drop(worker, origin)
            raise
        self._spent(worker, origin)
        return PageAnswer(response.status, url, answer, body)

    def _follow(
        self, worker: _Worker, url: str, headers: dict[str, str], clock: Clock
    ) -> tuple[http11.Response, Origin, str]:
        """GET ``url``, following redirects under the host policy; (response, its origin, its URL).
        Every hop and the final answer's body share ``clock``'s deadline.

        Statuses a retry may fix are raised as ``Transient``; the response's body is the caller's.
        """
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                self.hosts.check(url)
            except HostNotAllowed as exc:
                raise FetchError(str(exc)) from None
            response, origin = self._request(worker, url, headers, clock)
            try:
                if response.status in _REDIRECTS and response.getheader("Location"):
                    response.read(_REDIRECT_BODY)  # small, as a rule: then the connection is ready for the next request
                    self._spent(worker, origin)
                    url = urljoin(url, response.getheader("Location", ""))
                    continue
                if response.status in RETRY_STATUSES:
                    raise Transient(f"HTTP {response.status}", retry_after(response.getheader("Retry-After")))
            except _BROKEN as exc:
                self._drop(worker, origin)
                raise Transient(describe(exc)) from None
            except BaseException:
                self._drop(worker, origin)
                raise
            return response, origin, url
        raise FetchError("too many redirects")

    def _request(
        self, worker: _Worker, url: str, headers: dict[str, str], clock: Clock
    ) -> tuple[http11.Response, Origin]:
        """Send a GET; a kept-alive connection the server closed meanwhile is replaced once, at once."""
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        while True:  # at most twice: a reused connection that fails this way is dropped, a new one is not retried
            reused = origin in worker.connections
            try:
                connection = worker.connections.get(origin) or self._connect(worker, origin)
                return connection.get(target, headers, clock), origin
            except _CLOSED_MEANWHILE:
                self._drop(worker, origin)
                if not reused:
                    raise Transient("connection closed by upstream") from None
            except http11.Unsendable as exc:
                raise FetchError(str(exc)) from None
            except _BROKEN as exc:
                self._drop(worker, origin)
                raise Transient(describe(exc)) from None

    def _connect(self, worker: _Worker, origin: Origin) -> http11.Connection:
        scheme, host, port = origin
        if scheme == "https" and self._tls is None:
            self._tls = system_trust()
        connection = worker.connections[origin] = http11.connect(scheme, host, port, self.timeout, self._tls)
        with self._lock:
            self._open.add(connection)
        return connection

    def _drop(self, worker: _Worker, origin: Origin) -> None:
        connection = worker.connections.pop(origin, None)
        if connection is not None:
            connection.close()
            with self._lock:
                self._open.discard(connection)

    def _spent(self, worker: _Worker, origin: Origin) -> None:
        """After an answer: the connection goes unless it may take the next request (the answer
        read to its end, and the server keeps it)."""
        connection = worker.connections.get(origin)
        if connection is not None and not connection.reusable:
            self._drop(worker, origin)

    def _worker(self) -> _Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            # page-aligned memory (an anonymous map), as direct writes need
            worker = self._local.worker = _Worker({}, memoryview(mmap.mmap(-1, BUFFER_BYTES)))
        return worker

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()


def _received(response: http11.Response, buffer: memoryview) -> int:
    """Read until ``buffer`` is full or the body ends: whole buffers are what the store writes
    around the page cache (``O_DIRECT``); one socket read returns any amount. A broken exchange is
    ``Transient``."""
    filled = 0
    try:
        while filled < len(buffer) and (count := response.readinto(buffer[filled:])):
            filled += count
    except _BROKEN as exc:
        raise Transient(describe(exc)) from None
    return filled


def store_with(stream: Callable[[str, BlobWriter], object], url: str, writer: BlobWriter) -> int:
    """Stream ``url`` into ``writer`` and publish it (hash and size checked); returns the size.

    The writer is discarded whatever happens: a failed attempt leaves nothing behind.
    """
    try:
        stream(url, writer)
        writer.commit()
        return writer.size
    finally:
        writer.abort()


def stream_checked(stream: Callable[[str, BlobWriter], T], url: str, writer: BlobWriter) -> T:
    """``store_with`` without the publishing: the download processes make a message's blobs durable
    together (``workers._Unnamed``); returns ``stream``'s answer. The writer (a ``BlobWriter``: it
    needs ``check``) is discarded on any failure."""
    try:
        answer = stream(url, writer)
        writer.check()
    except BaseException:
        writer.abort()
        raise
    return answer


def oversize_error(message: str, announced: int | None) -> Exception:
    """A body past its announced size fails verification (as the store says); past a cap, the fetch."""
    return IntegrityError(message) if announced is not None else FetchError(message)


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    inflated = inflater.decompress(body, limit + 1)
    if len(inflated) > limit:
        raise FetchError(f"project page larger than {limit} bytes")
    if not inflater.eof:
        raise zlib.error("the gzip stream ends early")
    return inflated


def describe(exc: BaseException) -> str:
    """One phrase for a transport failure (httpx's timeouts are not TimeoutError: the caller maps them)."""
    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http11.ProtocolError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
