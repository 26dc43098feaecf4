"""A/B: cold syncs of two revisions of gitmirror, taking turns, against the bench's upstream.

``python bench/ab.py REV_A REV_B [--rounds 14] [--quick]`` syncs the generated upstream (the full
2 GB set, or the quick one) into an empty mirror with each revision, ``--rounds`` times each in
A B / B A order, and prints every run, each side's median, mean, busy CPU and own CPU, how many
rounds B won, and B's median over A's. Own CPU is the CPU time of the sync and every process it
starts (``cpu_of.py``): unlike the machine's busy CPU, other sessions' work on a shared machine
does not count in it.
``WORKTREE`` as a revision is the working tree as it is.

Two ``bench/run.py`` runs cannot compare revisions here: this machine's speed moves by up to 3.5
times within an hour. What else it takes, learnt the hard way (bench/RESULTS.md, items 29, 57, 58):

- Nothing is deleted between runs. Right after a 2 GB store was deleted, every new inode of the
  next minutes costs more (a blob's unnamed file 613 us of CPU instead of 20): a harness that
  removes each run's mirror before the next measures its own deletions. Every run syncs into a new
  directory under a ``chattr +T`` parent, all removed at the end (the free space is checked first).
- Enough rounds: six alternating runs could not tell 5 % apart (a change that read 4.5 % faster
  over six read 4 % slower over fourteen); ``python bench/ab.py HEAD HEAD`` over fourteen read
  0.98, so fourteen resolve about 3 %.
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import PYTHON, REPO_ROOT, quiet_env, remove_tree, upstream_server, wait_for_removals
from sync_bench import cold_run, gitmirror_config, prepare, spread_directories
from upstream import total_bytes

WORKTREE = "WORKTREE"
CPU_OF = str(Path(__file__).parent / "cpu_of.py")


def source_tree(revision: str, workdir: Path) -> Path:
    """A directory holding ``revision``'s ``gitmirror`` package, compiled as an install would be."""
    if revision == WORKTREE:
        tree = workdir / "ab" / "worktree"
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(REPO_ROOT / "gitmirror", tree / "gitmirror", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        found = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        if found.returncode:
            raise SystemExit(f"ab: {revision!r} is not a revision of {REPO_ROOT}")
        tree = workdir / "ab" / found.stdout.strip()[:12]
        if not (tree / "gitmirror").is_dir():
            tree.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "archive", found.stdout.strip(), "gitmirror"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    compileall.compile_dir(tree / "gitmirror", quiet=1)
    return tree


def environment(tree: Path) -> dict[str, str]:
    env = quiet_env(PYTHONPATH=str(tree))
    imported = subprocess.run(
        [PYTHON, "-c", "import gitmirror; print(gitmirror.__file__)"],
        env=env,
        cwd=tree.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not imported.startswith(str(tree)):
        raise SystemExit(f"ab: {tree} does not take precedence: gitmirror comes from {imported}")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help=f"revision A (a commit, a branch, {WORKTREE})")
    parser.add_argument("b", help="revision B")
    parser.add_argument("--rounds", type=int, default=14, help="runs of each revision (default 14)")
    parser.add_argument("--quick", action="store_true", help="the quick set (30 projects, 20 MB)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gitmirror-bench"))
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit("ab: --rounds must be at least 1")

    root, catalog = prepare(args.workdir, args.quick)
    names = [project["name"] for project in catalog["projects"]]
    size = total_bytes(catalog)
    outputs = args.workdir / "ab-runs"
    remove_tree(outputs)  # an interrupted comparison's
    wait_for_removals(wait=not args.quick)
    if why := spread_directories(outputs):
        print(f"note: outputs not spread over the file system ({why})", flush=True)
    needed = 2 * args.rounds * size * 1.1
    if shutil.disk_usage(outputs).free < needed:
        raise SystemExit(f"ab: {args.rounds} rounds need {needed / 1e9:.0f} GB free in {outputs}; use fewer --rounds")

    sides = {
        label: environment(source_tree(revision, args.workdir)) for label, revision in (("A", args.a), ("B", args.b))
    }
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    busy: dict[str, list[float]] = {"A": [], "B": []}
    own: dict[str, list[float]] = {"A": [], "B": []}
    print(f"A = {args.a}, B = {args.b}: {len(names)} projects, {size / 1e6:,.0f} MB, {args.rounds} rounds", flush=True)
    try:
        with upstream_server(root, args.workdir) as (url, upstream_pids):
            for number in range(args.rounds):
                order = ("A", "B") if number % 2 == 0 else ("B", "A")
                for label in order:
                    target = outputs / f"{label}-{number}-{uuid.uuid4().hex[:8]}"
                    config = gitmirror_config(target, url, names)
                    time.sleep(1)
                    counted = target / "cpu.txt"
                    sync = [PYTHON, "-m", "gitmirror", "sync", "--quiet", "--config", str(config)]
                    run = cold_run(
                        [PYTHON, CPU_OF, str(counted), *sync],
                        target,
                        upstream_pids,
                        env=sides[label],
                    )
                    wall, cpu = map(float, counted.read_text().split())  # the sync's wall, not its stragglers'
                    seconds[label].append(wall)
                    busy[label].append(run.cpu)
                    own[label].append(cpu)
                print(
                    f"round {number + 1}: A {seconds['A'][-1]:.2f} s ({own['A'][-1]:.2f} CPU s),"
                    f" B {seconds['B'][-1]:.2f} s ({own['B'][-1]:.2f} CPU s)",
                    flush=True,
                )
    finally:
        remove_tree(outputs)

    for label in ("A", "B"):
        print(
            f"{label}: median {statistics.median(seconds[label]):.2f} s, mean {statistics.mean(seconds[label]):.2f},"
            f" min {min(seconds[label]):.2f}, busy CPU median {statistics.median(busy[label]):.2f} core-s,"
            f" own CPU median {statistics.median(own[label]):.2f} s"
        )
    wins = sum(b < a for a, b in zip(seconds["A"], seconds["B"], strict=True))
    ratio = statistics.median(seconds["B"]) / statistics.median(seconds["A"])
    cpu_ratio = statistics.median(own["B"]) / statistics.median(own["A"])
    print(f"B / A (medians): {ratio:.3f}, own CPU {cpu_ratio:.3f}; B faster in {wins} of {args.rounds} rounds")
    if args.rounds < 14:
        print("note: fewer than 14 rounds cannot tell 5 % apart on this machine (bench/RESULTS.md, item 58)")


if __name__ == "__main__":
    sys.exit(main())
