"""Release files downloaded in worker processes: the bytes of a cold sync off the sync's interpreter lock.

A cold sync's downloads ran in threads of the sync process, which share one interpreter lock with
the event loop, the page parsing and the dependency walk. Measured on 3,000 files / 2 GB from a
loopback index, each download took 2.5 times as long inside a sync as alone, the threads mostly
waiting for the lock (bench/RESULTS.md).

A worker does what a thread did: fetch (``fetch.FileFetcher``: host policy, redirects, framing),
hash and check as the bytes arrive, fsync, publish by rename (``store.BlobWriter``). It answers
with the size stored or the same ``Transient``/``FetchError``/``IntegrityError`` the sync turns
into one line per file. Workers start from a fork server that imported only this module (not the
sync's threads, locks or event loop), and only once a run has something to download.

Each worker has one pipe, read by the event loop itself (``add_reader``): no helper threads. The
standard ``ProcessPoolExecutor`` needs two in the sync process (queue manager and feeder), and
their hand-offs cost a second of the sync's interpreter lock per 3,000 files.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import crashpoints
from .fetch import FileFetcher, Transient, store_with
from .hosts import HostPolicy
from .store import BlobStore
from .tls import USER_AGENT

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

Job = tuple[str, str, str, "int | None"]  # store root, url, sha256, announced size


@dataclass
class _Worker:
    process: BaseProcess
    pipe: Connection
    waiting: asyncio.Future[int] | None = None


class DownloadProcesses:
    """Up to ``processes`` workers, started as downloads need them; use from one event loop."""

    def __init__(self, processes: int, hosts: HostPolicy, timeout: float) -> None:
        import multiprocessing  # 0.05 s that a run without downloads need not pay

        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__])
        self._limit = processes
        self._start_args = (hosts, timeout, os.getpid(), crashpoints.share())
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._queue: deque[tuple[Job, asyncio.Future[int]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = 0

    async def store_file(self, store_root: str, url: str, sha256: str, size: int | None) -> int:
        """Have a worker download ``url`` into the store; returns the bytes stored."""
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = self._loop.create_future()
        self._queue.append(((store_root, url, sha256, size), future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue:
            if self._idle:
                worker = self._idle.pop()
            elif len(self._workers) < self._limit:
                worker = self._start()
            else:
                return
            job, future = self._queue.popleft()
            if future.done():  # cancelled meanwhile
                self._idle.append(worker)
                continue
            worker.waiting = future
            worker.pipe.send(job)

    def _start(self) -> _Worker:
        assert self._loop is not None
        ours, theirs = self._context.Pipe()
        self._started += 1
        process = self._context.Process(target=_serve, args=(theirs, *self._start_args, self._started), daemon=True)
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._workers.append(worker)
        self._loop.add_reader(ours.fileno(), self._answered, worker)
        return worker

    def _answered(self, worker: _Worker) -> None:
        future, worker.waiting = worker.waiting, None
        try:
            ok, value = worker.pipe.recv()
        except (EOFError, OSError):  # the worker is gone (killed): its file is tried again elsewhere
            self._forget(worker)
            if future is not None and not future.done():
                future.set_exception(Transient("download process ended"))
        else:
            if future is not None and not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            self._idle.append(worker)
        self._dispatch()

    def _forget(self, worker: _Worker) -> None:
        assert self._loop is not None
        self._loop.remove_reader(worker.pipe.fileno())
        worker.pipe.close()
        self._workers.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)

    def close(self) -> None:
        """Stop every worker (on the loop's thread): a closed pipe is their signal to leave."""
        for _job, future in self._queue:
            future.cancel()
        self._queue.clear()
        processes = [worker.process for worker in self._workers]
        for worker in list(self._workers):
            self._forget(worker)
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():  # still inside a download nobody waits for
                process.terminate()
                process.join(timeout=5)


# -- in the worker -------------------------------------------------------------------------------

_stores: dict[str, BlobStore] = {}


def _serve(
    pipe: Connection, hosts: HostPolicy, timeout: float, owner: int, crash_counts: object, number: int
) -> None:
    _exit_with(owner)
    crashpoints.adopt(crash_counts, owner, number)
    fetcher = FileFetcher(hosts, timeout, USER_AGENT)
    while True:
        try:
            job: Job = pipe.recv()
        except (EOFError, OSError):
            return
        answer: tuple[bool, Any]
        try:
            answer = (True, _store_file(fetcher, *job))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the sync, which words it
            answer = (False, exc)
        try:
            pipe.send(answer)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle: its words do
            pipe.send((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _store_file(fetcher: FileFetcher, store_root: str, url: str, sha256: str, size: int | None) -> int:
    store = _stores.get(store_root) or _stores.setdefault(store_root, BlobStore(store_root))
    return store_with(fetcher.fetch, url, store.writer(sha256, size))


def _exit_with(owner: int) -> None:
    """Leave at once when the sync is gone (killed, so it never closed the pipe).

    An orphan in the middle of a download would keep the sync's output pipes open and could write
    into the store under the next run.
    """
    try:
        handle = os.pidfd_open(owner)
    except (AttributeError, OSError):  # not Linux >= 5.3: then poll
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _alive(owner):
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="gitmirror-owner-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
