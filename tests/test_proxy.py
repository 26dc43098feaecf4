"""A sync behind a forward proxy (``http_proxy``): every request goes through it, and the mirror is right.

The proxy is a small loopback HTTP forward proxy (absolute-URI requests, answers relayed whole) that
records what it forwarded; the sync subprocess gets its address in ``http_proxy`` as an operator
behind a corporate proxy would set it.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from conftest import Mirror
from fakeupstream import FakeUpstream

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class ForwardProxy(http.server.BaseHTTPRequestHandler):
    """Forwards ``GET``/``HEAD``/``POST http://host:port/path`` to that origin; records (method, URL)."""

    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:  # not a proxy request: refused
            self.send_error(400, "absolute http URI expected")
            return
        self.server.seen.append((self.command, self.path))  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {key: value for key, value in self.headers.items() if key.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        try:
            upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Via", "1.1 test-proxy")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = _forward  # noqa: N815 - the standard library's names

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ForwardProxy)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_sync_goes_through_the_forward_proxy(mirror: Mirror, sample, upstream: FakeUpstream, proxy) -> None:
    address, seen = proxy
    env = {"http_proxy": address, "no_proxy": "", "NO_PROXY": ""}
    result = mirror.run("sync", check=True, env=env)
    assert "2 projects checked, 2 changed" in result.stdout
    origin = upstream.url.split("/simple/")[0]
    asked = [(record.method, origin + record.path) for record in upstream.requests]
    assert asked and sorted(seen) == sorted(asked)  # every request went through the proxy, nothing around it
    assert {f"{origin}/simple/demo-pkg/", f"{origin}/simple/other-lib/"} <= {url for _, url in seen}
    assert sum(url.startswith(f"{origin}/files/") for _, url in seen) >= len(sample["demo-pkg"])
    assert mirror.run("verify").returncode == 0
    before = len(seen)
    warm = mirror.run("sync", check=True, env=env)  # the warm check's one HEAD goes through it too
    assert "unchanged since the last complete sync" in warm.stdout
    assert seen[before:] == [("HEAD", upstream.url)]


def test_hosts_in_no_proxy_are_reached_directly(sample, upstream: FakeUpstream, proxy, monkeypatch) -> None:
    """``no_proxy`` names hosts the transport reaches around the proxy; the others go through it."""
    from gitmirror.model.hosts import HostPolicy
    from gitmirror.upstream.transport import Transport

    address, seen = proxy
    page = upstream.page_url("demo-pkg")
    for no_proxy, through_proxy in (("127.0.0.1", False), ("other.example", True)):
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, address)
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.setenv(name, no_proxy)
        before = len(seen)
        transport = Transport(HostPolicy(upstream.url), 5)
        try:
            assert transport.get_page(page, {}, 1 << 20).status == 200
        finally:
            transport.close()
        assert seen[before:] == ([("GET", page)] if through_proxy else [])
