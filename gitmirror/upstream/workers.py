"""Pages and release files fetched in worker processes: a cold sync's work off the sync's interpreter lock.

This module is the sync's side (``DownloadProcesses``); ``worker_process`` is the loop each process
runs. A worker fetches through ``transport.Transport`` (host policy, redirects, trust, proxies, limits),
hashes and checks as the bytes arrive, makes a message's blobs durable together (``_Unnamed``) and
names them (``store.BlobWriter``); or fetches and parses a project page (``page.project_from``).
It answers with the result or the ``Transient``/``FetchError``/``IntegrityError``/``UpstreamError``
the sync turns into one line per file or project. Why processes: downloads in the sync's threads
waited for the interpreter lock its event loop, page parsing and dependency walk hold.

Workers start from a fork server (``fork_server``) only once a run asks for a page or a file. Each
has one pipe, read by the event loop itself (``add_reader``): no helper threads in the sync. While
many jobs wait, a message carries several (``DownloadProcesses._hand_out``), each job still with
its own future, retries and failure.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model.hosts import HostPolicy
from ..model.limits import Limits
from ..model.page import RemoteProject
from ..storage.metadata import WheelMetadata
from .fork_server import PRELOAD
from .transport import Transient
from .worker_process import Job, serve

if TYPE_CHECKING:
    import asyncio
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess


#: most jobs handed to a worker in one message (``DownloadProcesses._hand_out``)
BATCH_FILES = 8
#: most bytes of files announced in one message; a larger file goes alone
BATCH_BYTES = 4 << 20

#: where a file job's arguments (``store_file``'s and ``store_wheel``'s) hold its announced size
_SIZE_ARGUMENT = 3


@dataclass
class _Worker:
    process: BaseProcess
    pipe: Connection
    waiting: list[asyncio.Future[Any]] = field(default_factory=list)


class DownloadProcesses:
    """``processes`` workers for one event loop; create it on that loop, when a run first needs one.

    Workers are started as jobs wait for them (a run that asks for three pages starts three), by a
    helper thread, so the event loop keeps handing out and collecting work while the fork server
    starts. Jobs queue meanwhile; each worker takes them as it joins. A worker that dies is
    replaced the same way.
    """

    def __init__(self, processes: int, hosts: HostPolicy, timeout: float, limits: Limits | None = None) -> None:
        import asyncio  # the sync's, imported already; the fork server need not import it
        import multiprocessing  # imported when the first download needs it: a run without downloads never pays it

        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._limit = processes
        self._start_args = (hosts, timeout, limits or Limits(), os.getpid())
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._queue: deque[tuple[Job, asyncio.Future[Any]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._started = 0
        self._starting = 0  # asked of the helper thread, not joined yet
        self._failed: BaseException | None = None
        self._closed = False
        self._spawned: list[_Worker] = []  # every worker started, joined or not, for close()
        self._start_requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._joining: list[asyncio.Future[None]] = []  # ``start`` waiting for a worker to join
        self._starter = threading.Thread(target=self._start_workers, name="gitmirror-workers-start", daemon=True)
        self._starter.start()

    async def start(self) -> None:
        """Start every worker now rather than as jobs come (a server's first request need not wait for
        them); returns once one has joined, raises when none could start."""
        wanted = self._limit - len(self._workers) - self._starting
        for _ in range(wanted if not self._closed else 0):
            self._starting += 1
            self._start_requests.put(True)
        while not self._workers and self._starting and self._failed is None and not self._closed:
            joined = self._loop.create_future()
            self._joining.append(joined)
            await joined
        if self._failed is not None:
            raise self._failed

    def _wake_start(self) -> None:
        joining, self._joining = self._joining, []
        for joined in joining:
            if not joined.done():
                joined.set_result(None)

    async def store_file(self, store_root: str, url: str, sha256: str, size: int | None) -> int:
        """Have a worker download ``url`` into the store; returns the bytes stored."""
        return await self._run("file", (store_root, url, sha256, size))

    async def store_wheel(
        self, store_root: str, url: str, sha256: str, size: int | None, metadata_sha256: str | None
    ) -> tuple[int, WheelMetadata]:
        """``store_file``, then the wheel's core metadata read where its bytes are (``read_stored_wheel``)."""
        return await self._run("wheel", (store_root, url, sha256, size, metadata_sha256))

    async def project(self, name: str, url: str, headers: dict[str, str]) -> RemoteProject | None:
        """A worker's fetch and parse of a project page (``Upstream.project``); ahead of every file,
        as the walk that chooses the files waits for pages."""
        return await self._run("page", (name, url, headers), first=True)

    async def _run(self, kind: str, args: tuple[Any, ...], first: bool = False) -> Any:
        if self._failed is not None:
            raise self._failed
        future: asyncio.Future[Any] = self._loop.create_future()
        if first:
            self._queue.appendleft(((kind, args), future))
        else:
            self._queue.append(((kind, args), future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            worker = self._idle.pop()
            handed = self._hand_out()
            if not handed:  # every job left was cancelled meanwhile
                self._idle.append(worker)
                break
            try:
                worker.pipe.send([job for job, _future in handed])
            except OSError:  # died while idle, its end-of-file not read yet: the jobs wait for another
                self._forget(worker)
                self._queue.extendleft(reversed(handed))
                continue
            worker.waiting = [future for _job, future in handed]
        wanted = min(len(self._queue), self._limit - len(self._workers) - self._starting)
        for _ in range(wanted if not self._closed else 0):
            self._starting += 1
            self._start_requests.put(True)

    def _hand_out(self) -> list[tuple[Job, asyncio.Future[Any]]]:
        """The next job, and the jobs of its kind after it (pages, or files up to ``BATCH_BYTES``)
        while many more wait than there are workers: one message there and one answer back.

        Each message and each answer cost both processes system calls and a wake-up. Pages and
        files do not share a message, so a page the walk waits for does not wait for files. When
        few jobs are left they go one by one: no worker holds several while another has none.
        """
        handed: list[tuple[Job, asyncio.Future[Any]]] = []
        limit = max(1, min(BATCH_FILES, len(self._queue) // (2 * max(1, len(self._workers)))))
        pages, size = False, 0
        while self._queue and len(handed) < limit:
            job, future = self._queue[0]
            if future.done():  # cancelled meanwhile
                self._queue.popleft()
                continue
            kind, args = job
            weight = 0 if kind == "page" else args[_SIZE_ARGUMENT]
            if weight is None:  # no size announced: it goes alone
                weight = BATCH_BYTES
            if handed and ((kind == "page") != pages or size + weight > BATCH_BYTES):
                break
            self._queue.popleft()
            handed.append((job, future))
            pages, size = kind == "page", size + weight
        return handed

    def _start_workers(self) -> None:
        """In the helper thread: start a worker per request; each joins on the loop's thread."""
        while self._start_requests.get() and not self._closed:
            try:
                worker = self._spawn()
            except BaseException as exc:  # noqa: BLE001 - reported to the waiting jobs
                self._loop.call_soon_threadsafe(self._start_failed, exc)
            else:
                self._loop.call_soon_threadsafe(self._joined, worker)

    def _spawn(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        self._started += 1
        process = self._context.Process(target=serve, args=(theirs, *self._start_args, self._started), daemon=True)
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._spawned.append(worker)
        return worker

    def _joined(self, worker: _Worker) -> None:
        self._starting -= 1
        if self._closed:
            return
        self._workers.append(worker)
        self._loop.add_reader(worker.pipe.fileno(), self._answered, worker)
        # uvloop (libuv) makes a watched descriptor non-blocking: a message longer than the socket's
        # buffer (a page of many files) would then end in EAGAIN half read, and look like a dead worker
        os.set_blocking(worker.pipe.fileno(), True)
        self._idle.append(worker)
        self._wake_start()
        self._dispatch()

    def _start_failed(self, exc: BaseException) -> None:
        self._starting -= 1
        self._wake_start()
        if self._workers or self._starting:
            return  # fewer workers than asked for, but working ones
        self._failed = RuntimeError(f"cannot start download processes: {exc}")
        for _job, future in self._queue:
            if not future.done():
                future.set_exception(self._failed)
        self._queue.clear()

    def _answered(self, worker: _Worker) -> None:
        futures, worker.waiting = worker.waiting, []
        try:
            answers: list[tuple[bool, Any]] = worker.pipe.recv()
        except (EOFError, OSError):  # the worker is gone (killed): its jobs are tried again elsewhere
            self._forget(worker)
            for future in futures:
                if not future.done():
                    future.set_exception(Transient("download process ended"))
        else:
            for future, (ok, value) in zip(futures, answers, strict=True):
                if not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            self._idle.append(worker)
        self._dispatch()

    def _forget(self, worker: _Worker) -> None:
        self._loop.remove_reader(worker.pipe.fileno())
        worker.pipe.close()
        self._workers.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)

    def close(self) -> None:
        """Stop every worker (on the loop's thread): a closed pipe is their signal to leave."""
        self._closed = True
        self._wake_start()
        for _job, future in self._queue:
            future.cancel()
        self._queue.clear()
        self._start_requests.put(False)
        self._starter.join()
        for worker in list(self._workers):
            self._forget(worker)
        for worker in self._spawned:
            worker.pipe.close()  # also those whose joining was still on its way
        for process in (worker.process for worker in self._spawned):
            process.join(timeout=5)
            if process.is_alive():  # still inside a download nobody waits for, or never given a pipe's end
                process.terminate()
                process.join(timeout=5)
