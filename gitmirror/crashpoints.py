"""Test-only crash and pause points: prove that a writer killed anywhere loses nothing.

``GITMIRROR_CRASH_AT=<point>`` makes the process SIGKILL itself when it reaches ``<point>``;
``GITMIRROR_PAUSE_AT=<point>`` makes it SIGSTOP itself there (a test inspects the half-done state,
then sends SIGCONT). ``<point>#<n>`` acts on the n-th time the point is reached (default: the first).
SIGKILL rather than an exception: no ``finally`` block, ``atexit`` handler or buffered write gets a
chance to tidy up, exactly like a power cut or the OOM killer.

When neither variable is set, ``reached`` is a function that returns at once: the points cost one
call each in production. ``POINTS`` lists every point, so a test can parametrize over all of them
and a typo in the variable is an error instead of a test that silently never crashes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

CRASH_VARIABLE = "GITMIRROR_CRASH_AT"
PAUSE_VARIABLE = "GITMIRROR_PAUSE_AT"

# Every named point, in the order a sync reaches them.
POINTS: tuple[str, ...] = (
    "sync.locked",  # the writer lock is held, nothing done yet
    "sync.tmp-cleaned",  # leftovers of earlier runs removed from the store
    "sync.page-fetched",  # a project page arrived and parsed
    "sync.download-start",  # about to download a release file
    "store.tmp-created",  # an empty temporary blob file exists
    "store.chunk-written",  # part of a blob is in its temporary file (during the download)
    "store.verified",  # hash and size checked, not yet fsynced
    "store.fsynced",  # bytes on disk, still under the temporary name
    "store.read-only",  # temporary file made read-only, about to be renamed
    "store.published",  # the blob is visible under its final name
    "sync.file-stored",  # a release file (and its core metadata) is stored
    "sync.project-merged",  # a project's new manifest is built in memory
    "sync.downloads-done",  # every blob of the run is stored, no git object written yet
    "repo.trees-built",  # the commit's trees and blobs exist in memory only
    "repo.object-packing",  # git objects are being streamed into a temporary pack
    "repo.objects-written",  # the pack is complete and indexed, the branch has not moved
    "repo.ref-lock-taken",  # refs/heads/<branch>.lock exists, its content not yet flushed
    "repo.ref-lock-written",  # the lock file holds the new id and is fsynced, not yet renamed
    "repo.ref-moved",  # the branch points at the new commit
    "sync.committed",  # the commit is done, the writer lock still held
)

_TARGETS: dict[str, tuple[str, int, int]] = {}  # point -> (variable, occurrence, signal)
_hits: Counter[str] = Counter()
T = TypeVar("T")


def _parse(variable: str, signum: int) -> None:
    value = os.environ.get(variable)
    if not value:
        return
    point, _, occurrence = value.partition("#")
    if point not in POINTS:
        raise SystemExit(f"gitmirror: error: {variable}={value!r} names no crash point (known: {', '.join(POINTS)})")
    _TARGETS[point] = (variable, int(occurrence or "1"), signum)


SLOTS = 64  # processes that count a point: the sync (slot 0) and its download processes
_shared: Any = None  # hit counts shared with download processes (``share``): slot-major, then "acted" flags
_slot = 0
_owner: int | None = None  # in a download process: the sync it works for
_counting = threading.Lock()  # the threads of one process


def share() -> object | None:
    """Hit counts a sync shares with its download processes (``gitmirror.workers``); None in production.

    ``<point>#<n>`` means the n-th time in the whole sync, whichever process gets there. Each
    process adds to its own slot and reads the sum: no lock between processes, because a process
    killed while holding one (a test kills download processes mid-file) would stop all the others.
    """
    global _shared
    if _TARGETS and _shared is None:
        import multiprocessing

        _shared = multiprocessing.get_context("forkserver").RawArray("q", (SLOTS + 1) * len(POINTS))
        for index, point in enumerate(POINTS):
            _shared[index] = _hits[point]
    return _shared


def adopt(shared: object | None, owner: int, number: int) -> None:
    """In the sync's ``number``-th download process: count with the sync's counts, and kill or
    pause the sync itself.

    A crash there is the sync's crash (both die, like a power cut); a pause stops the sync, which a
    test inspects and resumes as if the point had been reached in it.
    """
    global _shared, _owner, _slot
    _shared, _owner, _slot = shared, owner, 1 + (number - 1) % (SLOTS - 1)  # slot 0 is the sync's


def _due(point: str, wanted: int) -> bool:
    with _counting:
        if _shared is None:
            _hits[point] += 1
            return _hits[point] == wanted
        width, index = len(POINTS), POINTS.index(point)
        _shared[_slot * width + index] += 1
        hits = sum(_shared[slot * width + index] for slot in range(SLOTS))
        if hits < wanted or _shared[SLOTS * width + index]:
            return False
        _shared[SLOTS * width + index] = 1  # two processes may both get here: acting twice is harmless
        return True


def _act(point: str) -> None:
    target = _TARGETS.get(point)
    if target is None or not _due(point, target[1]):
        return
    if _owner is not None:
        os.kill(_owner, target[2])
        if target[2] != signal.SIGKILL:
            return
    os.kill(os.getpid(), target[2])


def _noop(point: str) -> None:
    return None


_parse(CRASH_VARIABLE, signal.SIGKILL)
_parse(PAUSE_VARIABLE, signal.SIGSTOP)

#: Call at a named point: kills or pauses the process when a test asked for it, else does nothing.
reached: Callable[[str], None] = _act if _TARGETS else _noop


class CountingSequence(Sequence[T]):
    """A sequence that reports ``point`` for each item handed out: crash *inside* a bulk write.

    dulwich streams ``add_objects`` input into a temporary pack file one object at a time, so
    iterating through this wrapper puts a crash point between any two objects of that pack.
    """

    def __init__(self, items: Sequence[T], point: str) -> None:
        self._items = items
        self._point = point

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            reached(self._point)
            yield item


def _hook_ref_lock_files() -> None:
    """Put points inside dulwich's lock-file protocol, which has no callback of its own.

    Installed only when a test targets one of these points: production never patches dulwich.
    """
    from dulwich import file as dulwich_file

    original_init = dulwich_file._GitFile.__init__
    original_close = dulwich_file._GitFile.close

    def is_ref(handle: object) -> bool:
        return "/refs/" in str(getattr(handle, "_filename", "")).replace(os.sep, "/")

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, **kwargs)
        if is_ref(self):
            reached("repo.ref-lock-taken")

    def close(self) -> None:  # type: ignore[no-untyped-def]
        if is_ref(self) and not self._closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            reached("repo.ref-lock-written")
        original_close(self)

    dulwich_file._GitFile.__init__ = init  # type: ignore[method-assign]
    dulwich_file._GitFile.close = close  # type: ignore[method-assign]


if {"repo.ref-lock-taken", "repo.ref-lock-written"} & set(_TARGETS):
    _hook_ref_lock_files()
