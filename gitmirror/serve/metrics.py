"""What ``/metrics`` reports (Prometheus exposition format), and the middleware that counts requests.

Counters a serving feature adds to live in one module-level registry
(``PROXY_UPSTREAM_ERRORS.labels(reason="timeout").inc()``). Each app's request counts
(``request_counts``, added to on every request) and its mirror's state (store size, last sync,
``MirrorCollector``) are read per app when scraped, from cached or cheap sources only, so a scrape
never walks a large store on the event loop. Routes are labelled by their template
(``/simple/{project}/``), never by the path a client sent: the label set stays bounded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..storage.store import BlobStore
from ..sync.config import Config
from .logs import ACCESS, access_line
from .request_counts import RequestCounts
from .web_data import last_clean_sync

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # memory, CPU time, open file descriptors of this process
#: counted by the pull-through proxy when upstream fails it (reason: timeout, status, refused, ...)
PROXY_UPSTREAM_ERRORS = Counter(
    "gitmirror_proxy_upstream_errors",
    "Upstream requests of the pull-through proxy that failed",
    ["reason"],
    registry=REGISTRY,
)
UNMATCHED = "unmatched"
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
STORE_SIZE_TTL = 300.0  # seconds a store size is reported before it is measured again

log = logging.getLogger("gitmirror.serve")


class RequestMetrics:
    """Pure ASGI middleware: counts each HTTP request by route and status, its latency and body
    bytes (into ``counts``), and writes its access-log line when that log is on."""

    def __init__(self, app: ASGIApp, counts: RequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0
        body_sent = scope["method"] != "HEAD"  # the server drops a HEAD answer's body

        async def observed(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b"")) if body_sent else 0
            elif message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "other"  # a client's method is any token
            self.counts.count(route, method, status, time.perf_counter() - started, sent)
            if ACCESS.isEnabledFor(logging.INFO):
                ACCESS.info(access_line(scope, status, sent))


class StoreSize:
    """The store's blob count and bytes, measured in a background thread at most every ``ttl`` seconds:
    a scrape reports the last measurement (None before the first) and never waits for a walk."""

    def __init__(self, store: BlobStore, ttl: float = STORE_SIZE_TTL) -> None:
        self.store = store
        self.ttl = ttl
        self.measured: tuple[int, int] | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()
        self._running = False

    def current(self) -> tuple[int, int] | None:
        with self._lock:
            if not self._running and time.monotonic() - self._at > self.ttl:
                self._running = True
                threading.Thread(target=self._measure, name="gitmirror-store-size", daemon=True).start()
        return self.measured

    def _measure(self) -> None:
        try:
            self.measured = measure_store(self.store.blobs_dir)
        except OSError as exc:
            log.warning("store size: cannot walk %s: %s", self.store.blobs_dir, exc)
        finally:
            with self._lock:
                self._at, self._running = time.monotonic(), False


def measure_store(blobs_dir: Path) -> tuple[int, int]:
    """(blobs, bytes) under ``blobs/aa/bb/<sha256>``, by ``os.scandir`` (no stat beyond the entries')."""
    count = size = 0
    for first in _directories(str(blobs_dir)):
        for second in _directories(first):
            with os.scandir(second) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        count += 1
                        size += entry.stat(follow_symlinks=False).st_size
    return count, size


def _directories(path: str) -> Iterator[str]:
    with os.scandir(path) as entries:
        return iter([entry.path for entry in entries if entry.is_dir(follow_symlinks=False)])


class MirrorCollector(Collector):
    """The state of one mirror, read when scraped: store size (``StoreSize``), the last sync commit
    on the synced branch (from git) and whether the last full sync ended cleanly (its warm record)."""

    def __init__(self, config: Config, last_sync: Callable[[], float | None]) -> None:
        self.config = config
        self.last_sync = last_sync
        # a directory store is walked; a bucket would be listed object by object, so its size is not reported
        self.store_size = StoreSize(BlobStore(config.store)) if config.s3 is None else None

    def collect(self) -> Iterator[Metric]:
        measured = self.store_size.current() if self.store_size is not None else None
        if measured is not None:
            yield GaugeMetricFamily(
                "gitmirror_store_blobs", "Blobs in the store (measured in the background)", value=measured[0]
            )
            yield GaugeMetricFamily("gitmirror_store_bytes", "Bytes of the blobs in the store", value=measured[1])
        synced = self.last_sync()
        if synced is not None:
            yield GaugeMetricFamily(
                "gitmirror_last_sync_commit_timestamp_seconds",
                "Commit time of the newest sync commit on the synced branch",
                value=synced,
            )
        clean_at = last_clean_sync(self.config)
        yield GaugeMetricFamily(
            "gitmirror_last_sync_clean",
            "1 when the last sync of the whole configuration ended cleanly (exit 0), else 0",
            value=0 if clean_at is None else 1,
        )
        if clean_at is not None:
            yield GaugeMetricFamily(
                "gitmirror_last_clean_sync_timestamp_seconds",
                "When the last clean sync of the whole configuration ended",
                value=clean_at,
            )


def exposition(app_registry: CollectorRegistry) -> Response:
    """The ``/metrics`` response: the process's and the proxy's metrics, then one app's request counts
    and mirror state."""
    body = generate_latest(REGISTRY) + generate_latest(app_registry)
    return Response(body, headers={"content-type": CONTENT_TYPE_LATEST, "cache-control": "no-store"})
