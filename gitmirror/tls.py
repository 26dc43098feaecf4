"""Network settings every upstream request shares (TLS trust, proxies, plain connections), light
enough for the warm path to import: ``http.client`` and ``ssl`` are imported when first used."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    import http.client
    import ssl

USER_AGENT = f"gitmirror/{__version__}"


def system_trust() -> ssl.SSLContext:
    """Verify TLS against the operating system's CA store (or ``SSL_CERT_FILE``), not a bundled one.

    Corporate networks install their own roots in the system store; a mirror that only trusts a
    bundled list cannot reach upstream there.
    """
    import ssl

    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)


def proxy_configured() -> bool:
    """A proxy in the environment: then only httpx, which speaks to proxies, talks to upstream."""
    names = ("http_proxy", "https_proxy", "all_proxy")
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in names)


def open_connection(
    scheme: str, host: str, port: int | None, timeout: float, context: ssl.SSLContext | None = None
) -> http.client.HTTPConnection:
    """An ``http.client`` connection (not yet connected) for the XML-RPC changelog
    (``unchanged.changed_projects``): https verified against ``context``, else the system store;
    ``timeout`` applies to every socket operation. Downloads use ``http11.connect``."""
    import http.client

    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context or system_trust())
    return http.client.HTTPConnection(host, port, timeout=timeout)
