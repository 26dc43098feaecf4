"""A/B: `gitmirror serve` of two revisions against nginx over the rendered site, taking turns.

``python bench/serve_ab.py MIRROR_DIR REV_A REV_B [--rounds 5] [--seconds 5]`` serves the synced
mirror in ``MIRROR_DIR`` (a bench run's ``gitmirror-mirror``) with each revision and nginx (one
worker) over its ``gitmirror render`` output, all up at once, and measures ``/simple/<project>/``
as HTML and as JSON with ``wrk -t1 -c32`` on each in turn, the order rotating every round. It
prints every measure, each contestant's median req/s and CPU per request (its server processes'
CPU time over the requests answered), and A's and B's medians against nginx's (the target ratio,
bench/RESULTS.md). CPU per request holds on a busy shared machine where req/s swings with the
neighbours; nginx's over a contestant's is the req/s ratio of two servers bound by one core each.
``WORKTREE`` as a revision is the working tree as it is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from ab import environment, source_tree
from common import PYTHON, free_port, nginx_running, process_cpu, running
from serve_bench import HTML, JSON, SITE_SERVER, render_static, wrk

PROJECT = "bench-0001"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirror", type=Path, help="a synced mirror directory (its mirror.yaml, repo, store)")
    parser.add_argument("a", help="revision A (a commit, a branch, WORKTREE)")
    parser.add_argument("b", help="revision B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="per measure")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gitmirror-bench"))
    args = parser.parse_args()
    mirror = args.mirror.resolve()
    results: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # us per request
    with ExitStack() as servers:
        site = args.workdir / "serve-ab-site"
        render_static(mirror, site)
        port = free_port()
        served = SITE_SERVER.format(port=port, site=site)
        urls, pids = {}, {}
        urls["nginx"], pids["nginx"] = servers.enter_context(
            nginx_running(args.workdir / "nginx", port, served, "/simple/")
        )
        for label, revision in (("A", args.a), ("B", args.b)):
            port = free_port()
            env = environment(source_tree(revision, args.workdir / label))
            command = [PYTHON, "-m", "gitmirror", "serve", "--port", str(port), "--config", str(mirror / "mirror.yaml")]
            urls[label] = f"http://127.0.0.1:{port}"
            pids[label] = [servers.enter_context(running(command, urls[label] + "/simple/", cwd=mirror, env=env)).pid]
        order = ["nginx", "A", "B"]
        for number in range(args.rounds):
            turn = order[number % 3 :] + order[: number % 3]
            for kind, accept in (("HTML", HTML), ("JSON", JSON)):
                line = []
                for label in turn:
                    before = process_cpu(pids[label])
                    load = wrk(f"{urls[label]}/simple/{PROJECT}/", args.seconds, accept)
                    per_request = (process_cpu(pids[label]) - before) / load.requests * 1e6
                    results.setdefault((label, kind), []).append(load.rps)
                    cpu.setdefault((label, kind), []).append(per_request)
                    line.append(f"{label} {load.rps:,.0f} ({per_request:.1f} us)")
                print(f"round {number + 1} {kind}: " + ", ".join(line), flush=True)
    for kind in ("HTML", "JSON"):
        nginx_rps, a, b = (statistics.median(results[(label, kind)]) for label in ("nginx", "A", "B"))
        print(
            f"{kind}: nginx {nginx_rps:,.0f}, A {a:,.0f} ({a / nginx_rps:.2f}), B {b:,.0f} ({b / nginx_rps:.2f})"
            f" req/s; B / A {b / a:.3f}"
        )
        nginx_us, a_us, b_us = (statistics.median(cpu[(label, kind)]) for label in ("nginx", "A", "B"))
        print(
            f"{kind} CPU per request: nginx {nginx_us:.1f}, A {a_us:.1f} ({nginx_us / a_us:.2f}),"
            f" B {b_us:.1f} ({nginx_us / b_us:.2f}) us; B / A {b_us / a_us:.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
