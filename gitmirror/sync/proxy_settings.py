"""``proxy:`` in ``mirror.yaml``: serve any project on first request and record it (docs/proxy.md).

``proxy: true`` takes the defaults; a mapping sets ``ttl`` (how long a fetched page counts as
current), ``commit_interval`` and ``commit_changes`` (when the batch of recorded changes becomes a
commit) and ``allow``/``deny`` (project-name globs). Parsed here, beside the rest of the file, so a
wrong value is one line naming the key before the server starts.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

_KEYS = ("ttl", "commit_interval", "commit_changes", "allow", "deny")


@dataclass(frozen=True)
class ProxySettings:
    """How the pull-through proxy refreshes, batches its commits and which projects it may fetch."""

    ttl: timedelta = timedelta(minutes=5)
    commit_interval: float = 10.0
    commit_changes: int = 100
    allow: tuple[str, ...] = ()  # empty: every project
    deny: tuple[str, ...] = ()

    def admits(self, project: str) -> bool:
        """Whether the proxy may fetch ``project`` (a normalized name) from upstream: allowed and not denied."""
        allowed = not self.allow or any(fnmatch.fnmatchcase(project, pattern) for pattern in self.allow)
        return allowed and not any(fnmatch.fnmatchcase(project, pattern) for pattern in self.deny)


def parse_proxy(value: object, where: str = "") -> ProxySettings | None:
    """``proxy:`` as written: false (or absent) -> None, true -> the defaults, a mapping -> checked settings."""
    from .config import ConfigError, parse_duration

    if value is False or value is None:
        return None
    if value is True:
        return ProxySettings()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}proxy must be true, false or a mapping with {', '.join(_KEYS)}")
    data: dict[str, Any] = value
    for key in data:
        if key not in _KEYS:
            raise ConfigError(f"{where}unknown key 'proxy.{key}' (known: {', '.join(_KEYS)})")
    ttl = parse_duration(data.get("ttl", 300), f"{where}proxy.ttl")
    interval = data.get("commit_interval", 10)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < float("inf"):
        raise ConfigError(f"{where}proxy.commit_interval must be a positive number of seconds, got {interval!r}")
    changes = data.get("commit_changes", 100)
    if isinstance(changes, bool) or not isinstance(changes, int) or changes < 1:
        raise ConfigError(f"{where}proxy.commit_changes must be a positive integer, got {changes!r}")
    patterns = {}
    for key in ("allow", "deny"):
        entries = data.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(entry, str) and entry for entry in entries):
            raise ConfigError(f"{where}proxy.{key} must be a list of project name patterns like 'acme-*'")
        patterns[key] = tuple(entry.lower() for entry in entries)
    return ProxySettings(
        ttl=ttl,
        commit_interval=float(interval),
        commit_changes=changes,
        allow=patterns["allow"],
        deny=patterns["deny"],
    )
