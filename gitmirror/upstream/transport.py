"""The one way gitmirror speaks HTTP to an upstream index or a hydrate source (httpx).

Every request goes through a ``Transport``: TLS verified against the system trust store (one
``SSLContext`` per process, ``tls.system_trust``), the host policy checked on every request and
every redirect hop (``hosts.HostPolicy``, at most ``MAX_REDIRECTS``), proxies from the environment
(``http_proxy``, ``https_proxy``, ``no_proxy``: httpx's ``trust_env``), the idle ``timeout`` on
every socket operation, and the bounds of ``limits.Limits``: a body past its announced size or its
kind's cap is refused, an attempt past its deadline (its head included) is ``Transient``.
Failures come out as two kinds: ``Transient`` (a retry may fix it; ``with_retries`` retries it,
honouring ``Retry-After``) and ``FetchError`` (it may not).

Why one module: downloads, pages, hydrate, the warm check and the changelog must agree on trust,
policy and failure words; each path having its own client is how they drifted apart.
"""

from __future__ import annotations

import mmap
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from ..model.hosts import HostNotAllowed, HostPolicy
from ..model.limits import Clock, DeadlineExceeded, Limits
from .tls import USER_AGENT, system_trust

if TYPE_CHECKING:
    import httpcore
    import httpx

    from ..model.page import PageAnswer
    from ..storage.blobs import BlobWriting

T = TypeVar("T")

MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the read buffer of each thread: bodies up to this size are answered whole (``Transport.fetch``)
BUFFER_BYTES = 1 << 20
#: the most bytes of an XML-RPC answer (``Transport.call``)
MAX_CALL_BYTES = 64 << 20


class FetchError(Exception):
    """A failure no retry can fix (an HTTP error status, a refused host or redirect, too many redirects)."""


class TooLarge(FetchError):
    """A body past the cap for its kind, its size announced by nobody (``limits.Limits.cap``)."""


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
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


async def with_retries(attempt: Callable[[], Awaitable[T]], retries: int, backoff: float) -> T:
    """``attempt`` until it succeeds or fails ``retries + 1`` times with ``Transient`` (then the last
    one is raised); waits with jittered exponential backoff, or ``Retry-After`` when given."""
    import asyncio  # (the warm check, which never retries, starts faster without it)

    for tries in range(retries + 1):
        try:
            return await attempt()
        except Transient as exc:
            if tries == retries:
                raise
            delay = exc.retry_after if exc.retry_after is not None else backoff * 2**tries
            await asyncio.sleep(min(delay, 60.0) * (1 + random.random() / 4))
    raise AssertionError("unreachable")


def describe(exc: BaseException) -> str:
    """One phrase for a transport failure."""
    import httpx

    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.DecodingError):
        return "undecodable compressed body"
    if isinstance(exc, httpx.RemoteProtocolError) and (short := _SHORT_BODY.search(str(exc))):
        return f"truncated body ({short[1]} of {short[2]} bytes)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def oversize_error(message: str, announced: int | None) -> Exception:
    """A body past its announced size fails verification (as the store says); past a cap, the fetch."""
    from ..storage.store import IntegrityError

    return IntegrityError(message) if announced is not None else TooLarge(message)


_SHORT_BODY = re.compile(r"received (\d+) bytes, expected (\d+)")


class _Attempt(threading.local):
    """The deadline of this thread's request under way, which every socket read obeys."""

    clock: Clock | None = None
    received = 0


_attempt = _Attempt()


@cache
def _bounded_backend() -> type[httpcore.NetworkBackend]:
    """httpcore's backend whose connections read under ``_attempt``'s deadline (made when first used:
    httpx and httpcore are imported by the processes that speak HTTP, not by every one that may)."""
    import httpcore

    class _BoundedStream(httpcore.NetworkStream):
        """A connection whose every read ends by the current attempt's deadline (head and body alike)."""

        def __init__(self, stream: httpcore.NetworkStream) -> None:
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            clock = _attempt.clock
            if clock is None:
                return self._stream.read(max_bytes, timeout)
            left = clock.end + _attempt.received * clock.per_byte - time.monotonic()
            if left <= 0:
                raise clock.exceeded()
            try:
                data = self._stream.read(max_bytes, left if timeout is None else min(timeout, left))
            except httpcore.ReadTimeout:
                if clock.end + _attempt.received * clock.per_byte <= time.monotonic():
                    raise clock.exceeded() from None
                raise
            _attempt.received += len(data)
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._stream.write(buffer, timeout)

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class _BoundedBackend(httpcore.SyncBackend):
        def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
            return _BoundedStream(super().connect_tcp(*args, **kwargs))

    return _BoundedBackend


class Transport:
    """An httpx client with gitmirror's rules, for the threads of one process (thread-safe).

    ``hosts``: where requests may go; ``timeout``: seconds per socket operation; ``limits``: bytes
    and deadlines of each attempt; ``connections``: connections kept per origin; ``peer``: what
    failures call the other end ("upstream answered HTTP 404").
    """

    def __init__(
        self,
        hosts: HostPolicy,
        timeout: float,
        limits: Limits | None = None,
        *,
        connections: int = 8,
        user_agent: str = USER_AGENT,
        peer: str = "upstream",
    ) -> None:
        import httpx

        self.hosts = hosts
        self.peer = peer  # how failures name the other end
        self.limits = limits or Limits()
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            verify=system_trust(),
            trust_env=True,
            event_hooks={"request": [self._check_host]},
        )
        # every connection, direct or through a proxy, reads under the attempt's deadline
        for transport in [self.client._transport, *self.client._mounts.values()]:
            pool = getattr(transport, "_pool", None)
            if pool is not None:
                pool._network_backend = _bounded_backend()()
        self._local = threading.local()

    def _check_host(self, request: httpx.Request) -> None:
        """Before every request, redirect hops included: a redirect cannot lead past the policy."""
        self.hosts.check(str(request.url))

    @contextmanager
    def _request(self, method: str, url: str, clock: Clock | None, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer under the rules; statuses worth a retry are raised as ``Transient``."""
        import httpx

        _attempt.clock, _attempt.received = clock, 0
        try:
            with self.client.stream(method, url, **kwargs) as response:
                if response.status_code in RETRY_STATUSES:
                    raise Transient(f"HTTP {response.status_code}", retry_after(response.headers.get("Retry-After")))
                yield response
        except HostNotAllowed as exc:
            raise FetchError(str(exc)) from None
        except httpx.TooManyRedirects:
            raise FetchError("too many redirects") from None
        except httpx.InvalidURL as exc:
            raise FetchError(f"invalid URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError, DeadlineExceeded) as exc:
            raise Transient(describe(exc)) from None
        finally:
            _attempt.clock = None

    def fetch(self, url: str, writer: BlobWriting) -> memoryview | None:
        """Stream ``url`` into ``writer`` (which hashes and checks the size as bytes arrive).

        Returns the whole body where it fit in this thread's buffer (a wheel's METADATA is then
        read without opening the file just written), valid until the thread's next request.
        A body past its announced size (``writer.expected_size``), or past the cap for its kind
        when none is announced, is refused (``IntegrityError``, ``FetchError``) as soon as its
        ``Content-Length`` or its bytes show it; past the deadline it is ``Transient``.
        """
        announced = writer.expected_size
        cap = self.limits.cap(url, announced)
        buffer = self._buffer()
        filled, whole = 0, True
        with self._request("GET", url, self.limits.clock()) as response:
            if response.status_code != 200:
                raise FetchError(f"{self.peer} answered HTTP {response.status_code}")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > cap:
                raise oversize_error(self.limits.too_large(url, announced, int(length)), announced)
            for chunk in response.iter_raw():  # as sent: a file is hashed as the index hashed it
                if writer.size + filled + len(chunk) > cap:  # nothing of it is written: refused whole
                    raise oversize_error(self.limits.too_large(url, announced), announced)
                while chunk:  # whole aligned buffers: the store writes large files around the page cache
                    taken = min(len(chunk), BUFFER_BYTES - filled)
                    buffer[filled : filled + taken] = chunk[:taken]
                    filled, chunk = filled + taken, chunk[taken:]
                    if filled == BUFFER_BYTES:
                        writer.write(buffer)
                        filled, whole = 0, False
        if filled:
            writer.write(buffer[:filled])
        return buffer[:filled] if whole else None

    def get_page(self, url: str, headers: dict[str, str], limit: int, what: str = "project page") -> PageAnswer:
        """A page's answer, whatever its status (but those worth a retry: ``Transient``); it may come
        compressed, and ``limit`` bounds the body as decompressed (past it: "<what> larger than ...")."""
        from ..model.page import PageAnswer

        body = bytearray()
        with self._request("GET", url, self.limits.clock(), headers={"Accept-Encoding": "gzip", **headers}) as answer:
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise FetchError(f"{what} larger than {limit} bytes")
            fields = {key.lower(): value for key, value in answer.headers.items()}
            return PageAnswer(answer.status_code, str(answer.url), fields, bytes(body))

    def head(self, url: str, headers: dict[str, str]) -> tuple[int, httpx.Headers]:
        """Status and headers of a ``HEAD`` of ``url``, redirects not followed."""
        with self._request("HEAD", url, self.limits.clock(), headers=headers, follow_redirects=False) as answer:
            return answer.status_code, answer.headers

    def call(self, url: str, method: str, *params: str | int) -> Any:
        """An XML-RPC call (``xmlrpc.client`` marshalling, this transport's HTTP); its result."""
        import xmlrpc.client

        request = xmlrpc.client.dumps(params, method).encode()
        body = bytearray()
        headers = {"Content-Type": "text/xml"}
        with self._request("POST", url, self.limits.clock(), content=request, headers=headers) as answer:
            if answer.status_code != 200:
                raise FetchError(f"{self.peer} answered HTTP {answer.status_code}")
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_CALL_BYTES:
                    raise FetchError(f"answer larger than {MAX_CALL_BYTES} bytes")
        return xmlrpc.client.loads(bytes(body))[0][0]

    def _buffer(self) -> memoryview:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:  # page-aligned memory (an anonymous map), as direct writes need
            buffer = self._local.buffer = memoryview(mmap.mmap(-1, BUFFER_BYTES))
        return buffer

    def close(self) -> None:
        self.client.close()


def store_with(stream: Callable[[str, BlobWriting], object], url: str, writer: BlobWriting) -> int:
    """Stream ``url`` into ``writer`` and publish it (hash and size checked); returns the size.

    The writer is discarded whatever happens: a failed attempt leaves nothing behind.
    """
    try:
        stream(url, writer)
        writer.commit()
        return writer.size
    finally:
        writer.abort()


def stream_checked(stream: Callable[[str, BlobWriting], T], url: str, writer: BlobWriting) -> T:
    """``store_with`` without the publishing: the download processes make a message's blobs durable
    together (``worker_process.Unnamed``); returns ``stream``'s answer. The writer is discarded on any failure."""
    try:
        answer = stream(url, writer)
        writer.check()
    except BaseException:
        writer.abort()
        raise
    return answer
