"""Run gitmirror's benchmarks against its peers and print one table per stage.

    python bench/run.py [--quick] [--only sync,serve,git,store] [--record]

``--quick`` (under 2 minutes) is for before/after comparisons of a change; the full run is what
bench/RESULTS.md records (``--record`` rewrites its results section with this run's tables).
Peers that are not installed are reported with the command that installs them, never a crash.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import git_bench  # noqa: E402
import serve_bench  # noqa: E402
import store_bench  # noqa: E402
import sync_bench  # noqa: E402
from common import Table, run_as_installed  # noqa: E402
from upstream import ONE_MB_PROJECT  # noqa: E402

STAGES = ("sync", "serve", "git", "store")
RESULTS = Path(__file__).parent / "RESULTS.md"
MARKER = "<!-- results below are written by `python bench/run.py --record` -->"


def machine() -> str:
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    total = memory[1].split()[1] if len(memory) > 1 else "?"
    tools = []
    for tool, args in (("nginx", ["-v"]), ("wrk", ["-v"]), ("git", ["--version"])):
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
        if path:
            out = subprocess.run([path, *args], capture_output=True, text=True)
            tools.append((out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) else tool)
    peers = []
    for package in ("bandersnatch", "pypiserver"):
        pip = Path(os.environ.get("GITMIRROR_BENCH_PEERS", "/tmp/bench-peers")) / "bin" / "pip"
        if pip.exists():
            out = subprocess.run([str(pip), "show", package], capture_output=True, text=True).stdout
            version = next((line.split()[1] for line in out.splitlines() if line.startswith("Version:")), None)
            if version:
                peers.append(f"{package} {version}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores (nproc), {total} memory, load average {load} at start, "
        f"{platform.platform()}, Python {platform.python_version()}"
        f"; {'; '.join(tools + peers)}"
    )


def one_mb_file(catalog: dict) -> tuple[str, str]:
    project = next(p for p in catalog["projects"] if p["name"] == ONE_MB_PROJECT)
    return ONE_MB_PROJECT, project["files"][0]["filename"]


def record(tables: list[Table], header: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{MARKER}\n"
    before = text.split(MARKER)[0] if MARKER in text else text + "\n"
    RESULTS.write_text(before + MARKER + "\n\n" + header + "\n" + "\n".join(t.markdown() for t in tables))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data set, short runs: under 2 minutes")
    parser.add_argument("--only", default=",".join(STAGES), help="comma-separated stages: sync,serve,git,store")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/gitmirror-bench"),
        help="scratch space (the generated upstream is kept here and reused)",
    )
    parser.add_argument("--record", action="store_true", help="write the tables into bench/RESULTS.md")
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; known: {', '.join(STAGES)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = (
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, `{command.strip()}`\n\nMachine: {machine()}\n"
    )
    print(header)
    not_installed = run_as_installed(args.workdir)
    if not_installed:
        print(f"gitmirror runs from the development environment's editable install: {not_installed}", flush=True)
    try:
        tables = run_stages(args, stages)
    finally:
        sync_bench.clean_up(args.workdir)  # last: every stage after the sync would pay for the freed inodes
    elapsed = time.perf_counter() - began
    print(f"total {elapsed:.0f} s")
    if args.record:
        record(tables, header + f"\nTotal wall time of the run: {elapsed:.0f} s\n")
        print(f"recorded in {RESULTS}")
    return 0


def run_stages(args: argparse.Namespace, stages: list[str]) -> list[Table]:
    tables: list[Table] = []
    mirror_dir = args.workdir / "gitmirror-mirror"
    _, catalog = sync_bench.prepare(args.workdir, args.quick)
    if "sync" in stages:
        table, mirror_dir = sync_bench.run(args.workdir, args.quick)
        tables.append(table)
        print(table.markdown(), flush=True)
    if "serve" in stages:
        if not ((mirror_dir / "repo").exists() and (mirror_dir / "store").exists()):
            print("serve: no synced mirror yet, running the sync stage first", flush=True)
            _, mirror_dir = sync_bench.run(args.workdir, args.quick)
        table = serve_bench.run(mirror_dir, args.workdir, args.quick, one_mb_file(catalog))
        tables.append(table)
        print(table.markdown(), flush=True)
    if "git" in stages:
        table = git_bench.run(args.workdir, args.quick)
        tables.append(table)
        print(table.markdown(), flush=True)
    if "store" in stages:
        table = store_bench.run(args.workdir, args.quick)
        tables.append(table)
        print(table.markdown(), flush=True)
    return tables


if __name__ == "__main__":
    sys.exit(main())
