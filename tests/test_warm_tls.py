"""Upstream over TLS: verified against the trust ``SSL_CERT_FILE`` names (else the system store), else refused.

The warm check's HEAD (``unchanged.upstream_serial``) and the downloads go through the one
transport (``gitmirror.upstream.transport``) and its one trust; the public index is https, so this is the
path every real mirror takes.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitmirror.model.hosts import HostPolicy
from gitmirror.storage.store import BlobStore
from gitmirror.sync.unchanged import upstream_serial
from gitmirror.upstream.transport import Transient, Transport

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


BODY = b"wheel over tls " * 100


class SerialHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:  # noqa: N802 - the standard library's name
        self.server.seen.append((self.command, self.path, self.headers.get("Host")))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("X-PyPI-Last-Serial", "4242")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.server.seen.append((self.command, self.path, self.headers.get("Host")))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_index(
    localhost_certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path, list]]:
    """An https index root on 127.0.0.1 with a certificate made for it; yields (url, cert, requests)."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):  # straight to it
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


def test_files_come_over_the_same_verified_tls(tls_index, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url, cert, seen = tls_index
    store, digest = BlobStore(tmp_path), hashlib.sha256(BODY).hexdigest()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    untrusting = Transport(HostPolicy(url), 5.0)
    with store.writer(digest, len(BODY)) as writer, pytest.raises(Transient, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.fetch(url + "x.whl", writer)
    untrusting.close()
    assert seen == []
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusting = Transport(HostPolicy(url), 5.0)
    with store.writer(digest, len(BODY)) as writer:
        trusting.fetch(url + "x.whl", writer)
        writer.commit()
    trusting.close()
    assert store.path(digest).read_bytes() == BODY and seen == [("GET", "/simple/x.whl", url.split("/")[2])]
