"""The server under hostile or demanding clients: traversal, HEAD, Range, many and slow connections.

One server (module scope) over one synced mirror keeps this file fast; no test changes the mirror.
"""

from __future__ import annotations

import http.client
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Mirror, RunningServer
from presynced import sample_site

WHEEL = "demo_pkg-1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Mirror, dict]]:
    root = tmp_path_factory.mktemp("served") / "site"
    (root.parent / "secret.txt").write_text("TOP SECRET outside the mirror\n")
    with sample_site(root) as (mirror, server, sample):
        yield server, mirror, sample


def raw_get(server: RunningServer, path: str, method: str = "GET") -> tuple[int, bytes]:
    """Send ``path`` byte for byte (no client-side normalization of dots or escapes)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


TRAVERSALS = [
    "/files/demo-pkg/../../../secret.txt",
    "/files/demo-pkg/..%2F..%2F..%2Fsecret.txt",
    "/files/demo-pkg/%2e%2e%2f%2e%2e%2fmirror.yaml",
    "/files/..%2F..%2F/secret.txt",
    "/files/demo-pkg/..%5C..%5Cmirror.yaml",
    "/files/demo-pkg/%2Fetc%2Fpasswd",
    "/files/demo-pkg/demo_pkg-1.0.tar.gz%00.whl",
    "/files/demo-pkg/" + "a" * 5000 + ".whl",
    "/files/demo-pkg/" + WHEEL + "/../../../mirror.yaml",
    "/simple/..%2F..%2Fsecret.txt/",
    "/snapshot/..%2F..%2F..%2Fsecret.txt/simple/",
    "/snapshot/main/files/demo-pkg/..%2F..%2Fmirror.yaml",
    "/snapshot/%2e%2e/files/demo-pkg/" + WHEEL,
    "/snapshot/main/../../../secret.txt",
    "/snapshot/refs%2Fheads%2F..%2F..%2Fconfig/simple/",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_reaches_outside(served, path: str) -> None:
    server, _mirror, _sample = served
    status, body = raw_get(server, path)
    assert status in (301, 302, 307, 308, 400, 404, 406), (status, body[:200])
    assert b"TOP SECRET" not in body and b"upstream:" not in body and b"root:" not in body
    assert b"Traceback" not in body


def test_head_requests_answer_headers_only(served) -> None:
    server, _mirror, sample = served
    wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == WHEEL)
    response = httpx.head(f"{server.url}/files/demo-pkg/{WHEEL}")
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == len(wheel.data)
    assert response.headers["etag"] == f'"{wheel.sha256}"'
    page = httpx.head(f"{server.url}/simple/demo-pkg/")
    assert page.status_code == 200 and page.content == b"" and page.headers["etag"]
    assert httpx.head(f"{server.url}/files/demo-pkg/nope-1.0.tar.gz").status_code == 404


def test_range_requests(served) -> None:
    server, _mirror, sample = served
    data = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == WHEEL).data
    url = f"{server.url}/files/demo-pkg/{WHEEL}"
    first = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert first.status_code == 206 and first.content == data[:10]
    assert first.headers["content-range"] == f"bytes 0-9/{len(data)}"
    tail = httpx.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    rest = httpx.get(url, headers={"Range": f"bytes={len(data) - 3}-"})
    assert rest.status_code == 206 and rest.content == data[-3:]
    beyond = httpx.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416
    for garbage in ("bytes=abc", "lines=1-2", "bytes=5-1", "bytes=" + "9" * 40 + "-"):
        response = httpx.get(url, headers={"Range": garbage})
        assert response.status_code in (200, 206, 400, 416), garbage
        if response.status_code == 200:
            assert response.content == data


def test_thousand_idle_connections_do_not_starve_the_server(served) -> None:
    server, _mirror, _sample = served
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:  # this test process needs the descriptors too (the server raises its own limit)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    host, port = server.url.removeprefix("http://").split(":")
    held: list[socket.socket] = []
    try:
        for _ in range(1000):
            held.append(socket.create_connection((host, int(port)), timeout=10))
        response = httpx.get(f"{server.url}/files/demo-pkg/{WHEEL}", timeout=30)
        assert response.status_code == 200
        # The held connections are real: one of them still gets an answer.
        held[-1].sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert held[-1].recv(12).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


def test_slow_clients_do_not_block_others(served) -> None:
    server, _mirror, _sample = served
    host, port = server.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET /simple/demo-pkg/ HTTP/1.1\r\nHo")  # and then nothing, for now
        assert httpx.get(f"{server.url}/simple/", timeout=10).status_code == 200
        slow[0].sendall(b"st: x\r\nConnection: close\r\n\r\n")
        assert slow[0].recv(12).startswith(b"HTTP/1.1 200")
    finally:
        for sock in slow:
            sock.close()


def test_server_never_serves_a_file_outside_the_store(served) -> None:
    server, mirror, _sample = served
    outside = Path(mirror.root.parent / "secret.txt")
    assert outside.exists()
    for path in (f"/files/demo-pkg/{outside}", "/files/demo-pkg/secret.txt", "/files/secret.txt"):
        status, body = raw_get(server, path)
        assert status == 404 and b"TOP SECRET" not in body


def test_files_larger_than_one_read_step_are_served_whole_and_in_ranges(mirror: Mirror, upstream, serve) -> None:
    """A blob is read in 256 KiB steps (server.BlobResponse): bodies and ranges across steps stay exact."""
    from fakeupstream import build_wheel

    wheel = build_wheel("big-pkg", "1.0", payload_size=700_000)
    upstream.add("big-pkg", wheel)
    mirror.configure("projects:\n  - big-pkg\n")
    mirror.run("sync", check=True)
    server = serve()
    url = f"{server.url}/files/big-pkg/{wheel.filename}"
    assert len(wheel.data) > 2 * 256 * 1024
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == wheel.data
    assert int(whole.headers["content-length"]) == len(wheel.data)
    for start, end in ((262_000, 262_300), (100_000, 600_000), (0, len(wheel.data) - 1)):
        part = httpx.get(url, headers={"Range": f"bytes={start}-{end}"})
        assert part.status_code == 206 and part.content == wheel.data[start : end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(wheel.data)}"
