"""HTTP/1.1 GETs on kept-alive connections, for the download processes: the framing
``http.client`` gave them, without what it cost per answer.

A cold sync is thousands of GETs, most of them for small files. Request and answer of a small
file cost 165 us of CPU through ``http.client`` (a request built header by header, a
``socket.makefile`` reader per answer, the headers parsed by the ``email`` package), 60 us here,
33 us as bare socket calls with no checks at all (bench/RESULTS.md, item 45).

This speaks what a mirror's downloads need and no more: ``GET`` with fixed headers; an answer's
status line and headers read with the limits ``http.client`` sets; ``1xx`` answers skipped; bodies
framed by ``Content-Length``, by ``chunked`` (the last transfer coding) or by the connection's end;
``Connection: close`` and HTTP/1.0 honoured. What it cannot frame is a ``ProtocolError``; a body the
connection ends early is ``Truncated``; a kept-alive connection the server closed before answering
is ``ClosedBeforeAnswer`` (worth one more try on a new connection). Socket failures and timeouts
stay ``OSError``; an answer still arriving past its request's deadline (``limits.Clock``: every
read checks it, so a trickle cannot hold a connection) is ``limits.DeadlineExceeded``. A redirect,
a status or a body's meaning is the caller's (``fetch.FileFetcher``).
"""

from __future__ import annotations

import math
import re
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    from .limits import Clock, DeadlineExceeded

MAX_LINE = 65536  # bytes in one line of an answer's head, as http.client
MAX_HEADERS = 100  # header lines in an answer, as http.client
MAX_INFORMATIONAL = 20  # 1xx answers before the real one: a server cannot stall a download with them
_RECEIVE = 65536
_TARGET = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: one word of the request line
_VALUE = re.compile(r"[\x20-\x7e\t]*")  # a header value: no line break, nothing but ASCII
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110)
_HEAD_END = re.compile(rb"\n\r*\n")  # a line ending, then an empty line (carriage returns alone)
# one plain field line: a name, its value without the blanks around it, the line's carriage returns
# (greedy: a lazy value tried the line's end at each of its characters, three times as slow)
_FIELD_LINE = re.compile(rf"^({_TOKEN.pattern}):[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*\r*$", re.MULTILINE)


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this module can frame."""


class Unsendable(ValueError):
    """A request target or header value that would not be one word or one line of the request."""


class Truncated(ProtocolError):
    """The connection ended before the body did."""

    def __init__(self, received: int, expected: int | None) -> None:
        of = f" of {expected}" if expected is not None else ""
        super().__init__(f"truncated body ({received}{of} bytes)")


class ClosedBeforeAnswer(ProtocolError):
    """A kept-alive connection ended before any byte of the answer: the server closed it meanwhile."""


class Connection:
    """One connection to one origin; a request at a time, each answer read to its end before the next."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self._sock = sock
        self._host = host  # the Host header: name, and port where it is not the scheme's
        self._pending = bytearray()  # received, not read yet
        self.answered = 0
        self._kept = True  # the server has not ended the connection's use, nor have we
        self._answering = False  # an answer's body is not read to its end yet
        self._clock: Clock | None = None  # the current request's deadline
        self._due = math.inf  # its time.monotonic(), later by each body byte received
        self._per_byte = 0.0

    @property
    def reusable(self) -> bool:
        """Whether the next request may be sent here: the last answer is read to its end, and
        neither side ended the connection's use."""
        return self._kept and not self._answering

    def get(self, target: str, headers: dict[str, str], clock: Clock | None = None) -> Response:
        """Send ``GET target`` and read the answer's head; the body is the ``Response``'s to read.

        ``clock``: the deadline of the answer's head and body (none: the socket's timeout alone).
        """
        self._clock = clock
        self._due, self._per_byte = (clock.end, clock.per_byte) if clock is not None else (math.inf, 0.0)
        if not _TARGET.fullmatch(target) or not all(map(_VALUE.fullmatch, headers.values())):
            raise Unsendable(f"cannot send a request for {target[:200]!r}")
        lines = [f"GET {target} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        for _count in range(MAX_INFORMATIONAL + 1):
            version, status, fields = self._head()
            if not 100 <= status < 200:
                self.answered += 1
                self._answering = True
                return Response(self, version, status, fields)
        raise ProtocolError(f"more than {MAX_INFORMATIONAL} informational answers")

    def close(self) -> None:
        self._kept = False
        self._sock.close()

    def _head(self) -> tuple[str, int, dict[str, str]]:
        """Status line and headers (names in lower case, repeated fields joined by ", ").

        A head received whole with its answer's first read, in plain field lines, is parsed in one
        piece (``_whole_head``): a small file's request and head took 15-22 us line by line, 11-15 us
        so, and cold syncs 3 % less time (bench/RESULTS.md, item 60). Any other head (one still
        arriving, a folded or repeated field, a line that is not a field, one near a limit) is read
        line by line, where every rule is checked.
        """
        if not self._pending:
            self._in_time()
            received = self._sock.recv(_RECEIVE)
            if not received:
                raise self._ended(first=True)
            self._pending += received
        whole = self._whole_head()
        return whole if whole is not None else self._head_by_lines()

    def _whole_head(self) -> tuple[str, int, dict[str, str]] | None:
        """The head parsed at once and taken from what was received, or None (nothing taken)."""
        end = _HEAD_END.search(self._pending)
        if end is None or end.start() >= MAX_LINE:
            return None
        text = self._pending[: end.start() + 1].decode("latin-1")
        status_line, _, block = text.partition("\n")
        status = _status(status_line.rstrip("\r"))
        if status is None:
            return None
        lines = block.count("\n")
        pairs = _FIELD_LINE.findall(block)
        if len(pairs) != lines or lines > MAX_HEADERS:
            return None
        fields = {name.lower(): value for name, value in pairs}
        if len(fields) != lines:  # a repeated field: its values are joined line by line
            return None
        del self._pending[: end.end()]
        return *status, fields

    def _head_by_lines(self) -> tuple[str, int, dict[str, str]]:
        status_line = self._line(first=True)
        status = _status(status_line)
        if status is None:
            raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        version, code = status
        fields: dict[str, str] = {}
        name = ""
        for _count in range(MAX_HEADERS + 1):
            line = self._line()
            if not line:
                return version, code, fields
            if line[0] in " \t" and name:  # an obsolete continuation of the field before
                fields[name] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                raise ProtocolError(f"not a header line: {line[:80]!r}")
            name, value = name.lower(), value.strip(" \t")
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        raise ProtocolError(f"more than {MAX_HEADERS} header lines")

    def _line(self, first: bool = False) -> str:
        """One line of the head or of chunked framing, without its line ending."""
        while (end := self._pending.find(b"\n")) < 0:
            if len(self._pending) > MAX_LINE:
                raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
            self._in_time()
            received = self._sock.recv(_RECEIVE)
            if not received:
                raise self._ended(first)
            self._pending += received
        if end > MAX_LINE:
            raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
        line = self._pending[:end].rstrip(b"\r").decode("latin-1")
        del self._pending[: end + 1]
        return line

    def _ended(self, first: bool) -> ProtocolError:
        """What the connection's end means while a head (``first``: its first line) is read."""
        if first and not self._pending and self.answered:
            return ClosedBeforeAnswer("connection closed by upstream")
        return ProtocolError("connection closed in the middle of an answer's head")

    def _line_ending(self) -> None:
        """The CRLF (or bare LF) that must end a chunk's data."""
        while len(self._pending) < 2 and self._pending[:1] != b"\n":
            self._in_time()
            received = self._sock.recv(_RECEIVE)
            if not received:
                raise ProtocolError("connection closed in the middle of chunked framing")
            self._pending += received
        ending = 1 if self._pending[:1] == b"\n" else 2
        if self._pending[:ending] not in (b"\n", b"\r\n"):
            raise ProtocolError("a chunk not followed by its line ending")
        del self._pending[:ending]

    def _read_into(self, buffer: memoryview) -> int:
        """Bytes into ``buffer``: first what was received with the head, then from the socket."""
        if self._pending:
            count = min(len(buffer), len(self._pending))
            buffer[:count] = self._pending[:count]
            del self._pending[:count]
            return count
        if time.monotonic() > self._due:
            raise self._late()
        count = self._sock.recv_into(buffer)
        self._due += count * self._per_byte
        return count

    def _in_time(self) -> None:
        """Before a read of the head or of chunked framing: raise once the request's deadline has passed."""
        if time.monotonic() > self._due:
            raise self._late()

    def _late(self) -> DeadlineExceeded:
        assert self._clock is not None  # (no clock: the end is never reached)
        return self._clock.exceeded()

    def _finished(self, keep: bool) -> None:
        """The answer's body is read: the next request may follow on this connection if ``keep``."""
        self._answering = False
        if not keep or self._pending:  # bytes past the answer's end: nothing to trust them with
            self._kept = False


class Response:
    """An answer whose head is read; ``readinto`` its body to the end before the next request."""

    def __init__(self, connection: Connection, version: str, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self.received = 0
        self._connection = connection
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        self._keep = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
        self._chunked = False
        self._left: int | None = None  # of the body (or of the current chunk); None: until the connection ends
        self._expected: int | None = None
        coding = headers.get("transfer-encoding")
        if status in (204, 304):
            self._left = 0
        elif coding is not None:
            self._chunked = coding.rpartition(",")[2].strip().lower() == "chunked"
            self._left = 0 if self._chunked else None
        elif "content-length" in headers:
            lengths = {value.strip() for value in headers["content-length"].split(",")}
            length = lengths.pop() if len(lengths) == 1 else ""
            if not _DIGITS.fullmatch(length):  # (str.isdigit() also takes "²", which int() refuses)
                raise ProtocolError(f"bad Content-Length: {headers['content-length'][:40]!r}")
            self._left = self._expected = int(length)
        self.done = False
        if self._left is None:
            self._keep = False
        if self._left == 0 and not self._chunked:
            self._end()

    @property
    def length(self) -> int | None:
        """The body's length as ``Content-Length`` announces it (None: framed otherwise)."""
        return self._expected

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def readinto(self, buffer: memoryview) -> int:
        """Body bytes into ``buffer`` (any amount); 0 once the body has ended."""
        if self.done:
            return 0
        if self._chunked and self._left == 0 and not self._next_chunk():
            return 0
        if self._left is not None:
            buffer = buffer[: self._left]
        count = self._connection._read_into(buffer)
        if not count:
            if self._left is None:  # the connection's end is the body's
                self._end()
                return 0
            raise Truncated(self.received, self._expected)
        self.received += count
        if self._left is not None:
            self._left -= count
            if not self._left and not self._chunked:
                self._end()
        return count

    def read(self, limit: int) -> bytes:
        """The body, or its first ``limit + 1`` bytes when it is longer (the caller refuses it)."""
        body = bytearray()
        buffer = memoryview(bytearray(_RECEIVE))
        while len(body) <= limit and (count := self.readinto(buffer)):
            body += buffer[:count]
        return bytes(body[: limit + 1])

    def _next_chunk(self) -> bool:
        """Read the next chunk's size line (and the line ending before it); False at the last chunk."""
        if self.received:
            self._connection._line_ending()
        size = self._connection._line().partition(";")[0].strip(" \t")
        if not _HEX.fullmatch(size):
            raise ProtocolError(f"bad chunk size line: {size[:40]!r}")
        self._left = int(size, 16)
        if self._left:
            return True
        for _count in range(MAX_HEADERS + 1):  # the trailer section, up to its empty line
            if not self._connection._line():
                self._end()
                return False
        raise ProtocolError(f"more than {MAX_HEADERS} trailer lines")

    def _end(self) -> None:
        self.done = True
        self._connection._finished(self._keep)


def _status(line: str) -> tuple[str, int] | None:
    """A status line's HTTP version and status code, or None where it is not one."""
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not _DIGITS.fullmatch(code) or rest[3:4] not in ("", " "):
        return None
    return version, int(code)


def connect(scheme: str, host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> Connection:
    """A connection to ``scheme://host:port`` (TLS verified against ``context``); ``timeout`` bounds
    every socket operation."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            assert context is not None
            sock = context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    default = 443 if scheme == "https" else 80
    name = f"[{host}]" if ":" in host else host
    return Connection(sock, name if port == default else f"{name}:{port}")
