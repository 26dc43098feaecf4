"""The request counts of ``/metrics``: plain numbers the event loop adds to, exported when scraped.

Counting is on every request's path, so it is a dictionary lookup and three additions with no
lock: one app's requests are all counted on its event loop's thread, the only writer. A scrape
reads from another thread and copies each tally first (a copy is one step under the GIL), so it
never sees a tally half copied; at worst it sees a request counted in its bucket and not yet in its
sum. prometheus_client still writes the exposition: ``RequestCounts`` is its ``Collector``, with the
names, labels and buckets its ``Counter`` and ``Histogram`` would give.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: upper bounds (seconds) of the latency histogram's buckets; +Inf follows
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
_SUM = len(BUCKETS) + 1  # a tally: the count of each bucket (+Inf last), then the seconds, then the bytes
_BYTES = _SUM + 1
_LE = [floatToGoString(bound) for bound in BUCKETS] + ["+Inf"]

Key = tuple[str, str, int]  # route template, method, status


class RequestCounts(Collector):
    """Requests by (route, method, status): how many, their latency histogram and body bytes."""

    def __init__(self) -> None:
        self._tallies: dict[Key, list[float]] = {}
        self._created: dict[Key, float] = {}

    def count(self, route: str, method: str, status: int, seconds: float, sent: int) -> None:
        """One answered request; only ever called from the thread of the app's event loop."""
        tally = self._tallies.get((route, method, status))
        if tally is None:
            tally = self._new((route, method, status))
        tally[bisect.bisect_left(BUCKETS, seconds)] += 1  # a bucket counts what is <= its bound
        tally[_SUM] += seconds
        tally[_BYTES] += sent

    def _new(self, key: Key) -> list[float]:
        self._created[key] = time.time()  # before the tally: a scrape never finds one without it
        tally = self._tallies[key] = [0] * (_BYTES + 1)
        return tally

    def collect(self) -> Iterator[Metric]:
        tallies = sorted((key, list(tally)) for key, tally in self._tallies.copy().items())
        created = self._created.copy()
        requests = CounterMetricFamily(
            "gitmirror_http_requests",
            "HTTP requests answered, by route, method and status",
            labels=["route", "method", "status"],
        )
        by_route: dict[str, tuple[list[float], float]] = {}  # route -> (merged tally, first created)
        for (route, method, status), tally in tallies:
            key = (route, method, status)
            requests.add_metric([route, method, str(status)], sum(tally[:_SUM]), created=created[key])
            merged, first = by_route.get(route, ([0] * len(tally), created[key]))
            by_route[route] = [a + b for a, b in zip(merged, tally, strict=True)], min(first, created[key])
        yield requests
        latency = HistogramMetricFamily(
            "gitmirror_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte, by route",
            labels=["route"],
        )
        sent = CounterMetricFamily(
            "gitmirror_http_response_bytes", "Response body bytes sent, by route", labels=["route"]
        )
        for route, (tally, first) in by_route.items():
            buckets = list(zip(_LE, itertools.accumulate(tally[:_SUM]), strict=True))
            latency.add_metric([route], buckets, tally[_SUM])
            latency.samples.append(Sample(latency.name + "_created", {"route": route}, first, None))
            sent.add_metric([route], tally[_BYTES], created=first)
        yield latency
        yield sent
