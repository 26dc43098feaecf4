"""The content-addressed blob store: release files live outside git, named by their sha256.

Layout: ``<store>/blobs/<aa>/<bb>/<sha256>``, temporary files in ``<store>/tmp/``. A blob appears
under its final name only by an atomic rename after its bytes were hashed and checked, so a
reader (or a crash) never sees a half-written or unverified blob, and the same bytes are stored
once however many files or projects refer to them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..model.layout import BLOBS_DIR, blob_path
from ..model.names import check_sha256
from . import durable
from .blobs import problem_of, store_bytes

#: ``BlobStore.verify``'s word for a blob that is not there
MISSING = "missing from the store"


class IntegrityError(ValueError):
    """Bytes that do not match the sha256 or size they were announced with."""


class AnnouncedBody:
    """A body on its way in, held to the sha256 and size it was announced with: hashed and counted as
    it arrives and refused as soon as it runs longer; the one rule of every writer of blobs."""

    def __init__(self, expected_sha256: str, expected_size: int | None) -> None:
        self.expected_sha256 = check_sha256(expected_sha256)
        self.expected_size = expected_size
        self.size = 0
        self._hash = hashlib.sha256()

    def received(self, chunk: bytes | memoryview) -> None:
        """Count ``chunk``; raises IntegrityError once the body is longer than announced."""
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise IntegrityError(f"body longer than the announced {self.expected_size} bytes")

    def check_announced(self) -> None:
        """Raise IntegrityError unless the whole body is the one announced."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise IntegrityError(f"got {self.size} bytes, announced {self.expected_size}")
        digest = self._hash.hexdigest()
        if digest != self.expected_sha256:
            raise IntegrityError(f"sha256 mismatch: announced {self.expected_sha256}, got {digest}")
        sys.audit("gitmirror.crashpoint", "store.verified")


#: blobs announced at least this big bypass the page cache (``O_DIRECT``) while they are written
DIRECT_MIN_BYTES = 1 << 20
#: what ``O_DIRECT`` asks of a write's address and length (a logical block is 512 or 4,096 bytes)
DIRECT_ALIGN = 4096


class BlobWriter(AnnouncedBody):
    """Receives a blob's bytes in chunks, hashing as they arrive; ``commit`` verifies and publishes.

    Plain file descriptors and string paths: a cold sync writes thousands of blobs from several
    threads, and buffered file objects, ``mkstemp`` and ``Path`` objects stood out in its profile.

    Large blobs are written with ``O_DIRECT``: the bytes go from the download buffer to the disk
    instead of being copied into fresh page-cache pages first, which was the biggest kernel cost
    of a cold sync (on a virtual machine, where each new page is expensive).
    The data must then be fsynced anyway; the copy was pure overhead. Direct writes need aligned
    addresses and lengths: the first write that is not (the last piece of a body, a caller with
    odd-sized chunks) turns ``O_DIRECT`` off for the rest of the file, so any caller is correct
    and one that passes whole aligned buffers (``fetch.FileFetcher``) is fast.
    """

    def __init__(self, store: BlobStore, expected_sha256: str, expected_size: int | None) -> None:
        super().__init__(expected_sha256, expected_size)
        self.store = store  # the store it writes into
        self._published = False
        direct = expected_size is not None and expected_size >= DIRECT_MIN_BYTES
        self._tmp, self._fd, self._direct = store.temporary_file(direct)
        sys.audit("gitmirror.crashpoint", "store.tmp-created")

    def write(self, chunk: bytes | memoryview) -> None:
        self.received(chunk)
        view = memoryview(chunk)
        try:
            if self._direct:
                view = self._write_direct(view)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:  # a full disk says where: the store's
            exc.filename = exc.filename or str(self.store.root)
            raise
        sys.audit("gitmirror.crashpoint", "store.chunk-written")

    def _write_direct(self, view: memoryview) -> memoryview:
        """Write the aligned part of ``view`` around the page cache; returns what is left to write."""
        aligned = len(view) - len(view) % DIRECT_ALIGN
        try:
            while aligned:
                written = os.write(self._fd, view[:aligned])
                view, aligned = view[written:], aligned - written
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: an unaligned address; nothing was written
                raise
        if view:
            self._direct = False
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        return view

    def commit(self) -> Path:
        """Check size and hash, then make the blob visible; raises IntegrityError and keeps nothing."""
        self.check()
        return Path(self.publish())

    def check(self) -> None:
        """Raise IntegrityError, keeping nothing, unless the bytes are the announced ones."""
        try:
            self.check_announced()
        except BaseException:
            self.abort()
            raise

    def publish(self, durable: bool = False) -> str:
        """Name a checked blob once its bytes are on disk: fsynced here, unless the caller made them
        ``durable`` already (``BlobStore.sync_all`` after several blobs); keeps nothing on failure.
        Returns its path as a string: the download processes name thousands and use none."""
        try:
            if not durable:
                os.fsync(self._fd)
            target = self.store.file(self.expected_sha256)
            if self._tmp is None:
                self._publish_unnamed(target)
            else:
                self._publish_named(self._tmp, target)
            self._published = True
            sys.audit("gitmirror.crashpoint", "store.published")
            return target
        except BaseException:
            self.abort()
            raise

    def _publish_unnamed(self, target: str) -> None:
        """Give the unnamed file its name: one link into its directory, nothing to rename or clean."""
        sys.audit("gitmirror.crashpoint", "store.fsynced")
        os.fchmod(self._fd, 0o444)
        sys.audit("gitmirror.crashpoint", "store.read-only")
        self.store.make_parent(target)
        with contextlib.suppress(FileExistsError):  # the same verified bytes, published meanwhile
            os.link(str(self._fd), target, src_dir_fd=_own_descriptors(), follow_symlinks=True)
        self._close()

    def _publish_named(self, tmp: str, target: str) -> None:
        self._close()
        sys.audit("gitmirror.crashpoint", "store.fsynced")
        self.store.make_parent(target)
        os.chmod(tmp, 0o444)
        sys.audit("gitmirror.crashpoint", "store.read-only")
        os.replace(tmp, target)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        self._close()  # an unnamed file is gone with its descriptor
        if not self._published and self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


_OWN_DESCRIPTORS = "/proc/self/fd"
_own: tuple[int, int] = (-1, -1)  # (process id, descriptor of its /proc/self/fd)


def _own_descriptors() -> int:
    """This process's ``/proc/self/fd`` as a directory descriptor: linking ``<fd>`` relative to it
    with ``follow_symlinks`` is ``linkat(AT_SYMLINK_FOLLOW)``, the one way to name an unnamed file
    without privileges. Opened again in a forked child, where the parent's would name its files."""
    global _own
    if _own[0] != os.getpid():
        _own = (os.getpid(), os.open(_OWN_DESCRIPTORS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    return _own[1]


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / BLOBS_DIR
        self.tmp_dir = self.root / "tmp"
        self._parents: set[str] = set()
        self._blobs = str(self.blobs_dir)
        self._direct_io = hasattr(os, "O_DIRECT")
        self._unnamed = hasattr(os, "O_TMPFILE") and os.path.isdir(_OWN_DESCRIPTORS)
        self._present: set[str] = set()  # blobs known to be stored (``has``)

    @property
    def location(self) -> str:
        return str(self.root)

    def init(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def sync_handle(self) -> int | None:
        """A handle on the store's file system for ``sync_all`` (``durable.handle``); None where
        there is no ``syncfs``. Open it before the blobs it is to make durable are written."""
        return durable.handle(self.root)

    def sync_all(self, handle: int) -> None:
        """Write everything dirty on the store's file system to disk (``durable.sync``), blobs not
        named yet included; ``handle`` is ``sync_handle``'s. One ``syncfs`` for the blobs of a
        download process's message instead of a fsync each, as a database commits a group."""
        durable.sync(handle, self.root)

    def temporary_file(self, direct: bool = False) -> tuple[str | None, int, bool]:
        """A new private file in ``tmp/``: (its path, None when it has no name; descriptor; direct).

        Unnamed (``O_TMPFILE``) where the system allows: no directory entry is created, renamed or
        left behind by a crash, and concurrent writers do not queue for ``tmp/``'s directory lock. ``direct`` asks
        for ``O_DIRECT``. Where the file system refuses either, later files do not ask again.
        """
        direct = direct and self._direct_io
        for attempt in range(4):
            try:
                return self._open_temporary(direct)
            except FileNotFoundError:
                if attempt:
                    raise
                self.init()  # first use, or removed meanwhile (hydrate tidies an empty tmp/ away)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR) and self._unnamed:
                    self._unnamed = False  # no O_TMPFILE here (EISDIR: a kernel before 3.11)
                elif exc.errno == errno.EINVAL and direct:
                    self._direct_io = direct = False
                elif exc.errno == errno.EINVAL and self._unnamed:
                    self._unnamed = False
                else:
                    raise
        raise AssertionError("unreachable")

    def _open_temporary(self, direct: bool) -> tuple[str | None, int, bool]:
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
        if self._unnamed:
            return None, os.open(self.tmp_dir, flags | os.O_TMPFILE, 0o600), direct
        path = os.path.join(self.tmp_dir, f"blob-{secrets.token_hex(12)}")
        try:
            return path, os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), direct
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # created before the flag was refused
            raise

    def make_parent(self, blob: str) -> None:
        """``blobs/aa/bb/``, created once per process: a mkdir that finds it there costs an exception."""
        parent = os.path.dirname(blob)
        if parent not in self._parents:
            os.makedirs(parent, exist_ok=True)
            self._parents.add(parent)

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted writes; they were never visible, so nothing is lost."""
        removed = 0
        if self.tmp_dir.is_dir():
            for leftover in self.tmp_dir.iterdir():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, sha256: str) -> Path:
        return Path(self.file(sha256))

    def file(self, sha256: str) -> str:
        """``path`` as a plain string, for the hot paths: a ``Path`` costs more than the lookup it names."""
        return blob_path(self._blobs, check_sha256(sha256))

    def local_file(self, sha256: str) -> str | None:
        return self.file(sha256)

    def open(self, sha256: str) -> IO[bytes]:
        return open(self.file(sha256), "rb")

    def read_bytes(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def size(self, sha256: str) -> int:
        return os.stat(self.file(sha256)).st_size

    def has(self, sha256: str) -> bool:
        """Asked several times per file by a sync, on its event loop: a blob seen once is not looked
        up again (blobs never change, and only ``remove`` deletes one, which forgets it)."""
        if sha256 in self._present:
            return True
        if os.path.isfile(self.file(sha256)):
            self._present.add(sha256)
            return True
        return False

    def writer(self, sha256: str, size: int | None = None) -> BlobWriter:
        return BlobWriter(self, sha256, size)

    def put_bytes(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data`` (checked against ``sha256`` when given) and return its digest."""
        return store_bytes(self, data, sha256)

    def verify(self, sha256: str, size: int | None = None) -> str | None:
        """Re-hash a stored blob; returns a problem description, or None when it is intact."""
        path = self.path(sha256)
        if not path.is_file():
            return MISSING
        with path.open("rb") as handle:
            return problem_of(iter(lambda: handle.read(1 << 20), b""), sha256, size)

    def remove(self, sha256: str) -> bool:
        """Delete a blob (takedown only); returns whether it existed."""
        path = self.path(sha256)
        self._present.discard(sha256)
        if path.exists():
            os.chmod(path, 0o644)
            path.unlink()
            return True
        return False

    def __iter__(self) -> Iterator[str]:
        if not self.blobs_dir.is_dir():
            return
        for path in self.blobs_dir.glob("*/*/*"):
            yield path.name
