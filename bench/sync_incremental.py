"""Cold sync vs. re-sync of an unchanged selection of N projects against the local fake upstream.

Usage: python bench/sync_incremental.py [--projects 500] [--files 2]

The re-sync must cost one conditional request (HTTP 304) per project and download nothing; the
figures printed are wall-clock times of the real CLI (one subprocess per run) and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import isolated_env  # noqa: E402
from fakeupstream import FakeUpstream, build_sdist, build_wheel  # noqa: E402


def run_sync(root: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "gitmirror", "sync", "--json"],
        cwd=root,
        env=isolated_env(),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sync failed ({result.returncode}):\n{result.stderr}")
    return elapsed, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with FakeUpstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        names = [f"bench-project-{i:04d}" for i in range(args.projects)]
        for index, name in enumerate(names):
            deps = [names[index - 1]] if index % 5 else []  # some dependency edges for the closure walk
            upstream.add(name, build_wheel(name, "1.0", requires_dist=deps))
            upstream.add(name, build_sdist(name, "1.0"))
        root = Path(tmp)
        (root / "mirror.yaml").write_text(
            f"upstream: {upstream.url}\nconcurrency: {args.concurrency}\nprojects:\n"
            + "".join(f"  - {name}\n" for name in names)
        )
        cold, _ = run_sync(root)
        before = len(upstream.requests)
        warm, summary = run_sync(root)
        warm_requests = upstream.requests[before:]
        statuses = sorted({record.status for record in warm_requests})
        print(f"projects: {args.projects}, files: {2 * args.projects}")
        print(f"cold sync:  {cold:6.2f} s")
        print(f"re-sync:    {warm:6.2f} s  ({len(warm_requests)} requests, statuses {statuses})")
        print(f"ratio:      {cold / warm:6.1f}x faster")
        print(summary)


if __name__ == "__main__":
    main()
