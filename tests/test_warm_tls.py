"""The warm check's HEAD over TLS: verified against the trust ``SSL_CERT_FILE`` names, else refused.

The check speaks on a plain socket (``unchanged.upstream_serial``); the public index is https, so
this is the path every real mirror's cron run takes.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitmirror.unchanged import upstream_serial

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


class SerialHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:  # noqa: N802 - the standard library's name
        self.server.seen.append((self.command, self.path, self.headers.get("Host")))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("X-PyPI-Last-Serial", "4242")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_index(
    localhost_certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path, list]]:
    """An https index root on 127.0.0.1 with a certificate made for it; yields (url, cert, requests)."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):  # with a proxy there is no warm path
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    cert, key = localhost_certificate
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SerialHandler)
    server.seen = []  # type: ignore[attr-defined]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}/simple/", cert, server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_a_trusted_certificate_gives_the_serial(tls_index, monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert, seen = tls_index
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert upstream_serial(url, timeout=5) == "4242"
    assert seen == [("HEAD", "/simple/", url.split("/")[2])]


def test_an_untrusted_certificate_means_the_full_run(tls_index, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _cert, seen = tls_index
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system store does not know this one
    assert upstream_serial(url, timeout=5) is None
    assert seen == []  # the handshake failed before any request was sent
