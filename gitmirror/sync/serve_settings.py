"""``serve:`` in ``mirror.yaml``: where and how ``gitmirror serve`` listens and logs.

Parsed with the rest of the file (``config.from_mapping``) so a wrong key or type is one line before
anything starts; the command's flags override each key (``gitmirror.cli.cli_serve``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_KEYS = ("host", "port", "workers", "log_level", "access_log")


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1  # processes; each answers on its own (and counts its own /metrics)
    log_level: str = "info"
    access_log: bool = False  # one line per request on stdout (combined log format); off: it costs per request


def parse_serve(data: dict[str, Any], where: str = "") -> ServeSettings:
    """The ``serve:`` mapping, every key checked; absent keys keep their defaults."""
    for key in data:
        if key not in _KEYS:
            raise _error(f"{where}unknown key 'serve.{key}' (known: {', '.join(_KEYS)})")
    defaults = ServeSettings()
    host = data.get("host", defaults.host)
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise _error(f"{where}serve.host must be an address like 127.0.0.1 or ::, got {host!r}")
    port = data.get("port", defaults.port)
    if not _integer(port) or not 0 < port < 65536:
        raise _error(f"{where}serve.port must be a port number from 1 to 65535, got {port!r}")
    workers = data.get("workers", defaults.workers)
    if not _integer(workers) or workers < 1:
        raise _error(f"{where}serve.workers must be a positive integer, got {workers!r}")
    level = data.get("log_level", defaults.log_level)
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise _error(f"{where}serve.log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    access_log = data.get("access_log", defaults.access_log)
    if not isinstance(access_log, bool):
        raise _error(f"{where}serve.access_log must be true or false, got {access_log!r}")
    return ServeSettings(host=host, port=port, workers=workers, log_level=level.lower(), access_log=access_log)


def _error(message: str) -> ValueError:
    """``config.ConfigError``, which this module's caller defines (imported late: it imports us)."""
    from .config import ConfigError

    return ConfigError(message)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
