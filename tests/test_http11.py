"""``gitmirror.http11``: the download processes' HTTP/1.1, byte for byte on the wire.

Each answer is written whole into one end of a socket pair before the request is sent from the
other, so every case is exact and needs no server thread; ``_RECEIVE`` at 1 byte makes the reader
meet every boundary (a line, a chunk, the head's end) in the middle of a read. The sync-level
behaviour over a real server is in tests/test_fetch.py and tests/test_upstream_faults.py; TLS, with
a certificate made for 127.0.0.1, at the end of this file.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitmirror import http11
from gitmirror.fetch import FileFetcher, Transient
from gitmirror.hosts import HostPolicy
from gitmirror.store import BlobStore


@pytest.fixture(params=[65536, 1], ids=["whole-reads", "byte-by-byte"])
def pair(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[http11.Connection, socket.socket]]:
    """(a connection, the server's end of it)."""
    monkeypatch.setattr(http11, "_RECEIVE", request.param)
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    with ours, theirs:
        yield http11.Connection(ours, "upstream.test:8080"), theirs


def body_of(response: http11.Response, size: int = 7) -> bytes:
    """The whole body, read through a small buffer (several ``readinto`` calls per chunk)."""
    data, buffer = b"", memoryview(bytearray(size))
    while count := response.readinto(buffer):
        data += buffer[:count]
    return data


def request_seen(theirs: socket.socket) -> bytes:
    theirs.settimeout(5)
    return theirs.recv(65536)


def test_a_request_is_one_get_with_its_headers(pair) -> None:
    connection, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    response = connection.get("/p/x.whl?a=1", {"User-Agent": "gitmirror/1", "Accept": "a/b, c/d;q=0.1"})
    assert request_seen(theirs) == (
        b"GET /p/x.whl?a=1 HTTP/1.1\r\nHost: upstream.test:8080\r\nUser-Agent: gitmirror/1\r\n"
        b"Accept: a/b, c/d;q=0.1\r\n\r\n"
    )
    assert (response.status, body_of(response), response.done, connection.reusable) == (200, b"ok", True, True)


@pytest.mark.parametrize(
    "target", ["/a b", "/a\r\nX-Injected: 1", "/caf\u00e9", "/a\x00"], ids=["space", "crlf", "non-ascii", "nul"]
)
def test_what_would_not_stay_one_word_is_never_sent(pair, target: str) -> None:
    connection, theirs = pair
    with pytest.raises(http11.Unsendable):
        connection.get(target, {})
    with pytest.raises(http11.Unsendable):
        connection.get("/ok", {"User-Agent": "x\r\nX-Injected: 1"})
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing reached the server
        theirs.recv(1)


def test_answers_follow_each_other_on_one_connection(pair) -> None:
    """Content-Length, then chunked with an extension and a trailer, then an empty 204: all on one
    connection, each read to its end; folded and repeated header lines read as RFC 9110 says."""
    connection, theirs = pair
    theirs.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Twice: a\r\nx-twice: b\r\nX-Folded: one\r\n  two\r\n\r\n"
        b"0123456789"
    )
    first = connection.get("/1", {})
    assert first.headers["x-twice"] == "a, b" and first.getheader("X-Folded") == "one two"
    assert body_of(first) == b"0123456789" and connection.reusable
    theirs.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;name=value\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    second = connection.get("/2", {})
    assert body_of(second) == b"Wikipedia in \r\n\r\nchunks." and second.done and connection.reusable
    theirs.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    third = connection.get("/3", {})
    assert (third.status, body_of(third), connection.reusable, connection.answered) == (204, b"", True, 3)


def test_a_head_at_its_limits_is_read(pair) -> None:
    """A hundred header lines (``http.client``'s limit, not one more: see the protocol errors),
    bare LF line endings, a line of carriage returns alone ending the head; the body after it
    untouched."""
    connection, theirs = pair
    many = b"".join(b"X-Header-%d: %d\r\n" % (number, number) for number in range(99))
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + many + b"\r\n\nbody")
    response = connection.get("/", {})
    assert len(response.headers) == 100 and response.headers["x-header-98"] == "98"
    assert body_of(response) == b"\nbody"  # "\r\n" ended the head: the next "\n" is the body's
    theirs.sendall(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A:  a \r\r\n\r\r\nok")
    response = connection.get("/", {})
    assert (response.headers["x-a"], body_of(response), connection.reusable) == ("a", b"ok", True)


def test_a_head_read_whole_reads_as_line_by_line(pair) -> None:
    """The fields of a head received in one read (parsed at once) and byte by byte (line by line):
    names in lower case, values without the blanks around them, colons and blanks inside kept,
    empty values, carriage returns only at a line's end; then one line that is not a plain field
    (a tab inside a value's end, a carriage return inside one) sends the whole head line by line."""
    connection, theirs = pair
    theirs.sendall(
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nLocation:http://h:8/a b?c=d\r\nX-Empty:\r\n"
        b"X-Blank: \t \r\nETag: \"6f-5\"\r\nContent-Length:\t5 \r\r\nAccept-Ranges: bytes\r\n\r\nhello"
    )
    response = connection.get("/", {})
    assert response.headers == {
        "server": "nginx/1.22.1", "location": "http://h:8/a b?c=d", "x-empty": "", "x-blank": "",
        "etag": '"6f-5"', "content-length": "5", "accept-ranges": "bytes",
    }
    assert body_of(response) == b"hello" and connection.reusable
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Odd: a\rb \t\r\n\r\nok")
    response = connection.get("/", {})
    assert response.headers == {"content-length": "2", "x-odd": "a\rb"} and body_of(response) == b"ok"


def test_a_head_without_a_status_line_is_refused(pair) -> None:
    connection, theirs = pair
    theirs.sendall(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(http11.ProtocolError, match="status line"):
        connection.get("/", {})


def test_informational_answers_are_skipped(pair) -> None:
    connection, theirs = pair
    theirs.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
    response = connection.get("/", {})
    assert (response.status, body_of(response), "link" in response.headers) == (200, b"yes", False)


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: Keep-Alive\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", True),
    ],
    ids=["close", "http-1.0", "http-1.0-keep-alive", "http-1.1"],
)
def test_the_connection_is_kept_only_where_the_server_keeps_it(pair, head: bytes, reusable: bool) -> None:
    connection, theirs = pair
    theirs.sendall(head + b"data")
    assert body_of(connection.get("/", {})) == b"data" and connection.reusable is reusable


def test_a_body_without_length_ends_with_the_connection(pair) -> None:
    connection, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\n\r\nall of it, until the end")
    response = connection.get("/", {})
    theirs.shutdown(socket.SHUT_WR)
    assert body_of(response) == b"all of it, until the end" and not connection.reusable


def test_bytes_received_past_the_answer_make_the_connection_unusable() -> None:
    """Read with the head in one piece (a server that answers more than it was asked)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
        connection = http11.Connection(ours, "h")
        assert body_of(connection.get("/", {})) == b"ok" and not connection.reusable


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", "truncated body (5 of 10 bytes)"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n01234", "truncated body (5 bytes)"),
    ],
    ids=["content-length", "chunked"],
)
def test_an_early_end_is_a_truncation(pair, answer: bytes, message: str) -> None:
    connection, theirs = pair
    theirs.sendall(answer)
    response = connection.get("/", {})
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(http11.Truncated, match=message.replace("(", r"\(").replace(")", r"\)")):
        body_of(response)


@pytest.mark.parametrize(
    "answer",
    [
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        "HTTP/1.1 \u00b200 OK\r\n\r\n".encode("latin-1"),
        "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"),
        b"HTTP/1.1 100 Continue\r\n\r\n" * 21 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["not-http", "status-of-four-digits", "header-without-colon", "space-in-name", "two-lengths",
         "negative-length", "101-headers", "line-over-64k", "chunk-size-not-hex", "chunk-without-crlf",
         "status-of-non-ascii-digits", "length-of-non-ascii-digits", "21-informational-answers"],
)
def test_what_cannot_be_framed_is_a_protocol_error(pair, answer: bytes) -> None:
    connection, theirs = pair
    threading.Thread(target=theirs.sendall, args=(answer,), daemon=True).start()  # more than a socket buffer
    with pytest.raises(http11.ProtocolError):
        body_of(connection.get("/", {}))


def test_a_kept_alive_connection_closed_meanwhile_is_told_apart(pair) -> None:
    """Closed before any byte of a second answer: the server timed the connection out, so a new
    one may be tried at once; closed in the middle of the first answer's head: an error."""
    connection, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert body_of(connection.get("/", {})) == b""
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(http11.ClosedBeforeAnswer):
        connection.get("/", {})
    fresh, server_end = socket.socketpair()
    with fresh, server_end:
        server_end.sendall(b"HTTP/1.1 200 OK\r\nContent-")
        server_end.shutdown(socket.SHUT_WR)
        with pytest.raises(http11.ProtocolError) as raised:
            http11.Connection(fresh, "h").get("/", {})
        assert not isinstance(raised.value, http11.ClosedBeforeAnswer)


def test_a_silent_server_times_out(pair) -> None:
    connection, _theirs = pair
    connection._sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        connection.get("/", {})


# -- TLS ------------------------------------------------------------------------------------------


class FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"a wheel over TLS " * 5000

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_files(localhost_certificate: tuple[Path, Path]) -> Iterator[str]:
    """An https server on 127.0.0.1 with a certificate made for it; yields its origin."""
    cert, key = localhost_certificate
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_files_come_over_verified_tls(tls_files: str, localhost_certificate, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Trusted through ``SSL_CERT_FILE`` the file arrives, twice on one connection; with the system's
    trust alone the certificate is refused, and nothing is stored."""
    store, digest = BlobStore(tmp_path), hashlib.sha256(FileHandler.body).hexdigest()
    policy = HostPolicy(tls_files + "/simple/")
    monkeypatch.setenv("SSL_CERT_FILE", str(localhost_certificate[0]))
    fetcher = FileFetcher(policy, 5.0, "test")
    for _ in range(2):
        with store.writer(digest, len(FileHandler.body)) as writer:
            fetcher.fetch(tls_files + "/packages/x.whl", writer)
            writer.commit()
    assert store.path(digest).read_bytes() == FileHandler.body and len(fetcher._open) == 1
    fetcher.close()
    monkeypatch.delenv("SSL_CERT_FILE")
    untrusting = FileFetcher(policy, 5.0, "test")
    other = hashlib.sha256(b"other").hexdigest()
    with store.writer(other, None) as writer, pytest.raises(Transient, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.fetch(tls_files + "/packages/x.whl", writer)
    assert not store.has(other)
