"""Blob store: many small blobs published at once by several processes, as a cold sync does.

The peer is the classic atomic write, which the store itself falls back to where the file system has
no unnamed files: a named temporary file in ``tmp/``, fsynced, renamed into place. gitmirror writes
an unnamed file (``O_TMPFILE``) and links it into place. Same store code, same bytes, same fsync per
blob; only the naming differs. Wall time and the processes' CPU time are both reported: on a small
machine a cold sync is CPU-bound, so CPU saved is wall time saved there.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import statistics
import time
from pathlib import Path

from common import Row, Table, remove_tree

from gitmirror.storage.store import BlobStore

PROCESSES = 8  # the default ``concurrency`` of a sync
BLOB_BYTES = 20_000  # a small wheel or a core-metadata file: most blobs of a real mirror


def _store_blobs(root: str, unnamed: bool, count: int, seed: str) -> None:
    store = BlobStore(Path(root))
    store._unnamed = store._unnamed and unnamed  # the named path is the store's own fallback
    base = os.urandom(BLOB_BYTES - 40)
    for number in range(count):
        data = base + f"{seed}-{number:08d}".encode().ljust(40)
        store.put_bytes(data, hashlib.sha256(data).hexdigest())


def publish(root: Path, unnamed: bool, count: int, seed: str) -> tuple[float, float]:
    """(wall s, CPU s of the writing processes) to store ``count`` blobs from each of PROCESSES."""
    BlobStore(root).init()
    os.sync()
    context = multiprocessing.get_context("fork")
    before = os.times()
    start = time.perf_counter()
    workers = [
        context.Process(target=_store_blobs, args=(str(root), unnamed, count, f"{seed}{k}")) for k in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise RuntimeError(f"a writer failed with exit code {worker.exitcode}")
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


def run(workdir: Path, quick: bool) -> Table:
    count = 100 if quick else 400
    rounds = 1 if quick else 5
    base = workdir / "store-bench"
    remove_tree(base)
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for number in range(rounds):  # alternating: the host's speed drifts
        for unnamed in (False, True):
            results[unnamed].append(publish(base / f"{number}-{unnamed}", unnamed, count, f"{number}{unnamed}"))
    remove_tree(base)

    def median(unnamed: bool, index: int) -> float:
        return statistics.median(result[index] for result in results[unnamed])

    total = PROCESSES * count
    table = Table(f"Blob store: {total} blobs of {BLOB_BYTES // 1000} KB from {PROCESSES} processes at once")
    peer = "named temporary + rename"
    table.rows.append(Row("publish wall time", peer, median(False, 0), median(True, 0), "s"))
    table.rows.append(Row("CPU time of the writers", peer, median(False, 1), median(True, 1), "CPU s"))
    table.notes.append(f"medians of {rounds} alternating round(s); every blob hashed, checked and fsynced in both")
    for number in range(rounds):
        (peer_wall, peer_cpu), (ours_wall, ours_cpu) = results[False][number], results[True][number]
        table.notes.append(
            f"round {number + 1}: named {peer_wall:.2f} s ({peer_cpu:.2f} CPU s), "
            f"unnamed {ours_wall:.2f} s ({ours_cpu:.2f} CPU s)"
        )
    return table
