"""Pages and release files fetched in worker processes: a cold sync's work off the sync's interpreter lock.

A worker fetches through ``transport.Transport`` (host policy, redirects, trust, proxies, limits),
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

import gc
import os
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model.hosts import HostPolicy
from ..model.limits import Limits
from ..model.page import MAX_PAGE_BYTES, RemoteProject, UpstreamError, project_from
from ..storage.metadata import WheelMetadata, from_wheel, keep_pep658, read_stored_wheel, wheel_metadata
from ..storage.store import BlobStore, BlobWriter
from .fork_server import PRELOAD
from .transport import FetchError, Transient, Transport, stream_checked

if TYPE_CHECKING:
    import asyncio
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess
    from pathlib import Path


#: most jobs handed to a worker in one message (``DownloadProcesses._hand_out``)
BATCH_FILES = 8
#: most bytes of files announced in one message; a larger file goes alone
BATCH_BYTES = 4 << 20

_Job = tuple[str, tuple[Any, ...]]
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
        import asyncio  # the sync's, imported already; the fork server need not (48 ms of its start)
        import multiprocessing  # 0.05 s that a run without downloads need not pay

        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._limit = processes
        self._start_args = (hosts, timeout, limits or Limits(), os.getpid())
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._queue: deque[tuple[_Job, asyncio.Future[Any]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._started = 0
        self._starting = 0  # asked of the helper thread, not joined yet
        self._failed: BaseException | None = None
        self._closed = False
        self._spawned: list[_Worker] = []  # every worker started, joined or not, for close()
        self._start_requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._starter = threading.Thread(target=self._start_workers, name="gitmirror-workers-start", daemon=True)
        self._starter.start()

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

    def _hand_out(self) -> list[tuple[_Job, asyncio.Future[Any]]]:
        """The next job, and the jobs of its kind after it (pages, or files up to ``BATCH_BYTES``)
        while many more wait than there are workers: one message there and one answer back.

        Each message and each answer cost both processes system calls and a wake-up. Pages and
        files do not share a message, so a page the walk waits for does not wait for files. When
        few jobs are left they go one by one: no worker holds several while another has none.
        """
        handed: list[tuple[_Job, asyncio.Future[Any]]] = []
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
        process = self._context.Process(target=_serve, args=(theirs, *self._start_args, self._started), daemon=True)
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
        self._idle.append(worker)
        self._dispatch()

    def _start_failed(self, exc: BaseException) -> None:
        self._starting -= 1
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


# -- in the worker -------------------------------------------------------------------------------

_stores: dict[str, BlobStore] = {}


def _serve(
    pipe: Connection,
    hosts: HostPolicy,
    timeout: float,
    limits: Limits,
    owner: int,
    number: int,
) -> None:
    _exit_with(owner)
    gc.freeze()  # the modules the fork server imported: never garbage (each worker collected 100 times)
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    fetcher = Transport(hosts, timeout, limits, connections=4)  # one job at a time; an index and a file host
    unnamed = _Unnamed()
    while True:
        try:
            jobs: list[_Job] = pipe.recv()
        except (EOFError, OSError):
            return
        answers: list[tuple[bool, Any]] = []
        for number, (kind, args) in enumerate(jobs):
            unnamed.job = number
            try:
                answers.append((True, _JOBS[kind](fetcher, unnamed, *args)))
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the sync, which words it
                answers.append((False, exc))
        unnamed.publish()  # before the answer: the sync records only blobs that are stored
        for number, failure in unnamed.take_failures().items():
            if answers[number][0]:
                answers[number] = (False, failure)
        try:
            pipe.send(answers)
        except (EOFError, OSError):
            return
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its words do
            pipe.send([(ok, value if ok else _in_words(value)) for ok, value in answers])


def _in_words(exc: BaseException) -> RuntimeError:
    return RuntimeError(f"{type(exc).__name__}: {exc}")


class _Unnamed:
    """The blobs a message's jobs wrote and checked, not yet durable nor named: made durable together
    (``BlobStore.sync_all``, one ``syncfs``) and then named, before the message is answered.

    One ``syncfs`` per message costs less than a fsync per blob. Every blob is still on disk before
    it has a name, and a job is answered only once its blob is named. Where there is no ``syncfs``,
    each is fsynced.
    """

    def __init__(self) -> None:
        self.job = 0  # the message's job being run: what ``add`` files a blob under
        self._writers: list[tuple[int, BlobWriter]] = []
        self._failures: dict[int, BaseException] = {}
        self._handles: dict[Path, int | None] = {}  # per store, open for this process's life

    def writer(self, store: BlobStore, sha256: str, size: int | None) -> BlobWriter:
        """A writer for a blob of ``store``, whose file system's write-back errors from now on are
        reported by ``publish`` (``BlobStore.sync_handle``, opened before the first blob)."""
        if store.root not in self._handles:
            self._handles[store.root] = store.sync_handle()
        return store.writer(sha256, size)

    def add(self, writer: BlobWriter) -> None:
        """A checked blob of the current job, to be made durable and named by ``publish``."""
        self._writers.append((self.job, writer))

    def publish(self) -> None:
        """Make every blob added so far durable, then name it; a failure is its job's."""
        writers, self._writers = self._writers, []
        stores = {writer.store.root: writer.store for _job, writer in writers}
        handles = [(store, self._handles[root]) for root, store in stores.items()]
        durable = all(handle is not None for _store, handle in handles)  # else: a fsync per blob
        try:
            for store, handle in handles:
                if handle is not None:
                    store.sync_all(handle)
        except OSError as exc:  # nothing can be trusted to be on disk: no blob gets its name
            for job, writer in writers:
                writer.abort()
                self._failures.setdefault(job, exc)
            return
        for job, writer in writers:
            try:
                writer.publish(durable=durable)
            except Exception as exc:  # noqa: BLE001 - the job's failure, answered by ``_serve``
                self._failures.setdefault(job, exc)

    def failure(self) -> BaseException | None:
        """What publishing the current job's blob raised, if anything."""
        return self._failures.get(self.job)

    def take_failures(self) -> dict[int, BaseException]:
        failures, self._failures = self._failures, {}
        return failures


def _store_file(fetcher: Transport, unnamed: _Unnamed, store_root: str, url: str, sha256: str, size: int | None) -> int:
    writer = unnamed.writer(_store(store_root), sha256, size)
    stream_checked(fetcher.fetch, url, writer)
    unnamed.add(writer)
    return writer.size


def _store_wheel(
    fetcher: Transport,
    unnamed: _Unnamed,
    store_root: str,
    url: str,
    sha256: str,
    size: int | None,
    metadata_sha256: str | None,
) -> tuple[int, WheelMetadata]:
    """A wheel stored, and its METADATA read from the bytes just verified where the whole wheel is
    still in the fetcher's buffer; from the stored file, named at once, where it was larger."""
    store = _store(store_root)
    writer = unnamed.writer(store, sha256, size)
    body = stream_checked(fetcher.fetch, url, writer)
    unnamed.add(writer)
    if body is not None:
        inside = from_wheel(body)
        wheel = wheel_metadata(inside, metadata_sha256)
        if inside is not None and metadata_sha256 is not None and keep_pep658(store, wheel, metadata_sha256):
            pep658 = unnamed.writer(store, metadata_sha256, len(inside))
            pep658.write(inside)
            pep658.check()
            unnamed.add(pep658)  # a blob of its own, made durable and named with the wheel
        return writer.size, wheel
    unnamed.publish()
    if (failure := unnamed.failure()) is not None:
        raise failure
    return writer.size, read_stored_wheel(store, sha256, metadata_sha256)


def _store(root: str) -> BlobStore:
    return _stores.get(root) or _stores.setdefault(root, BlobStore(root))


def _project(
    fetcher: Transport, _unnamed: _Unnamed, name: str, url: str, headers: dict[str, str]
) -> RemoteProject | None:
    try:
        answer = fetcher.get_page(url, headers, MAX_PAGE_BYTES)
    except FetchError as exc:
        raise UpstreamError(f"{name}: {exc}") from None
    return project_from(name, answer)


_JOBS: dict[str, Callable[..., Any]] = {"file": _store_file, "wheel": _store_wheel, "page": _project}


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
