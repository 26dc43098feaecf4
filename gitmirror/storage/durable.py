"""Files written together made durable together: one ``syncfs`` of their file system.

The blob store (the blobs of a download process's message) and the metadata repository (the
objects of a commit) both write a group of new files that must be on disk before anything names
them: a blob before its name, a commit's objects before the branch moves to it. One ``syncfs`` for
the group writes the same files as a fsync per file, directory entries included, for a fraction of
the cost. Its price: it also writes what other programs left dirty on that file system, and waits.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path


def handle(directory: Path | str) -> int | None:
    """A handle on ``directory``'s file system for ``sync``; None where there is no ``syncfs`` (not
    Linux). Open it before the files it is to make durable are written: ``syncfs`` reports the
    write-back errors of that file system since its handle was opened (Linux 5.8 and later), so
    none of theirs goes unseen."""
    if _syncfs() is None:
        return None
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def sync(handle: int, where: Path | str) -> None:
    """Write everything dirty on ``handle``'s file system to disk; a failure names ``where``."""
    syncfs = _syncfs()
    assert syncfs is not None, "no handle without syncfs (durable.handle)"
    try:
        syncfs(handle)
    except OSError as exc:  # a failing disk says where: the caller's store or repository
        exc.filename = str(where)
        raise


@functools.cache
def _syncfs() -> Callable[[int], None] | None:
    """libc's ``syncfs`` (Linux), raising ``OSError`` as ``os`` functions do; None where there is
    none. Looked up once per process; ``ctypes`` is imported here, by the processes that write."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc_syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None

    def syncfs(handle: int) -> None:
        if libc_syncfs(handle) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs
