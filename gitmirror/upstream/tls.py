"""The TLS trust every upstream request shares: the system store, one ``SSLContext`` per process."""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    import ssl

USER_AGENT = f"gitmirror/{__version__}"


def system_trust() -> ssl.SSLContext:
    """Verify TLS against the operating system's CA store (or ``SSL_CERT_FILE``), not a bundled one.

    Corporate networks install their own roots in the system store; a mirror that only trusts a
    bundled list cannot reach upstream there. One context per store, which loads the store when it
    first wraps a connection: loading it is the dear part, and a run over plain http never needs it.
    """
    return _context(os.environ.get("SSL_CERT_FILE") or None)


@cache
def _context(cafile: str | None) -> ssl.SSLContext:
    import ssl

    class SystemTrust(ssl.SSLContext):
        """``ssl.create_default_context(cafile=...)``, its CA store loaded on first use."""

        _lock = threading.Lock()
        _loaded = False

        def _load(self) -> None:
            with self._lock:
                if not self._loaded:
                    if cafile:
                        self.load_verify_locations(cafile=cafile)
                    else:
                        self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                    self._loaded = True

        def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
            self._load()
            return super().wrap_socket(*args, **kwargs)

        def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
            self._load()
            return super().wrap_bio(*args, **kwargs)

    return SystemTrust(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names, as the default does
