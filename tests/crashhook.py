"""Test-side crash and pause points: a ``sys.audit`` hook that kills or stops a ``gitmirror`` run.

Production code only announces each point: ``sys.audit("gitmirror.crashpoint", "<point>")``, a no-op
without hooks. A test runs ``gitmirror`` with ``environment(GITMIRROR_CRASH_AT="<point>")`` (or
``GITMIRROR_PAUSE_AT``): ``PYTHONPATH`` then holds ``tests/crashsite``, whose ``sitecustomize``
calls ``install`` in every interpreter of the run (the sync, its fork server, its download
processes). ``<point>#<n>`` acts on the n-th arrival in the whole run, whichever process gets there.

A crash is SIGKILL of the sync (and of the download process that got there): no ``finally``,
``atexit`` or buffered write tidies up, like a power cut. A pause is SIGSTOP of the sync; the test
inspects the half-done state and sends SIGCONT. An unknown point name ends the run in one line.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

EVENT = "gitmirror.crashpoint"
CRASH_VARIABLE = "GITMIRROR_CRASH_AT"
PAUSE_VARIABLE = "GITMIRROR_PAUSE_AT"
_OWNER = "GITMIRROR_CRASH_OWNER"  # the sync's pid, set by its own hook, inherited by its processes
_COUNTS = "GITMIRROR_CRASH_COUNTS"  # a directory: one file per point, one byte per arrival

# Every named point, in the order a sync reaches them. The two ref-lock points are this module's:
# dulwich's lock files have no callback, so ``_hook_ref_lock_files`` wraps them in the test run.
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
    "full-index.batch-committed",  # ``projects: all``: one batch is committed, the next not started
)
#: reached only by a ``projects: all`` sync (tests/test_full_index.py)
FULL_INDEX_POINTS = ("full-index.batch-committed",)
REF_LOCK_POINTS = ("repo.ref-lock-taken", "repo.ref-lock-written")
#: points only a store in a bucket reaches (tests/test_s3.py)
BUCKET_POINTS = ("store.uploading",)  # a multipart upload has sent a part, not completed
SITE = Path(__file__).parent / "crashsite"

_counts_root: str | None = None


def variables(**points: str) -> dict[str, str]:
    """The environment variables that install this hook in a ``gitmirror`` subprocess (``Mirror.run(env=)``)."""
    global _counts_root
    if _counts_root is None:
        _counts_root = tempfile.mkdtemp(prefix="gitmirror-crash-counts-")
        atexit.register(shutil.rmtree, _counts_root, ignore_errors=True)
    return {"PYTHONPATH": str(SITE), _COUNTS: tempfile.mkdtemp(dir=_counts_root), **points}


def environment(**points: str) -> dict[str, str]:
    """``isolated_env`` for a ``gitmirror`` subprocess, with this hook installed in it."""
    from conftest import isolated_env

    return isolated_env(**variables(**points))


def install() -> None:
    """Add the audit hook for the point named in the environment (nothing when none is)."""
    targets = {}
    for variable, signum in ((CRASH_VARIABLE, signal.SIGKILL), (PAUSE_VARIABLE, signal.SIGSTOP)):
        value = os.environ.get(variable)
        if not value:
            continue
        point, _, occurrence = value.partition("#")
        if point not in POINTS + BUCKET_POINTS:
            known = ", ".join(POINTS)
            sys.stderr.write(f"gitmirror: error: {variable}={value!r} names no crash point (known: {known})\n")
            os._exit(2)
        targets[point] = (int(occurrence or "1"), signum)
    if not targets:
        return
    owner = int(os.environ.setdefault(_OWNER, str(os.getpid())))  # the first interpreter is the sync
    counts = os.environ[_COUNTS]

    def reached(point: str) -> None:
        wanted, signum = targets[point]
        fd = os.open(os.path.join(counts, point), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b".")  # appends are atomic: the offset after ours is our arrival's number
            arrival = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        if arrival != wanted:
            return
        os.kill(owner, signum)  # a crash in a download process is the sync's; a pause stops the sync
        if signum == signal.SIGKILL and owner != os.getpid():
            os.kill(os.getpid(), signum)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == EVENT and args[0] in targets:
            reached(str(args[0]))

    sys.addaudithook(hook)
    if set(REF_LOCK_POINTS) & set(targets):
        _hook_ref_lock_files(reached, targets)


def _hook_ref_lock_files(reached, targets) -> None:  # type: ignore[no-untyped-def]
    """Points inside dulwich's lock-file protocol for ref files: when it is taken, when it is written."""
    from dulwich import file as dulwich_file

    original_init = dulwich_file._GitFile.__init__
    original_close = dulwich_file._GitFile.close

    def is_ref(handle: object) -> bool:
        return "/refs/" in str(getattr(handle, "_filename", "")).replace(os.sep, "/")

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, **kwargs)
        if is_ref(self) and "repo.ref-lock-taken" in targets:
            reached("repo.ref-lock-taken")

    def close(self) -> None:  # type: ignore[no-untyped-def]
        if is_ref(self) and not self._closed and "repo.ref-lock-written" in targets:
            self._file.flush()
            os.fsync(self._file.fileno())
            reached("repo.ref-lock-written")
        original_close(self)

    dulwich_file._GitFile.__init__ = init
    dulwich_file._GitFile.close = close
