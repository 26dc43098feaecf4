"""Deadlines that hold for a whole request: httpcore's network backend, its every read bounded.

An attempt's deadline (``limits.Clock``: a fixed time plus a time per byte received) covers its head
and its body alike, however slowly a server sends them; httpcore's own timeouts bound one read at a
time. The transport sets this thread's ``attempt`` before each request and hands ``backend()`` to
its connection pools (their public ``network_backend``).
"""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpcore

    from ..model.limits import Clock


class Attempt(threading.local):
    """The deadline of this thread's request under way, which every socket read obeys."""

    clock: Clock | None = None
    received = 0


attempt = Attempt()


@cache
def backend() -> type[httpcore.NetworkBackend]:
    """httpcore's backend whose connections read under ``attempt``'s deadline (made when first used:
    httpcore is imported by the processes that speak HTTP, not by every one that may)."""
    import httpcore

    class _BoundedStream(httpcore.NetworkStream):
        """A connection whose every read ends by the current attempt's deadline (head and body alike)."""

        def __init__(self, stream: httpcore.NetworkStream) -> None:
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            clock = attempt.clock
            if clock is None:
                return self._stream.read(max_bytes, timeout)
            left = clock.end + attempt.received * clock.per_byte - time.monotonic()
            if left <= 0:
                raise clock.exceeded()
            try:
                data = self._stream.read(max_bytes, left if timeout is None else min(timeout, left))
            except httpcore.ReadTimeout:
                if clock.end + attempt.received * clock.per_byte <= time.monotonic():
                    raise clock.exceeded() from None
                raise
            attempt.received += len(data)
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._stream.write(buffer, timeout)

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class _BoundedBackend(httpcore.SyncBackend):
        def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
            return _BoundedStream(super().connect_tcp(*args, **kwargs))

    return _BoundedBackend
