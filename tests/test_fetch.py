"""``gitmirror.upstream.transport``: release files and pages over httpx, at the level of connections and framing.

The sync-level behaviour (retries, messages, nothing unverified stored) is covered against the fake
upstream in tests/test_upstream_faults.py and tests/test_hostile.py; here a scripted server on
127.0.0.1 shows what only the wire reveals: kept-alive connections are reused, one the server closed
meanwhile is replaced at once, an early close is a truncation, and redirect hops obey the host policy.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitmirror.model.hosts import HostPolicy
from gitmirror.storage.metadata import read_stored_wheel
from gitmirror.storage.store import BlobStore
from gitmirror.upstream import worker_process
from gitmirror.upstream.transport import MAX_REDIRECTS, FetchError, Transient, Transport

BODY = b"wheel bytes " * 1000

# path -> (raw answer, close the connection after it)
Script = Callable[[str], tuple[bytes, bool]]


def answer(status: str, body: bytes = b"", headers: str = "", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\n{headers}\r\n".encode() + body


class ScriptedServer:
    """Answers each request line with ``script(path)``; counts connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.hung_up = 0  # connections this server has closed
        self.paths: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        try:
            self._answer(client)
        finally:
            self.hung_up += 1

    def _answer(self, client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):  # a client that hangs up mid-answer ends it
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n")[0].split()[1].decode()
                self.paths.append(path)
                data, close = self.script(path)
                client.sendall(data)
                if close:
                    return

    def close(self) -> None:
        """Stop listening for real: a bare close() leaves a socket that a thread blocks in accept() on
        listening, and a later test's server bound to the same port then shares its connections."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def server_for() -> Iterator[Callable[[Script], ScriptedServer]]:
    started: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        started.append(ScriptedServer(script))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def fetcher_for() -> Iterator[Callable[..., Transport]]:
    """``fetcher_for(server, allowed_hosts=None)``: a fetcher whose upstream is ``server``, closed afterwards."""
    made: list[Transport] = []

    def make(server: ScriptedServer, allowed_hosts: tuple[str, ...] | None = None) -> Transport:
        made.append(Transport(HostPolicy(server.url + "/simple/", allowed_hosts), 5.0))
        return made[-1]

    yield make
    for fetcher in made:
        fetcher.close()


def fetch(server: ScriptedServer, store: BlobStore, fetcher: Transport, path: str = "/f.whl") -> bytes:
    digest = hashlib.sha256(BODY).hexdigest()
    with store.writer(digest, len(BODY)) as writer:
        fetcher.fetch(server.url + path, writer)
        return store.path(digest).read_bytes() if writer.commit() else b""


@pytest.mark.parametrize(
    ("server_closes", "connections"),
    [(False, 1), (True, 4)],
    ids=["kept-alive-and-reused", "closed-by-the-server-replaced-at-once"],
)
def test_connections_are_reused_or_replaced(
    server_for, fetcher_for, tmp_path: Path, server_closes: bool, connections: int
) -> None:
    """One connection for every file; when the server closes it after an answer without saying so,
    the next request reconnects at once instead of failing into the retry loop."""
    server = server_for(lambda path: (answer("200 OK", BODY), server_closes))
    fetcher = fetcher_for(server)
    store = BlobStore(tmp_path)
    for number in range(1, 5):
        assert fetch(server, store, fetcher) == BODY
        # the server's close reaches the client before its next request (on a loaded machine the
        # server's thread may close only after it: a request then meets the close, which is retried)
        deadline = time.monotonic() + 5
        while server_closes and server.hung_up < number and time.monotonic() < deadline:
            time.sleep(0.01)
    assert server.connections == connections and len(server.paths) == 4


def test_an_early_close_is_a_truncation_and_nothing_is_kept(server_for, fetcher_for, tmp_path: Path) -> None:
    server = server_for(lambda path: (answer("200 OK", BODY[:500], length=len(BODY)), True))
    fetcher = fetcher_for(server)
    store = BlobStore(tmp_path)
    with pytest.raises(Transient, match=r"truncated body \(500 of 12000 bytes\)"):
        fetch(server, store, fetcher)
    assert list(store) == [] and list(store.tmp_dir.iterdir()) == []


def test_retryable_statuses_carry_retry_after(server_for, fetcher_for, tmp_path: Path) -> None:
    server = server_for(lambda path: (answer("503 Service Unavailable", b"busy", "Retry-After: 7\r\n"), False))
    fetcher = fetcher_for(server)
    with pytest.raises(Transient) as raised:
        fetch(server, BlobStore(tmp_path), fetcher)
    assert raised.value.reason == "HTTP 503" and raised.value.retry_after == 7.0
    server404 = server_for(lambda path: (answer("404 Not Found", b"no"), False))
    with pytest.raises(FetchError, match="upstream answered HTTP 404"):
        fetch(server404, BlobStore(tmp_path), fetcher_for(server404))


def test_redirect_hops_obey_the_host_policy(server_for, fetcher_for, tmp_path: Path) -> None:
    elsewhere = server_for(lambda path: (answer("200 OK", BODY), False))

    def script(path: str) -> tuple[bytes, bool]:
        if path == "/moved.whl":
            return answer("302 Found", b"", "Location: /f.whl\r\n"), False
        if path == "/away.whl":
            return answer("302 Found", b"", f"Location: {elsewhere.url}/f.whl\r\n"), False
        if path == "/loop.whl":
            return answer("302 Found", b"", "Location: /loop.whl\r\n"), False
        return answer("200 OK", BODY), False

    server = server_for(script)
    fetcher = fetcher_for(server)
    store = BlobStore(tmp_path)
    assert fetch(server, store, fetcher, "/moved.whl") == BODY  # same origin: followed
    with pytest.raises(FetchError, match=rf"refusing '{elsewhere.url}/f.whl'"):
        fetch(server, store, fetcher, "/away.whl")  # another port on loopback: a classic SSRF target
    assert elsewhere.paths == []
    with pytest.raises(FetchError, match="too many redirects"):
        fetch(server, store, fetcher, "/loop.whl")
    assert server.paths.count("/loop.whl") == MAX_REDIRECTS + 1
    allowed = fetcher_for(server, (f"127.0.0.1:{elsewhere.port}",))
    assert fetch(server, store, allowed, "/away.whl") == BODY  # listed in allowed_hosts: followed


PAGE = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": []}).encode()


def test_pages_come_compressed_or_not_and_keep_their_headers(server_for, fetcher_for) -> None:
    """A large project's JSON page shrinks tenfold with gzip, so pages ask for it; the answer
    carries the URL after redirects (links are relative to it) and the headers, lower-cased."""

    def script(path: str) -> tuple[bytes, bool]:
        if path == "/simple/old-name/":
            return answer("301 Moved Permanently", b"", "Location: /simple/demo-pkg/\r\n"), False
        if path == "/simple/demo-pkg/":
            headers = 'Content-Encoding: gzip\r\nETag: "v1"\r\nContent-Type: application/vnd.pypi.simple.v1+json\r\n'
            return answer("200 OK", gzip.compress(PAGE), headers), False
        return answer("200 OK", PAGE, "Content-Type: application/vnd.pypi.simple.v1+json\r\n"), False

    server = server_for(script)
    fetcher = fetcher_for(server)
    plain = fetcher.get_page(server.url + "/simple/plain/", {}, 1 << 20)
    assert (plain.status, plain.body) == (200, PAGE)
    page = fetcher.get_page(server.url + "/simple/old-name/", {"If-None-Match": '"v0"'}, 1 << 20)
    assert (page.status, page.body, page.url) == (200, PAGE, server.url + "/simple/demo-pkg/")
    assert page.headers["etag"] == '"v1"' and page.charset is None
    assert server.connections == 1  # redirects and pages on the one kept-alive connection


def test_a_page_over_the_limit_is_refused_compressed_or_not(server_for, fetcher_for) -> None:
    """A gzip bomb (a few KiB that inflate to a gigabyte) is stopped at the limit, not in memory."""
    bomb = gzip.compress(b" " * (64 << 20))
    big = b"x" * 5000

    def script(path: str) -> tuple[bytes, bool]:
        if path == "/simple/bomb/":
            return answer("200 OK", bomb, "Content-Encoding: gzip\r\n"), False
        if path == "/simple/cut/":
            return answer("200 OK", PAGE[:10], length=len(PAGE)), True
        if path == "/simple/garbled/":
            return answer("200 OK", b"not gzip at all", "Content-Encoding: gzip\r\n"), False
        return answer("200 OK", big), False

    server = server_for(script)
    fetcher = fetcher_for(server)
    assert len(bomb) < 100_000
    with pytest.raises(FetchError, match="project page larger than 4096 bytes"):
        fetcher.get_page(server.url + "/simple/bomb/", {}, 4096)
    with pytest.raises(FetchError, match="project page larger than 4096 bytes"):
        fetcher.get_page(server.url + "/simple/big/", {}, 4096)
    with pytest.raises(Transient, match=r"truncated body \(10 of"):
        fetcher.get_page(server.url + "/simple/cut/", {}, 4096)
    with pytest.raises(Transient, match="undecodable compressed body"):
        fetcher.get_page(server.url + "/simple/garbled/", {}, 4096)
    assert fetcher.get_page(server.url + "/simple/big/", {}, 5000).body == big  # the limit itself is fine


def _wheel(padding: int) -> bytes:
    """A wheel with a METADATA and ``padding`` incompressible bytes beside it."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pad/blob.bin", os.urandom(padding), compress_type=zipfile.ZIP_STORED)
        archive.writestr(
            "demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: other>=2\n"
        )
    return data.getvalue()


@pytest.mark.parametrize(("padding", "in_memory"), [(10_000, True), (1_200_000, False)], ids=["small", "over-1-MiB"])
def test_a_wheels_metadata_is_read_from_the_bytes_just_verified(
    server_for, fetcher_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, padding: int, in_memory: bool
) -> None:
    """A wheel that fit in the fetcher's buffer is read there, not opened again from the store; a
    larger one from the store. Either way the same answer as reading the stored file."""
    wheel = _wheel(padding)
    server = server_for(lambda path: (answer("200 OK", wheel), False))
    fetcher = fetcher_for(server)
    store, digest = BlobStore(tmp_path), hashlib.sha256(wheel).hexdigest()
    with store.writer(digest, len(wheel)) as writer:
        body = fetcher.fetch(server.url + "/probe.whl", writer)
        assert (bytes(body) == wheel) if in_memory else body is None
    opened: list[str] = []
    monkeypatch.setattr(
        worker_process, "read_stored_wheel", lambda *args: opened.append(args[1]) or read_stored_wheel(*args)
    )
    unnamed = worker_process.Unnamed()
    stored, metadata = worker_process.store_wheel(
        fetcher, unnamed, str(tmp_path), server.url + "/demo.whl", digest, len(wheel), None
    )
    unnamed.publish()
    assert unnamed.take_failures() == {}
    assert stored == len(wheel) and store.path(digest).read_bytes() == wheel
    assert metadata == read_stored_wheel(store, digest, None) and metadata.metadata.requires_dist == ("other>=2",)
    assert opened == ([] if in_memory else [digest])
