"""Network settings every upstream request shares (TLS trust, proxies), light enough for the warm path."""

from __future__ import annotations

import os
import ssl


def system_trust() -> ssl.SSLContext:
    """Verify TLS against the operating system's CA store (or ``SSL_CERT_FILE``), not a bundled one.

    Corporate networks install their own roots in the system store; a mirror that only trusts a
    bundled list cannot reach upstream there.
    """
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)


def proxy_configured() -> bool:
    """A proxy in the environment: then only httpx, which speaks to proxies, talks to upstream."""
    names = ("http_proxy", "https_proxy", "all_proxy")
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in names)
