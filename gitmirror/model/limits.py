"""How many bytes and how much time one download may take: the bounds every download path applies.

The idle timeout (``timeout``) bounds each read only: an upstream or hydrate source that never ends
a body, or sends it a byte a second, would hold a download, and the worker doing it, for ever.

- Bytes: a body may not exceed its announced size (the page's ``size``, the manifest's); a body
  whose size nobody announced may not exceed ``max_unannounced_size`` (release files), or
  ``MAX_METADATA_BYTES`` (PEP 658 ``.metadata`` files; pages have ``page.MAX_PAGE_BYTES``).
- Time: one attempt (its redirects included) ends at ``deadline`` seconds after it started plus
  one second per ``min_rate`` bytes received: a trickle fails after about ``deadline`` seconds,
  a large file at a fair rate never does. A failed attempt is retried like a timeout (``retries``).

Kept free of imports beyond the standard library: ``config`` and the download processes load it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

#: default ``max_unannounced_size``
MAX_UNANNOUNCED_BYTES = 1 << 30
#: a ``.metadata`` file whose size nobody announced (``max_unannounced_size`` when smaller)
MAX_METADATA_BYTES = 64 << 20
#: default ``download_deadline``, seconds
DEADLINE_SECONDS = 300.0
#: default ``download_min_rate``, bytes per second
MIN_RATE = 16 << 10


class DeadlineExceeded(TimeoutError):
    """An attempt ran past its deadline (a ``TimeoutError``: retried like one)."""


@dataclass(frozen=True)
class Limits:
    """``max_unannounced_size``, ``download_deadline`` and ``download_min_rate`` of ``mirror.yaml``."""

    max_unannounced_size: int = MAX_UNANNOUNCED_BYTES
    deadline: float = DEADLINE_SECONDS
    min_rate: int = MIN_RATE  # 0: ``deadline`` alone, a fixed ceiling

    @cached_property
    def per_byte(self) -> float:
        """Seconds of deadline each received byte adds."""
        return 1.0 / self.min_rate if self.min_rate else 0.0

    def cap(self, url: str, announced: int | None) -> int:
        """The most bytes the body of ``url`` may have: its announced size, else the cap for its kind."""
        if announced is not None:
            return announced
        if urlsplit(url).path.endswith(".metadata"):
            return min(MAX_METADATA_BYTES, self.max_unannounced_size)
        return self.max_unannounced_size

    def too_large(self, url: str, announced: int | None, length: int | None = None) -> str:
        """What a body past ``cap(url, announced)`` is refused with; ``length``: its ``Content-Length``."""
        limit = self.cap(url, announced)
        sent = f" (Content-Length: {length})" if length is not None else ""
        if announced is not None:
            return f"body longer than the announced {announced} bytes{sent}"
        kind = "max_unannounced_size" if limit == self.max_unannounced_size else "the cap for .metadata files"
        return f"no size announced and the body is longer than {limit} bytes ({kind}){sent}"

    def clock(self) -> Clock:
        """The deadline of an attempt starting now."""
        return Clock(time.monotonic(), self.deadline, self.per_byte)


@dataclass(slots=True)
class Clock:
    """One attempt's deadline: ``allowed`` seconds after ``started``, plus ``per_byte`` per byte received."""

    started: float
    allowed: float
    per_byte: float

    @property
    def end(self) -> float:
        """The deadline (``time.monotonic``) before any byte of the body is received."""
        return self.started + self.allowed

    def check(self, received: int) -> None:
        """Raise ``DeadlineExceeded`` when the attempt is past its deadline, ``received`` bytes in."""
        now = time.monotonic()
        if now > self.started + self.allowed + received * self.per_byte:
            raise self.exceeded(now)

    def exceeded(self, now: float | None = None) -> DeadlineExceeded:
        elapsed = (time.monotonic() if now is None else now) - self.started
        return DeadlineExceeded(f"too slow: download_deadline exceeded after {elapsed:.1f} s")
