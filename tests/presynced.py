"""One synced (and served) sample mirror for a module's tests that only read it.

A sync costs a ``gitmirror`` interpreter, its fork server and download processes; a server, one
more interpreter. Tests that only read what a plain sync of the sample index serves (pages, headers,
the wire, refusals that write nothing) share one site per module (``scope="module"``) instead of
each building its own. Tests that change the mirror, its upstream or its server keep the
function-scoped ``mirror`` and ``serve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import Mirror, RunningServer, start_server, stop_server
from fakeupstream import Artifact, FakeUpstream, make_sample_index

#: the ``mirror`` fixture's settings
SAMPLE_PROJECTS = "projects:\n  - demo-pkg\n  - other_lib\n"


@contextmanager
def synced_sample(root: Path, settings: str = SAMPLE_PROJECTS) -> Iterator[tuple[Mirror, dict[str, list[Artifact]]]]:
    """The sample index (on its own upstream, running until the end) synced into ``root`` with
    ``settings``; also yields ``make_sample_index``'s answer, as the ``sample`` fixture gives it."""
    root.mkdir(parents=True)
    with FakeUpstream() as upstream:
        sample = make_sample_index(upstream)
        mirror = Mirror(root=root, upstream=upstream)
        mirror.configure(settings)
        mirror.run("sync", check=True)
        yield mirror, sample


@contextmanager
def served(mirror: Mirror) -> Iterator[RunningServer]:
    """``gitmirror serve`` over ``mirror`` until the end."""
    server = start_server(mirror.root)
    try:
        yield server
    finally:
        stop_server(server)


@contextmanager
def sample_site(root: Path) -> Iterator[tuple[Mirror, RunningServer, dict[str, list[Artifact]]]]:
    """``synced_sample`` with the ``mirror`` fixture's settings, served."""
    with synced_sample(root) as (mirror, sample), served(mirror) as server:
        yield mirror, server, sample
