"""The counts of ``gitmirror status`` kept per commit, so that the next status costs what changed.

``<store>/state/status.sqlite3`` describes one commit, the last one counted: its totals (projects,
files, bytes, yanked, ...), every blob its served files need (by sha256: the project and file that
name it, and whether the store lacked it), and the state of each of the store's 65,536 leaf
directories then (``unchanged.blob_dir_stats``). A status of another commit starts from those
totals and reads only the manifests the tree diff between the two commits names; it checks again
only the blobs of those manifests and of the store directories whose state moved (adding or
removing a blob moves its directory's time). Without a usable file it counts everything, as before.

A private speed-up beside the store, never trusted over the repository or the store: a file of
another format, or one that does not read, is rebuilt by the next full count (never misread); one
that cannot be written leaves status as slow as without it. A blob that two projects share makes
the totals depend on more than one manifest: such a commit is never recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..model.manifest import NeededBlob
from ..sync.state import lay_out
from ..sync.unchanged import STATE_DIR, blob_dir_stats

FILE_NAME = "status.sqlite3"
LAYOUT = 1
#: every leaf directory of the store, as ``unchanged.blob_dirs`` names them
ALL_DIRS = "".join(f"{prefix:04x}" for prefix in range(0x10000))
SCHEMA = (
    "CREATE TABLE counted (one INTEGER PRIMARY KEY CHECK (one = 1), commit_id TEXT NOT NULL,"
    " totals TEXT NOT NULL, dirs BLOB NOT NULL)",
    "CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, project TEXT NOT NULL, filename TEXT NOT NULL,"
    " size INTEGER, wheel TEXT, missing INTEGER NOT NULL, in_wheel INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX blobs_project ON blobs (project)",
    "CREATE INDEX blobs_in_wheel ON blobs (in_wheel) WHERE in_wheel = 1",
    "CREATE INDEX blobs_missing_wheel ON blobs (wheel) WHERE missing = 1",
)
#: sha256, project, filename, size, wheel, missing, in_wheel (its file missing, read out of its wheel)
Row = tuple[str, str, str, int | None, str | None, int, int]


def _format(totals: Iterable[str]) -> int:
    return zlib.crc32(f"{LAYOUT}:{':'.join(SCHEMA)}:{','.join(totals)}".encode()) & 0x7FFFFFFF


class Counted:
    """What the file says of the last commit counted: read once, then ``save`` the next one."""

    def __init__(self, commit: str, totals: dict[str, object], dirs: list[bytes]) -> None:
        self.commit = commit
        self.totals = totals
        self.dirs = dirs


class StatusCounts:
    """The file of one store; every method swallows the file's failures (None, or nothing saved)."""

    def __init__(self, store_root: Path | str, totals: Iterable[str]) -> None:
        self.store = str(store_root)
        self.path = Path(store_root) / STATE_DIR / FILE_NAME
        self.format = _format(totals)
        self._db: sqlite3.Connection | None = None

    def dir_stats(self) -> list[bytes] | None:
        """The state of every leaf directory of the store now (None: the store has no blob directory)."""
        return blob_dir_stats(self.store, ALL_DIRS)

    def load(self) -> Counted | None:
        db = self._open(create=False)
        if db is None:
            return None
        try:
            row = db.execute("SELECT commit_id, totals, dirs FROM counted").fetchone()
            if row is None:
                return None
            dirs = bytes(row[2]).splitlines(keepends=True)
            return Counted(row[0], json.loads(row[1]), dirs) if len(dirs) == 0x10000 else None
        except (sqlite3.Error, ValueError) as exc:
            self._failed(exc)
            return None

    def rows_of(self, projects: Iterable[str]) -> Iterator[Row]:
        db = self._db
        assert db is not None
        for project in projects:
            yield from db.execute("SELECT * FROM blobs WHERE project = ?", (project,))

    def rows_in(self, dirs: Iterable[str]) -> Iterator[Row]:
        """The blobs in the leaf directories ``dirs`` (4-digit prefixes), and every PEP 658 file
        read out of its wheel (the wheel's directory decides whether it is there)."""
        db = self._db
        assert db is not None
        for prefix in dirs:
            yield from db.execute("SELECT * FROM blobs WHERE sha256 >= ? AND sha256 < ?", (prefix, prefix + "g"))
            yield from db.execute(
                "SELECT * FROM blobs WHERE missing = 1 AND wheel >= ? AND wheel < ?", (prefix, prefix + "g")
            )
        yield from db.execute("SELECT * FROM blobs WHERE in_wheel = 1")

    def owner(self, sha256: str) -> str | None:
        db = self._db
        assert db is not None
        row = db.execute("SELECT project FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else row[0]

    def missing(self) -> Iterator[Row]:
        """Every blob the store lacked, as last checked."""
        db = self._db
        assert db is not None
        yield from db.execute("SELECT * FROM blobs WHERE missing = 1")

    def save(
        self,
        base: str | None,
        commit: str,
        totals: Callable[[], dict[str, object] | None],
        dirs: list[bytes],
        gone: Iterable[str],
        rows: Iterable[Row],
    ) -> bool:
        """In one transaction, when the file still describes ``base`` (None: whatever it held, which
        is replaced): the blobs of projects ``gone`` dropped, ``rows`` written, then ``commit``'s
        ``totals()`` (None: nothing is saved) and directory state. False when nothing was saved."""
        db = self._open(create=True)
        if db is None:
            return False
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT commit_id FROM counted").fetchone()
                if base is not None and (row is None or row[0] != base):
                    return False  # another status moved it meanwhile: its record stands
                if base is None:
                    db.execute("DELETE FROM blobs")
                db.executemany("DELETE FROM blobs WHERE project = ?", [(name,) for name in gone])
                db.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                values = totals()
                if values is None:
                    raise _Abandoned
                db.execute(
                    "INSERT OR REPLACE INTO counted VALUES (1, ?, ?, ?)",
                    (commit, json.dumps(values, sort_keys=True), b"".join(dirs)),
                )
        except _Abandoned:
            return False
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return False
        return True

    def forget(self) -> None:
        """The file no longer describes a commit (a blob two projects share was found)."""
        with contextlib.suppress(OSError):
            self.close()
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.is_file():
            return None
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0)
            if db.execute("PRAGMA user_version").fetchone()[0] != self.format:
                if not create:
                    db.close()
                    return None
                lay_out(db, SCHEMA, self.format)
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return None
        self._db = db
        return db

    def _failed(self, exc: Exception) -> None:
        """A file that does not read is removed (the next full count makes a new one); one that
        cannot be written is left alone."""
        self.close()
        if isinstance(exc, sqlite3.DatabaseError) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGE:
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".damaged"))


_DAMAGE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class _Abandoned(Exception):
    """Rolls the transaction of ``save`` back."""


def row_of(blob: NeededBlob, missing: bool, in_wheel: bool) -> Row:
    return (blob.sha256, blob.project, blob.filename, blob.size, blob.wheel, int(missing), int(in_wheel))


def blob_of(row: Row) -> NeededBlob:
    return NeededBlob(row[0], row[3], row[1], row[2], row[4])


def changed_dirs(before: list[bytes], now: list[bytes]) -> list[str]:
    """The 4-digit prefixes of the leaf directories whose state differs."""
    return [f"{prefix:04x}" for prefix, (old, new) in enumerate(zip(before, now, strict=True)) if old != new]
