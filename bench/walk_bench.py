"""Dependency walk: how the sync's walk of one project grows with its number of releases.

``python bench/walk_bench.py [--releases 500,1000,2000,4000]`` walks a project of N releases of
two wheels each (every release chosen, its dependencies followed) with gitmirror's ``Resolver``,
in one process, from pages and core metadata held in memory: no network, no store, only the
walk's own work, which runs on the sync's event loop and holds up every other project's pages
and files while it runs. Projects of this size are common upstream (a cloud SDK publishes a
release most working days). There is no peer: each row compares N with N/2, and a growth ratio
near 2.0 is linear, near 4.0 quadratic (before ``closure._by_version`` each release's files were
picked out of the whole page: 4,000 releases took 2.06 s, 4.4 times as long as 2,000).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, Table  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402

from gitmirror.model.page import RemoteFile, RemoteProject  # noqa: E402
from gitmirror.storage.metadata import CoreMetadata  # noqa: E402
from gitmirror.sync.closure import Resolver  # noqa: E402
from gitmirror.sync.roots import Root, Roots  # noqa: E402
from gitmirror.sync.selection import Rules  # noqa: E402

SHA = "cd" * 32


def big_project(releases: int) -> RemoteProject:
    files = [
        RemoteFile(
            filename=f"big-1.{number}-{tag}.whl",
            url=f"https://files.example/big-1.{number}-{tag}.whl",
            version=f"1.{number}",
            sha256=SHA,
            size=100_000,
            requires_python=">=3.8",
            upload_time=None,
            yanked=False,
            core_metadata=SHA,
            metadata_url=None,
        )
        for number in range(releases)
        for tag in ("py3-none-any", "cp312-cp312-manylinux_2_17_x86_64")
    ]
    return RemoteProject(name="big", files=files)


class Pages:
    def __init__(self, project: RemoteProject) -> None:
        self.project = project

    async def get(self, name: str) -> RemoteProject:
        return self.project


class Metadata:
    """Each release's core metadata as parsed (what the metadata cache holds): one dependency."""

    async def get(self, project: str, version: str, files: list[RemoteFile], chosen: set[str]) -> CoreMetadata:
        assert files, version
        return CoreMetadata(name=project, version=version, requires_dist=("big>=1.0",))


def walk_seconds(releases: int) -> float:
    """Seconds to walk the project: the best of three, as the host's speed moves."""
    project, best = big_project(releases), float("inf")
    for _ in range(3):
        resolver = Resolver(Rules(), Pages(project), Metadata(), follow=True)  # type: ignore[arg-type]
        roots = Roots(requirements=[Root(Requirement("big"), "bench")])
        start = time.perf_counter()
        choices = asyncio.run(resolver.resolve(roots))
        best = min(best, time.perf_counter() - start)
        assert len(choices["big"].files) == 2 * releases
    return best


def run(sizes: tuple[int, ...]) -> Table:
    table = Table(
        f"Dependency walk of one project of N releases (2 wheels each), N = {', '.join(map(str, sizes))}; "
        "peer column = time at N/2, ratio = growth when N doubles (2.0 = linear)"
    )
    previous = None
    for releases in sizes:
        seconds = walk_seconds(releases)
        table.rows.append(
            Row(
                f"walk of N releases, N={releases:,}",
                f"N={releases // 2:,}" if previous else "-",
                previous,
                seconds,
                "s",
                note=f"{seconds / releases * 1e6:.0f} us per release",
            )
        )
        previous = seconds
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", default="500,1000,2000,4000", help="comma-separated N, each double the last")
    args = parser.parse_args()
    print(run(tuple(int(n) for n in args.releases.split(","))).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
