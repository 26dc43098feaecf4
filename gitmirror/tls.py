"""The TLS trust every upstream request uses, in a module light enough for the warm path to import."""

from __future__ import annotations

import os
import ssl


def system_trust() -> ssl.SSLContext:
    """Verify TLS against the operating system's CA store (or ``SSL_CERT_FILE``), not a bundled one.

    Corporate networks install their own roots in the system store; a mirror that only trusts a
    bundled list cannot reach upstream there.
    """
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)
