"""Release files downloaded in worker processes: the bytes of a cold sync off the sync's interpreter lock.

A cold sync's downloads ran in threads of the sync process, which share one interpreter lock with
the event loop, the page parsing and the dependency walk. Measured on 3,000 files / 2 GB from a
loopback index, each download took 2.5 times as long inside a sync as alone, the threads mostly
waiting for the lock; in processes of their own the whole sync took 6.0 s instead of 8.7-9.0 s
(bench/RESULTS.md).

A worker does what a thread did: fetch (``fetch.FileFetcher``: host policy, redirects, framing),
hash and check as the bytes arrive, fsync, publish by rename (``store.BlobWriter``). It returns the
size stored or raises the same ``Transient``/``FetchError``/``IntegrityError`` the sync maps to one
line per file. Workers start from a fork server that imported only this module (not the sync's
threads, locks or event loop), and only once a run has something to download.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import TYPE_CHECKING

from . import crashpoints
from .fetch import FileFetcher
from .hosts import HostPolicy
from .store import BlobStore
from .tls import USER_AGENT

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

_fetcher: FileFetcher | None = None
_stores: dict[str, BlobStore] = {}


def pool(processes: int, hosts: HostPolicy, timeout: float) -> ProcessPoolExecutor:
    """Up to ``processes`` workers, started as downloads need them."""
    import multiprocessing  # with concurrent.futures.process: 0.1 s a run without downloads need not pay
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=_start,
        initargs=(hosts, timeout, os.getpid(), crashpoints.share()),
    )


def _start(hosts: HostPolicy, timeout: float, owner: int, crash_counts: object) -> None:
    global _fetcher
    _exit_with(owner)
    _fetcher = FileFetcher(hosts, timeout, USER_AGENT)
    crashpoints.adopt(crash_counts, owner)


def _exit_with(owner: int) -> None:
    """Leave at once when the sync is gone (killed, so it never shut the pool down).

    An orphan would wait forever on the task queue (it holds that pipe's write end too), keeping
    the sync's output pipes open and possibly writing into the store under the next run.
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


def store_file(store_root: str, url: str, sha256: str, size: int | None) -> int:
    """Download ``url`` into the store at ``store_root``; returns the bytes stored."""
    assert _fetcher is not None, "runs in a worker started by pool()"
    store = _stores.get(store_root) or _stores.setdefault(store_root, BlobStore(store_root))
    writer = store.writer(sha256, size)
    try:
        _fetcher.fetch(url, writer)
        writer.commit()
        return writer.size
    finally:
        writer.abort()
