"""Project pages on the wire: the tip's page is the snapshot's page of the same commit, byte for byte.

``/simple/<name>/`` and ``/snapshot/<commit>/simple/<name>/`` read the same commit, so they must
answer the same status, headers and body (only Cache-Control differs by design, and ``date`` may
tick between the two), for GET and HEAD, every Accept form, 304s, keep-alive, pipelining and
HTTP/1.0. Raw sockets are used wherever the wire format matters.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from gitmirror.serve.server import IMMUTABLE, TIP_MAX_AGE

from conftest import Mirror, RunningServer
from presynced import sample_site

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
LATEST_JSON, LATEST_HTML = "application/vnd.pypi.simple.latest+json", "application/vnd.pypi.simple.latest+html"
ACCEPTS = [JSON, HTML, "text/html", f"{HTML}, {JSON};q=0.5", None, LATEST_JSON, f"{LATEST_HTML}, {LATEST_JSON};q=0.5"]


@dataclass
class Answer:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    def comparable(self) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        """Everything but ``date`` (it ticks) and ``cache-control`` (tip and snapshot differ on purpose)."""
        return self.status_line, [(k, v) for k, v in self.headers if k not in (b"date", b"cache-control")], self.body


class Connection:
    """One TCP connection to the server: send raw bytes, read answers one by one, see whether it closed."""

    def __init__(self, server: RunningServer) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self, method: str = "GET") -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before a full answer: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.split(b"\r\n")
        headers = [tuple(line.split(b": ", 1)) for line in lines]
        answer = Answer(status_line, headers, b"")  # type: ignore[arg-type]
        assert answer.header(b"transfer-encoding") is None
        length = 0 if method == "HEAD" or answer.status == 304 else int(answer.header(b"content-length") or 0)
        while len(self.buffer) < length:
            assert self._fill(), "connection closed inside a body"
        answer.body, self.buffer = self.buffer[:length], self.buffer[length:]
        return answer

    def closed_by_server(self) -> bool:
        """True when the server closes the connection with nothing more to read."""
        self.sock.settimeout(5)
        try:
            return not self._fill() and not self.buffer
        except TimeoutError:
            return False


def request(path: str, accept: str | None = None, method: str = "GET", version: str = "1.1", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    if accept is not None:
        lines.append(f"Accept: {accept}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def fetch(server: RunningServer, data: bytes, method: str = "GET") -> Answer:
    """One answer; on a kept-alive connection, also checks that no stray bytes follow it (a body after HEAD)."""
    with Connection(server) as connection:
        connection.send(data)
        answer = connection.answer(method)
        if answer.header(b"connection") != b"close":
            connection.send(request("/simple/"))
            assert connection.answer().status_line == b"HTTP/1.1 200 OK"
            assert connection.buffer == b""
        return answer


@pytest.fixture
def served(mirror: Mirror, sample, serve) -> tuple[RunningServer, str]:
    """A running ``gitmirror serve`` and the commit id of its tip, for a test that syncs again."""
    mirror.run("sync", check=True)
    return serve(), mirror.git("rev-parse", "main").strip()


@pytest.fixture(scope="module")
def served_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """``served`` shared by the tests that only read it (``presynced.sample_site``)."""
    with sample_site(tmp_path_factory.mktemp("wire") / "site") as (mirror, server, _sample):
        yield server, mirror.git("rev-parse", "main").strip()


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_tip_page_is_the_snapshot_page(served_once, accept: str | None, method: str) -> None:
    server, commit = served_once
    tip = fetch(server, request("/simple/demo-pkg/", accept, method), method)
    routed = fetch(server, request(f"/snapshot/{commit}/simple/demo-pkg/", accept, method), method)
    assert tip.status == 200 and tip.comparable() == routed.comparable()
    assert [name for name, _ in tip.headers] == [name for name, _ in routed.headers]
    assert tip.header(b"cache-control") == TIP_MAX_AGE.encode()
    assert routed.header(b"cache-control") == IMMUTABLE.encode()
    assert tip.header(b"server") == b"uvicorn" and tip.header(b"date").endswith(b" GMT")
    assert (tip.body == b"") == (method == "HEAD")
    assert int(tip.header(b"content-length")) == len(fetch(server, request("/simple/demo-pkg/", accept)).body)


def test_if_none_match_answers_304_at_the_tip_and_in_snapshots(served_once) -> None:
    server, commit = served_once
    etag = fetch(server, request("/simple/demo-pkg/", JSON)).header(b"etag").decode()
    for method in ("GET", "HEAD"):
        tip = fetch(server, request("/simple/demo-pkg/", JSON, method, If_None_Match=etag), method)
        routed = fetch(server, request(f"/snapshot/{commit}/simple/demo-pkg/", JSON, method, If_None_Match=etag))
        assert tip.status == 304 and tip.body == b"" and tip.comparable() == routed.comparable()
        assert tip.header(b"content-length") is None and tip.header(b"etag") == etag.encode()
    other = fetch(server, request("/simple/demo-pkg/", JSON, If_None_Match='"something-else"'))
    assert other.status == 200 and other.body
    url = f"{server.url}/simple/demo-pkg/"
    assert httpx.get(url, headers={"Accept": JSON, "If-None-Match": etag}).status_code == 304
    assert httpx.get(url, headers={"Accept": HTML}).headers["etag"] != etag  # one tag per representation
    assert httpx.get(url, headers={"Accept": HTML, "If-None-Match": etag}).status_code == 200


def test_repeated_headers_count_once(served_once) -> None:
    server, commit = served_once
    for path in ("/simple/demo-pkg/", f"/snapshot/{commit}/simple/demo-pkg/"):
        data = request(path, JSON)[:-2] + f"Accept: {HTML}\r\nIf-None-Match: x\r\nIf-None-Match: y\r\n\r\n".encode()
        answer = fetch(server, data)
        assert answer.status == 200 and answer.header(b"content-type") == JSON.encode()
        if path.startswith("/simple/"):
            tip = answer
    assert tip.comparable() == answer.comparable()


def test_keep_alive_serves_every_kind_of_request_in_turn(served_once) -> None:
    server, commit = served_once
    asks = [
        ("/simple/demo-pkg/", 200),
        ("/simple/Demo_Pkg/", 301),
        ("/simple/other-lib/", 200),
        ("/simple/nope/", 404),
        (f"/snapshot/{commit}/simple/demo-pkg/", 200),
        ("/simple/demo-pkg/", 200),
        ("/files/demo-pkg/x.whl", 404),
        ("/simple/demo-pkg/", 200),
    ]
    with Connection(server) as connection:
        for path, status in asks:
            connection.send(request(path, JSON))
            answer = connection.answer()
            assert answer.status == status, path
            assert answer.header(b"connection") is None
    first, *others = [fetch(server, request("/simple/demo-pkg/", JSON)) for _ in range(3)]
    assert all(other.comparable() == first.comparable() for other in others)


def test_pipelined_requests_are_answered_in_order(served_once) -> None:
    server, commit = served_once
    paths = [
        "/simple/demo-pkg/",
        f"/snapshot/{commit}/simple/other-lib/",
        "/simple/other-lib/",
        "/simple/Other_Lib/",
        "/simple/demo-pkg/",
        "/simple/nope/",
        "/simple/other-lib/",
        "/simple/",
    ]
    expected = [fetch(server, request(path, JSON)) for path in paths]
    with Connection(server) as connection:
        connection.send(b"".join(request(path, JSON) for path in paths))  # one write
        answers = [connection.answer() for _ in paths]
    for path, got, alone in zip(paths, answers, expected, strict=True):
        assert got.comparable() == alone.comparable(), path
    assert [a.status for a in answers] == [200, 200, 200, 301, 200, 404, 200, 200]
    assert b'"name":"other-lib"' in answers[2].body and b'"name":"demo-pkg"' in answers[4].body


def test_connection_close_and_http_10_close_after_the_answer(served_once) -> None:
    server, commit = served_once
    for data in (
        request("/simple/demo-pkg/", JSON, Connection="close"),
        request("/simple/demo-pkg/", JSON, version="1.0"),
        request("/simple/demo-pkg/", JSON, version="1.0", Connection="keep-alive"),  # uvicorn closes 1.0 anyway
    ):
        with Connection(server) as connection:
            connection.send(data)
            answer = connection.answer()
            assert answer.status == 200 and answer.header(b"connection") == b"close"
            assert answer.status_line == b"HTTP/1.1 200 OK"
            assert connection.closed_by_server()
        routed = fetch(server, data.replace(b"/simple/", f"/snapshot/{commit}/simple/".encode(), 1))
        assert answer.comparable() == routed.comparable()


def test_names_methods_queries_and_bodies(served_once) -> None:
    server, _commit = served_once
    redirect = httpx.get(f"{server.url}/simple/Other_Lib/")
    assert redirect.status_code == 301 and redirect.headers["location"] == "/simple/other-lib/"
    assert httpx.get(f"{server.url}/simple/other-lib").headers["location"] == "/simple/other-lib/"
    assert httpx.get(f"{server.url}/simple/nope/").status_code == 404
    assert httpx.get(f"{server.url}/simple/other%2Dlib/").status_code in (200, 301)
    assert httpx.get(f"{server.url}/simple/other-lib/", headers={"Accept": "image/png"}).status_code == 406
    assert httpx.post(f"{server.url}/simple/other-lib/").status_code == 405
    with_query = httpx.get(f"{server.url}/simple/other-lib/?x=1", headers={"Accept": JSON})
    plain = httpx.get(f"{server.url}/simple/other-lib/", headers={"Accept": JSON})
    assert with_query.content == plain.content and with_query.headers["etag"] == plain.headers["etag"]
    body = fetch(server, request("/simple/other-lib/", JSON, Content_Length="5") + b"hello")
    assert body.status == 200 and body.body == plain.content  # a body on GET is read and dropped


def test_a_new_sync_is_served_at_once(mirror: Mirror, served, upstream) -> None:
    from fakeupstream import build_wheel

    server, _commit = served
    url = f"{server.url}/simple/other-lib/"
    with Connection(server) as connection:
        connection.send(request("/simple/other-lib/", JSON))
        before = connection.answer()
        upstream.add("other_lib", build_wheel("other_lib", "0.3"))
        mirror.run("sync", check=True)
        connection.send(request("/simple/other-lib/", JSON))  # same connection, same server process
        after = connection.answer()
    assert b'"0.3"' not in before.body and b'"0.3"' in after.body
    assert after.header(b"etag") != before.header(b"etag")
    stale = before.header(b"etag").decode()
    assert httpx.get(url, headers={"Accept": JSON, "If-None-Match": stale}).status_code == 200
    assert "0.3" in httpx.get(url, headers={"Accept": JSON}).json()["versions"]
    html = httpx.get(url, headers={"Accept": HTML}).text
    assert "other_lib-0.3-py3-none-any.whl" in html


def test_the_tip_is_followed_into_packed_refs_and_back(mirror: Mirror, served, upstream) -> None:
    """The server stats only the loose ref while it exists; packing it (git gc) must not lose the branch."""
    from fakeupstream import build_wheel

    server, commit = served
    before = fetch(server, request("/simple/other-lib/", JSON))
    mirror.git("pack-refs", "--all")
    assert not (mirror.repo / "refs" / "heads" / "main").exists()
    assert commit in (mirror.repo / "packed-refs").read_text()
    packed = fetch(server, request("/simple/other-lib/", JSON))
    assert packed.status == 200 and packed.body == before.body
    upstream.add("other_lib", build_wheel("other_lib", "0.3"))
    mirror.run("sync", check=True)  # writes a loose ref again, which wins over packed-refs
    assert (mirror.repo / "refs" / "heads" / "main").exists()
    after = fetch(server, request("/simple/other-lib/", JSON))
    assert b'"0.3"' in after.body and after.header(b"etag") != before.header(b"etag")


def test_a_sync_renders_again_only_the_projects_it_changed(mirror: Mirror, sample, upstream) -> None:
    """Pages are kept by manifest blob: a new tip that leaves a project alone serves its page as kept."""
    from gitmirror.serve.view import MirrorView
    from gitmirror.storage.repo import MetadataRepo
    from gitmirror.storage.store import BlobStore

    from fakeupstream import build_wheel

    mirror.run("sync", check=True)
    view = MirrorView(MetadataRepo(mirror.repo), BlobStore(mirror.store))
    before = mirror.git("rev-parse", "main").strip().encode()
    kept = {name: view.project_page(before, name, JSON) for name in ("demo-pkg", "other-lib")}
    upstream.add("other_lib", build_wheel("other_lib", "0.3"))
    mirror.run("sync", check=True)
    after = mirror.git("rev-parse", "main").strip().encode()
    assert after != before
    assert view.project_page(after, "demo-pkg", JSON) is kept["demo-pkg"]
    changed = view.project_page(after, "other-lib", JSON)
    assert changed is not None and b'"0.3"' in changed.body and changed.etag != kept["other-lib"].etag
    assert view.project_page(before, "other-lib", JSON) is kept["other-lib"]  # the old commit still reads the same
    assert view.project_page(after, "nope", JSON) is None
