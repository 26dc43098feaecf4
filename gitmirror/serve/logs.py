"""The server's logs: one access line per request in the combined log format, errors as JSON lines.

The access log is the format every log tool reads (Apache's and nginx's ``combined``), written to
stdout; everything else (uvicorn's errors, gitmirror's warnings, tracebacks) goes to stderr as one
JSON object per line, so a collector never has to re-join a traceback.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import Scope

from ..model.text import printable

ACCESS = logging.getLogger("gitmirror.access")
ACCESS.propagate = False  # its lines are the access log, not errors
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def access_line(scope: Scope, status: int, sent: int, now: float | None = None) -> str:
    """``host - - [day/Mon/year:H:M:S +0000] "METHOD target HTTP/v" status bytes "referer" "agent"``."""
    client = scope.get("client")
    moment = time.gmtime(now)
    stamp = f"{moment.tm_mday:02d}/{_MONTHS[moment.tm_mon - 1]}/{time.strftime('%Y:%H:%M:%S', moment)} +0000"
    target = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    referer = agent = b"-"
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            agent = value
        elif name == b"referer":
            referer = value
    request = f"{scope.get('method', '-')} {target} HTTP/{scope.get('http_version', '1.1')}"
    return (
        f"{client[0] if client else '-'} - - [{stamp}] {_quoted(request)} {status} {sent or '-'} "
        f"{_quoted(referer.decode('latin-1'))} {_quoted(agent.decode('latin-1'))}"
    )


def _quoted(text: str) -> str:
    """A field in double quotes with quotes, backslashes and control characters escaped (as nginx does)."""
    return '"' + printable(text, also='"\\') + '"'


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_config(level: str, access_log: bool) -> dict[str, Any]:
    """uvicorn's ``log_config``: JSON errors on stderr at ``level``, the access log on stdout (or off).

    uvicorn's own access log stays off: ``metrics.RequestMetrics`` writes the line, with the body size.
    """
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}, "access": {"format": "%(message)s"}},
        "handlers": {
            "errors": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["errors"], "level": upper, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "gitmirror": {"handlers": ["errors"], "level": upper, "propagate": False},
            "gitmirror.access": {
                "handlers": ["access"],
                "level": "INFO" if access_log else "CRITICAL",
                "propagate": False,
            },
        },
    }
