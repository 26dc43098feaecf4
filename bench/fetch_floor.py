"""The floor of a verified download in Python: what gitmirror's cold sync would take with nothing
of a mirror around its downloads.

``python bench/fetch_floor.py ORIGIN CATALOG OUTPUT`` downloads every release file of the
catalog from ``ORIGIN`` (``http://127.0.0.1:PORT``, the bench's upstream) in as many processes as
gitmirror's sync uses, each on one kept-alive connection: a raw ``GET``, the body read into one
page-aligned 1 MiB buffer, hashed with sha256 and checked, written (``O_DIRECT`` from 1 MiB, as
gitmirror's store does), fsynced. No pages, no HTTP library, no dependency walk, no manifests,
no git, no job hand-outs: each process takes every n-th file of a list sorted by size.

The local copy is the physical limit of moving the bytes; this is the limit of moving *and
verifying* them the way gitmirror is built (processes, Python, sha256, one file each). The bench
prints gitmirror's cold sync against both.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import multiprocessing
import os
import socket
import sys
from urllib.parse import urlsplit

PROCESSES = 8  # gitmirror's default concurrency, as the bench configures both mirrors
BUFFER = 1 << 20
DIRECT_FROM = 1 << 20
ALIGN = 4096


def files_of(catalog_path: str) -> list[tuple[str, str, int]]:
    with open(catalog_path) as handle:
        catalog = json.load(handle)
    # the layout of ``upstream._file_url``, written out: importing upstream.py adds 0.1 s to the timed run
    files = [
        (f"/packages/{project['name']}/{entry['filename']}", entry["sha256"], entry["size"])
        for project in catalog["projects"]
        for entry in project["files"]
    ]
    return sorted(files, key=lambda item: -item[2])


def download_share(origin: str, files: list[tuple[str, str, int]], output: str) -> None:
    parts = urlsplit(origin)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connection = socket.create_connection((host, port))
    buffer = memoryview(mmap.mmap(-1, BUFFER))
    for path, sha256, size in files:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            received = connection.recv(4096)
            if not received:
                raise SystemExit(f"{path}: connection closed")
            head += received
        head, body_start = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"{path}: {head.splitlines()[0].decode()}")
        lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        length = int(lengths[0].split(b":")[1])
        if length != size:
            raise SystemExit(f"{path}: {length} bytes, the catalog says {size}")
        digest = hashlib.sha256()
        direct = size >= DIRECT_FROM
        fd = os.open(os.path.join(output, sha256), os.O_CREAT | os.O_WRONLY | (os.O_DIRECT if direct else 0), 0o644)
        buffer[: len(body_start)] = body_start
        filled, left = len(body_start), length - len(body_start)
        while left or filled:
            while left and filled < BUFFER:
                received = connection.recv_into(buffer[filled:], min(left, BUFFER - filled))
                if not received:
                    raise SystemExit(f"{path}: truncated")
                filled, left = filled + received, left - received
            chunk = buffer[:filled]
            digest.update(chunk)
            if direct and filled % ALIGN:  # the last piece: O_DIRECT writes whole aligned blocks only
                direct = False
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            written = 0
            while written < filled:
                written += os.write(fd, chunk[written:])
            filled = 0
        if digest.hexdigest() != sha256:
            raise SystemExit(f"{path}: sha256 mismatch")
        os.fsync(fd)
        os.close(fd)


def main() -> None:
    origin, catalog_path, output = sys.argv[1:4]
    os.makedirs(output)
    files = files_of(catalog_path)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=download_share, args=(origin, files[number::PROCESSES], output))
        for number in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [worker.exitcode for worker in workers if worker.exitcode]
    if failed:
        raise SystemExit(f"{len(failed)} download process(es) failed")


if __name__ == "__main__":
    main()
