"""The TLS trust every upstream request shares: the system store, one ``SSLContext`` per process."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    import ssl

USER_AGENT = f"gitmirror/{__version__}"


def system_trust() -> ssl.SSLContext:
    """Verify TLS against the operating system's CA store (or ``SSL_CERT_FILE``), not a bundled one.

    Corporate networks install their own roots in the system store; a mirror that only trusts a
    bundled list cannot reach upstream there. One context per store: loading it is the dear part.
    """
    return _context(os.environ.get("SSL_CERT_FILE") or None)


@cache
def _context(cafile: str | None) -> ssl.SSLContext:
    import ssl

    return ssl.create_default_context(cafile=cafile)
