"""The request counts of ``/metrics``: what a scrape shows is what prometheus_client's own ``Counter``
and ``Histogram`` would show for the same requests."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gitmirror.serve.request_counts import BUCKETS, RequestCounts

REQUESTS = [  # route, method, status, seconds, body bytes
    ("/simple/{project}/", "GET", 200, 0.0004, 4023),
    ("/simple/{project}/", "GET", 200, 0.001, 4023),  # on a bound: counted in that bucket (le)
    ("/simple/{project}/", "GET", 404, 0.003, 20),
    ("/simple/{project}/", "HEAD", 200, 0.07, 0),
    ("/files/{project}/{filename}", "GET", 200, 1.7, 1 << 20),
    ("unmatched", "other", 404, 75.0, 9),  # beyond the last bound: only in +Inf
]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scrape as (sample name, labels) -> value, parsed by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def with_prometheus_client() -> CollectorRegistry:
    """The same requests counted the way the middleware counted them before: labelled children."""
    registry = CollectorRegistry()
    requests = Counter("gitmirror_http_requests", "requests", ["route", "method", "status"], registry=registry)
    latency = Histogram(
        "gitmirror_http_request_duration_seconds", "latency", ["route"], buckets=BUCKETS, registry=registry
    )
    sent = Counter("gitmirror_http_response_bytes", "bytes", ["route"], registry=registry)
    for route, method, status, seconds, size in REQUESTS:
        requests.labels(route, method, str(status)).inc()
        latency.labels(route).observe(seconds)
        sent.labels(route).inc(size)
    return registry


def test_a_scrape_shows_what_counters_and_a_histogram_would() -> None:
    counts = RequestCounts()
    for request in REQUESTS:
        counts.count(*request)
    ours = CollectorRegistry()
    ours.register(counts)
    got, expected = samples(ours), samples(with_prometheus_client())
    assert got.keys() == expected.keys()  # names, labels, buckets, and the _created series
    created = {key for key in got if key[0].endswith("_created")}
    assert {key: got[key] for key in got.keys() - created} == {key: expected[key] for key in got.keys() - created}
    assert all(abs(got[key] - expected[key]) < 60 for key in created)  # each child's first count (a time)
    route = (("route", "/simple/{project}/"),)
    assert got[("gitmirror_http_request_duration_seconds_count", route)] == 4
    assert got[("gitmirror_http_request_duration_seconds_bucket", (("le", "0.001"), *route))] == 2
    assert got[("gitmirror_http_response_bytes_total", route)] == 2 * 4023 + 20


def test_a_scrape_from_another_thread_while_requests_are_counted() -> None:
    """The event loop counts while a scrape reads in the pool: no error, and no count goes back."""
    counts = RequestCounts()
    registry = CollectorRegistry()
    registry.register(counts)
    stop = threading.Event()
    seen: list[float] = []

    def scrape() -> None:
        while not stop.is_set():
            seen.append(
                sum(value for key, value in samples(registry).items() if key[0] == "gitmirror_http_requests_total")
            )

    scraper = threading.Thread(target=scrape)
    scraper.start()
    counted = 0
    while len(seen) < 3 or counted < 5_000:  # new keys keep coming while the scraper copies the table
        counts.count(f"/route/{counted % 500}", "GET", 200 + counted % 3, 0.002, 10)
        counted += 1
    stop.set()
    scraper.join()
    assert seen == sorted(seen)
    total = sum(value for key, value in samples(registry).items() if key[0] == "gitmirror_http_requests_total")
    assert total == counted
