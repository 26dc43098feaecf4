"""Credentials for private indexes: a netrc file's login and password for a request's host, sent as
HTTP basic auth, as pip, uv and curl read them.

The file is ``$NETRC``, else ``~/.netrc``; a missing, unreadable or malformed one gives no
credentials, as it does to requests. Credentials never appear in a URL gitmirror keeps, shows or
logs (its config, commits, pages), which is why they come from this file and not from the URL.
"""

from __future__ import annotations

import base64
import netrc
import os
import threading
from pathlib import Path


def netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


class NetrcCredentials:
    """The ``Authorization`` header the netrc file gives each host (its ``default`` entry included),
    the file read once per instance."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or netrc_path()
        self._lock = threading.Lock()
        self._parsed: netrc.netrc | None = None
        self._read = False

    def header(self, host: str) -> str | None:
        """``Basic <base64(login:password)>`` for ``host`` (a hostname, no port), or None."""
        with self._lock:
            if not self._read:
                self._read = True
                try:
                    self._parsed = netrc.netrc(str(self.path))
                except (OSError, netrc.NetrcParseError):
                    self._parsed = None
        found = self._parsed.authenticators(host.lower()) if self._parsed is not None else None
        if found is None:
            return None
        login, _account, password = found
        return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")
