"""One download process: the loop that runs the jobs ``workers.DownloadProcesses`` hands it.

Each message's jobs run in turn through one ``Transport``; the blobs they wrote are made durable
together and named (``Unnamed``) before the message is answered, so the sync records only stored
blobs. The process leaves at once when the sync that owns it is gone.
"""

from __future__ import annotations

import gc
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..model.hosts import HostPolicy
from ..model.limits import Limits
from ..model.page import MAX_PAGE_BYTES, RemoteProject, UpstreamError, project_from
from ..storage.blobs import Blobs, BlobWriting, open_location
from ..storage.metadata import WheelMetadata, from_wheel, keep_pep658, read_stored_wheel, wheel_metadata
from .transport import FetchError, Transport, stream_checked

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from pathlib import Path

#: a message: (job kind, its arguments) each
Job = tuple[str, tuple[Any, ...]]

_stores: dict[str, Blobs] = {}


def serve(
    pipe: Connection,
    hosts: HostPolicy,
    timeout: float,
    limits: Limits,
    owner: int,
    number: int,
) -> None:
    _exit_with(owner)
    gc.freeze()  # the modules the fork server imported are never garbage: no worker's collector walks them
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    fetcher = Transport(hosts, timeout, limits, connections=4)  # one job at a time; an index and a file host
    unnamed = Unnamed()
    while True:
        try:
            jobs: list[Job] = pipe.recv()
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


class Unnamed:
    """The blobs a message's jobs wrote and checked, not yet durable nor named: made durable together
    (``BlobStore.sync_all``, one ``syncfs``) and then named, before the message is answered.

    One ``syncfs`` per message costs less than a fsync per blob. Every blob is still on disk before
    it has a name, and a job is answered only once its blob is named. Where there is no ``syncfs``,
    each is fsynced.
    """

    def __init__(self) -> None:
        self.job = 0  # the message's job being run: what ``add`` files a blob under
        self._writers: list[tuple[int, BlobWriting]] = []
        self._failures: dict[int, BaseException] = {}
        self._handles: dict[Path, int | None] = {}  # per store, open for this process's life

    def writer(self, store: Blobs, sha256: str, size: int | None) -> BlobWriting:
        """A writer for a blob of ``store``, whose file system's write-back errors from now on are
        reported by ``publish`` (``BlobStore.sync_handle``, opened before the first blob)."""
        if store.root not in self._handles:
            self._handles[store.root] = store.sync_handle()
        return store.writer(sha256, size)

    def add(self, writer: BlobWriting) -> None:
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


def _store_file(fetcher: Transport, unnamed: Unnamed, store_root: str, url: str, sha256: str, size: int | None) -> int:
    writer = unnamed.writer(_store(store_root), sha256, size)
    stream_checked(fetcher.fetch, url, writer)
    unnamed.add(writer)
    return writer.size


def store_wheel(
    fetcher: Transport,
    unnamed: Unnamed,
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


def _store(location: str) -> Blobs:
    return _stores.get(location) or _stores.setdefault(location, open_location(location))


def _project(
    fetcher: Transport, _unnamed: Unnamed, name: str, url: str, headers: dict[str, str]
) -> RemoteProject | None:
    try:
        answer = fetcher.get_page(url, headers, MAX_PAGE_BYTES)
    except FetchError as exc:
        raise UpstreamError(f"{name}: {exc}") from None
    return project_from(name, answer)


_JOBS: dict[str, Callable[..., Any]] = {"file": _store_file, "wheel": store_wheel, "page": _project}


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
