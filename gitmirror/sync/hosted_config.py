"""``mirror.yaml`` ``hosted:``: the projects this mirror hosts (``gitmirror.model.hosted``).

Two forms. A list of names and glob patterns, each optionally a mapping with PEP 708 data::

    hosted:
      - "acme-*"
      - name: tool
        tracks: ["https://upstream.example/simple/tool/"]
        alternate-locations: ["https://other.example/simple/tool/"]

or a mapping holding that list as ``projects`` beside the server's settings::

    hosted:
      projects: ["acme-*"]
      read_auth: true          # every read needs a token too
      max_upload_size: 100MiB  # the largest upload body
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..model.hosted import HostedProject, HostedSettings, normalize_pattern
from ..model.names import UnsafeNameError, normalize
from .config import ConfigError

_SETTINGS_KEYS = ("projects", "read_auth", "max_upload_size")
_ENTRY_KEYS = ("name", "tracks", "alternate-locations")


def parse_hosted(value: object, upstream: str, where: str = "") -> HostedSettings:
    """``hosted:`` checked entry by entry; ``upstream`` (the configured root) decides which
    ``tracks`` URLs let a sync fill a hosted project: the upstream page of that very project."""
    if value is None:
        return HostedSettings()
    settings: dict[str, Any] = value if isinstance(value, dict) else {"projects": value}
    for key in settings:
        if key not in _SETTINGS_KEYS:
            raise ConfigError(f"{where}unknown key 'hosted.{key}' (known: {', '.join(_SETTINGS_KEYS)})")
    entries = settings.get("projects", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}hosted.projects must be a list of names and glob patterns")
    read_auth = settings.get("read_auth", False)
    if not isinstance(read_auth, bool):
        raise ConfigError(f"{where}hosted.read_auth must be true or false, got {type(read_auth).__name__}")
    limit = HostedSettings().max_upload_size
    if "max_upload_size" in settings:
        from .selection import SelectionError, parse_size

        try:
            limit = parse_size(settings["max_upload_size"])
        except SelectionError as exc:
            raise ConfigError(f"{where}hosted.max_upload_size {exc}") from None
    projects = tuple(_entry(entry, upstream, where) for entry in entries)
    return HostedSettings(projects=projects, read_auth=read_auth, max_upload_size=limit)


def _entry(entry: object, upstream: str, where: str) -> HostedProject:
    if isinstance(entry, str):
        return HostedProject(_pattern(entry, where))
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}hosted: entries must be names, glob patterns or mappings with a name, got {entry!r}")
    for key in entry:
        if key not in _ENTRY_KEYS:
            raise ConfigError(f"{where}unknown key 'hosted.{key}' in an entry (known: {', '.join(_ENTRY_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{where}hosted: an entry mapping needs a name, got {entry!r}")
    pattern = _pattern(name, where)
    tracks = _urls(entry.get("tracks", []), f"{where}hosted {name}: tracks")
    alternates = _urls(entry.get("alternate-locations", []), f"{where}hosted {name}: alternate-locations")
    if tracks and any(char in pattern for char in "*?["):
        raise ConfigError(f"{where}hosted {name}: tracks names one upstream project, so it needs a name, not a glob")
    own_page = upstream + pattern + "/"
    return HostedProject(pattern, tracks, alternates, follows_upstream=own_page in tracks)


def _pattern(text: str, where: str) -> str:
    if not text or len(text) > 200:
        raise ConfigError(f"{where}hosted: invalid name or pattern {text!r}")
    if any(char in text for char in "*?["):
        pattern = normalize_pattern(text)
        if not all(char.isalnum() or char in "-*?[]!" for char in pattern):
            raise ConfigError(f"{where}hosted: invalid glob pattern {text!r}")
        return pattern
    try:
        return normalize(text)
    except UnsafeNameError:
        raise ConfigError(f"{where}hosted: invalid project name {text!r}") from None


def _urls(value: object, where: str) -> tuple[str, ...]:
    """A URL or a list of them: http(s) only, each a PEP 708 project page (ending in ``/``)."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list):
        raise ConfigError(f"{where} must be a URL or a list of URLs")
    urls = []
    for url in values:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or any(c in url for c in '"<> '):
            raise ConfigError(f"{where}: {url!r} is not an http(s) URL")
        urls.append(url)
    return tuple(dict.fromkeys(urls))
