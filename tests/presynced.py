"""One synced and served sample mirror for a module's tests that only read it.

A sync costs a ``gitmirror`` interpreter, its fork server and download processes; a server, one
more interpreter. Tests that only read what a plain sync of the sample index serves (pages, headers,
the wire) share one site per module (``scope="module"``) instead of each building its own. Tests
that change the mirror, its upstream or its server keep the function-scoped ``mirror`` and ``serve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import Mirror, RunningServer, start_server, stop_server
from fakeupstream import Artifact, FakeUpstream, make_sample_index


@contextmanager
def sample_site(root: Path) -> Iterator[tuple[Mirror, RunningServer, dict[str, list[Artifact]]]]:
    """``mirror``'s setup (the sample index, its two projects) synced into ``root`` and served; also
    yields ``make_sample_index``'s answer, as the ``sample`` fixture gives it."""
    root.mkdir(parents=True)
    with FakeUpstream() as upstream:
        sample = make_sample_index(upstream)
        mirror = Mirror(root=root, upstream=upstream)
        mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n")
        mirror.run("sync", check=True)
        server = start_server(root)
        try:
            yield mirror, server, sample
        finally:
            stop_server(server)
