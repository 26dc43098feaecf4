"""The one way gitmirror speaks HTTP to an upstream index or a hydrate source (httpcore).

Every request goes through a ``Transport``: TLS verified against the system trust store (one
``SSLContext`` per process, ``tls.system_trust``), the host policy checked on every request and
every redirect hop (``hosts.HostPolicy``, at most ``MAX_REDIRECTS``), proxies from the environment
(``http_proxy``, ``https_proxy``, ``all_proxy``, ``no_proxy``: ``urllib.request.getproxies``), the idle ``timeout`` on
every socket operation, and the bounds of ``limits.Limits``: a body past its announced size or its
kind's cap is refused, an attempt past its deadline (its head included) is ``Transient``.
Failures come out as two kinds: ``Transient`` (a retry may fix it; ``with_retries`` retries it,
honouring ``Retry-After``) and ``FetchError`` (it may not).

Why one module: downloads, pages, hydrate, the warm check and the changelog must agree on trust,
policy and failure words; each path having its own client is how they drifted apart. httpcore's
connection pools rather than httpx's client: these requests need none of what httpx adds (cookies,
auth, URL normalising, decoders but gzip), which costs a download process half again the CPU per file.
"""

from __future__ import annotations

import mmap
import random
import re
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..model.hosts import HostNotAllowed, HostPolicy, needs_credentials
from ..model.limits import Clock, DeadlineExceeded, Limits
from . import deadline
from .credentials import NetrcCredentials
from .tls import USER_AGENT, system_trust

if TYPE_CHECKING:
    import httpcore

    from ..model.page import PageAnswer
    from ..storage.blobs import BlobWriting

T = TypeVar("T")

MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
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
    import httpcore

    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    if isinstance(exc, httpcore.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(exc, zlib.error):
        return "undecodable compressed body"
    if isinstance(exc, httpcore.RemoteProtocolError) and (short := _SHORT_BODY.search(str(exc))):
        return f"truncated body ({short[1]} of {short[2]} bytes)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def oversize_error(message: str, announced: int | None) -> Exception:
    """A body past its announced size fails verification (as the store says); past a cap, the fetch."""
    from ..storage.store import IntegrityError

    return IntegrityError(message) if announced is not None else TooLarge(message)


_SHORT_BODY = re.compile(r"received (\d+) bytes, expected (\d+)")


@dataclass
class Answer:
    """An answer under way: its status, final URL, headers (lower-case names) and body as sent."""

    status: int
    url: str
    headers: dict[str, str]
    body: Iterable[bytes]


class Transport:
    """httpcore connection pools with gitmirror's rules, for the threads of one process (thread-safe).

    ``hosts``: where requests may go; ``timeout``: seconds per socket operation; ``limits``: bytes
    and deadlines of each attempt; ``connections``: connections kept per pool (one pool for direct
    requests, one per proxy); ``peer``: what failures call the other end ("upstream answered HTTP 404").
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
        import urllib.request

        self.hosts = hosts
        self.peer = peer  # how failures name the other end
        self.limits = limits or Limits()
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self._timeouts = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}
        self._connections = connections
        self._proxies = urllib.request.getproxies()
        self._pools: dict[str | None, httpcore.ConnectionPool] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._credentials = NetrcCredentials()

    def prepare(self, url: str) -> None:
        """Make the pool ``url`` goes through now (the HTTP client imported, its TLS context made), not
        on its first request."""
        self._pool(url)

    def _pool(self, url: str) -> httpcore.ConnectionPool:
        """The pool for ``url``: direct, or through the proxy the environment names for its scheme."""
        from urllib.parse import urlsplit
        from urllib.request import proxy_bypass

        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
        if proxy and proxy_bypass(parts.netloc):  # no_proxy
            proxy = None
        with self._lock:
            pool = self._pools.get(proxy)
            if pool is None:
                pool = self._pools[proxy] = self._new_pool(proxy)
        return pool

    def _new_pool(self, proxy: str | None) -> httpcore.ConnectionPool:
        """A pool whose every connection, direct or through a proxy, reads under the attempt's deadline."""
        from urllib.parse import unquote, urlsplit

        import httpcore

        options: dict[str, Any] = {
            "ssl_context": system_trust(),
            "max_connections": self._connections,
            "max_keepalive_connections": self._connections,
            "network_backend": deadline.backend()(),
        }
        if proxy is None:
            return httpcore.ConnectionPool(**options)
        if "://" not in proxy:
            proxy = "http://" + proxy
        parts = urlsplit(proxy)
        if parts.username is not None:
            options["proxy_auth"] = (unquote(parts.username), unquote(parts.password or ""))
            proxy = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        if parts.scheme.startswith("socks"):
            return httpcore.SOCKSProxy(proxy, **options)
        if parts.scheme == "https":  # TLS to the proxy itself: the same trust
            options["proxy_ssl_context"] = system_trust()
        return httpcore.HTTPProxy(proxy, **options)

    @contextmanager
    def _request(
        self,
        method: str,
        url: str,
        clock: Clock | None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        follow_redirects: bool = True,
    ) -> Iterator[Answer]:
        """A streamed answer under the rules; statuses worth a retry are raised as ``Transient``."""
        from urllib.parse import urljoin

        import httpcore

        fields = {**self._headers, **(headers or {})}
        deadline.attempt.clock, deadline.attempt.received = clock, 0
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                self.hosts.check(url)  # every hop: a redirect cannot lead past the policy
                with self._pool(url).stream(
                    method, _ascii(url), headers=self._with_credentials(url, fields), content=content,
                    extensions=self._timeouts,
                ) as response:  # fmt: skip
                    answered = {
                        key.decode("latin-1").lower(): value.decode("latin-1") for key, value in response.headers
                    }
                    if follow_redirects and response.status in REDIRECT_STATUSES and "location" in answered:
                        url = urljoin(url, answered["location"])
                        response.read()  # to its end: the connection stays for the next hop
                        if method == "POST" and response.status in (301, 302, 303):  # as browsers do
                            method, content = "GET", None
                        continue
                    if response.status in RETRY_STATUSES:
                        raise Transient(f"HTTP {response.status}", retry_after(answered.get("retry-after")))
                    yield Answer(response.status, url, answered, response.stream)  # type: ignore[arg-type]
                    return
            raise FetchError("too many redirects")
        except HostNotAllowed as exc:
            raise FetchError(str(exc)) from None
        except (httpcore.UnsupportedProtocol, httpcore.LocalProtocolError, UnicodeError) as exc:
            raise FetchError(f"invalid URL: {exc}") from None
        except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError, httpcore.ProxyError) as exc:
            raise Transient(describe(exc)) from None
        except (zlib.error, DeadlineExceeded) as exc:
            raise Transient(describe(exc)) from None
        finally:
            deadline.attempt.clock = None

    def _with_credentials(self, url: str, fields: dict[str, str]) -> list[tuple[str, str]]:
        """``fields`` and, where the netrc file names ``url``'s host, its basic credentials (each hop
        its own host's: a redirect elsewhere never carries them)."""
        if not self._credentials:  # no netrc file (the usual case): nothing to look up per request
            return list(fields.items())
        from urllib.parse import urlsplit

        header = self._credentials.header(urlsplit(url).hostname or "")
        return [*fields.items(), ("Authorization", header)] if header else list(fields.items())

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
            if response.status != 200:
                raise FetchError(f"{self.peer} answered HTTP {response.status}{needs_credentials(response.status)}")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise oversize_error(self.limits.too_large(url, announced, int(length)), announced)
            for chunk in response.body:  # as sent: a file is hashed as the index hashed it
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

        with self._request("GET", url, self.limits.clock(), headers={"Accept-Encoding": "gzip", **headers}) as answer:
            body = _decoded(answer, limit, f"{what} larger than {limit} bytes")
            return PageAnswer(answer.status, answer.url, answer.headers, body)

    def head(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Status and headers (lower-case names) of a ``HEAD`` of ``url``, redirects not followed."""
        with self._request("HEAD", url, self.limits.clock(), headers=headers, follow_redirects=False) as answer:
            return answer.status, answer.headers

    def call(self, url: str, method: str, *params: str | int) -> Any:
        """An XML-RPC call (``xmlrpc.client`` marshalling, this transport's HTTP); its result."""
        import xmlrpc.client

        request = xmlrpc.client.dumps(params, method).encode()
        headers = {"Content-Type": "text/xml"}
        with self._request("POST", url, self.limits.clock(), content=request, headers=headers) as answer:
            if answer.status != 200:
                raise FetchError(f"{self.peer} answered HTTP {answer.status}")
            body = _decoded(answer, MAX_CALL_BYTES, f"answer larger than {MAX_CALL_BYTES} bytes")
        return xmlrpc.client.loads(body)[0][0]

    def _buffer(self) -> memoryview:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:  # page-aligned memory (an anonymous map), as direct writes need
            buffer = self._local.buffer = memoryview(mmap.mmap(-1, BUFFER_BYTES))
        return buffer

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


def _ascii(url: str) -> str:
    """``url`` as httpcore takes it: characters beyond ASCII (or spaces) percent-encoded, as a browser would."""
    if url.isascii() and " " not in url:
        return url
    from urllib.parse import quote

    return quote(url, safe="!#$%&'()*+,/:;=?@[]~")


def _decoded(answer: Answer, limit: int, too_large: str) -> bytes:
    """``answer``'s body, gzip undone (the one compression asked for), refused past ``limit`` bytes as decoded."""
    encoding = answer.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise FetchError(f"{answer.url}: unsupported Content-Encoding {encoding!r}")
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16) if encoding != "identity" else None
    body = bytearray()
    for chunk in answer.body:
        # at most one byte past the limit is ever inflated: a bomb is stopped at the limit, not in memory
        body += inflate.decompress(chunk, limit + 1 - len(body)) if inflate else chunk
        if len(body) > limit:
            raise FetchError(too_large)
    if inflate:
        body += inflate.flush()
        if len(body) > limit:
            raise FetchError(too_large)
    return bytes(body)


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
