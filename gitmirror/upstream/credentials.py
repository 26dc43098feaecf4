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
    """The ``Authorization`` header the netrc file gives each host (its ``default`` entry for the
    rest), the file read once, on first use; false when it gives none, so a request asks nothing more."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or netrc_path()
        self._lock = threading.Lock()
        self._headers: dict[str, str] | None = None

    def header(self, host: str) -> str | None:
        """``Basic <base64(login:password)>`` for ``host`` (a hostname, no port), or None."""
        headers = self._loaded()
        return headers.get(host.lower(), headers.get(_DEFAULT))

    def __bool__(self) -> bool:
        return bool(self._loaded())

    def _loaded(self) -> dict[str, str]:
        if self._headers is None:
            with self._lock:
                if self._headers is None:
                    self._headers = _read(self.path)
        return self._headers


#: netrc's entry for every host it does not name (``netrc.netrc`` files it under this key)
_DEFAULT = "default"


def _read(path: Path) -> dict[str, str]:
    try:
        parsed = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return {}
    return {
        host.lower(): "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")
        for host, (login, _account, password) in parsed.hosts.items()
    }
