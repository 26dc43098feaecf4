"""The local state beside the store: one SQLite file, ``<store>/state/local.sqlite3``.

It holds what a run may reuse but never needs. Per branch and upstream: each project's last page
and its ETag (an unchanged project then costs one conditional request, HTTP 304) and the warnings
the last run showed (a sync shows a warning once per change, ``Syncer._warn``). For every branch:
the core metadata parsed out of stored blobs, by kind and sha256 (blobs never change, so an entry
never goes stale), so that a walk over stored releases does not unzip them again. It is a private
speed-up, never published and never trusted over the repository: pages are used only while the
branch tip is the commit they were recorded for. The warm-sync record (``unchanged``) is a file of
its own, read before anything heavier than the standard library is imported.

The file carries its format in ``PRAGMA user_version`` (``FORMAT``: the layout version and the
field names of the records it keeps). A file of another format is rebuilt by a run that writes,
read as empty by one that does not (``plan``): never misread.

One rule for a file that cannot serve, which never fails a run: one warning line, and the run goes
on without what the file would have saved. A damaged file (not a database, truncated, a directory
in its place) is never read again: a run that writes moves it aside (``local.sqlite3.damaged``)
and starts a new one. A file that cannot be written (read-only, a full disk) is not saved; the
run's own result stands.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..model.page import RemoteFile, RemoteProject
from ..storage.metadata import CoreMetadata
from .unchanged import STATE_DIR

FILE_NAME = "local.sqlite3"
LAYOUT = 3  # bump when a table changes; the records' field names are part of FORMAT already
#: what each ``metadata`` entry was parsed from: a stored wheel's METADATA, or a stored PEP 658
#: file (one that differs from its wheel's, or an sdist's); a blob is read the way its kind says
WHEEL = "wheel"
METADATA_FILE = "metadata"
TIMEOUT = 30.0  # seconds to wait for another process's write (syncs of two repositories sharing a store)
#: the separate files of earlier versions, removed by the first run that writes the new one
LEGACY_FILES = ("sync-*.sqlite3", "core-metadata.sqlite3")
_SIDECARS = ("-journal", "-wal", "-shm")
_DAMAGE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _format() -> int:
    names = [item.name for kind in (RemoteProject, RemoteFile, CoreMetadata) for item in fields(kind)]
    return zlib.crc32(f"{LAYOUT}:{','.join(names)}".encode()) & 0x7FFFFFFF


FORMAT = _format()

SCHEMA = (
    "CREATE TABLE scopes (branch TEXT NOT NULL, upstream TEXT NOT NULL, tip TEXT NOT NULL,"
    " PRIMARY KEY (branch, upstream))",
    "CREATE TABLE pages (branch TEXT NOT NULL, upstream TEXT NOT NULL, name TEXT NOT NULL, etag TEXT,"
    " page TEXT NOT NULL, PRIMARY KEY (branch, upstream, name))",
    "CREATE TABLE shown (branch TEXT NOT NULL, upstream TEXT NOT NULL, line TEXT NOT NULL,"
    " PRIMARY KEY (branch, upstream, line))",
    "CREATE TABLE metadata (kind TEXT NOT NULL, sha256 TEXT NOT NULL, fields TEXT NOT NULL,"
    " PRIMARY KEY (kind, sha256))",
)


class LocalState:
    """The local state of one run, for one branch and upstream; the only owner of the connection.

    ``writable=False`` (``plan``) never changes the file. ``warn`` receives at most one line per
    run, without a ``warning:`` prefix, when the file cannot serve.
    """

    def __init__(
        self,
        store_root: Path | str,
        branch: str,
        upstream: str,
        *,
        writable: bool,
        warn: Callable[[str], None],
    ) -> None:
        self.path = Path(store_root) / STATE_DIR / FILE_NAME
        self.scope = (branch, upstream)
        self.writable = writable
        self.valid = False  # the pages were recorded for the tip ``load`` was given
        self._warn = warn
        self._warned = False
        self._db: sqlite3.Connection | None = None
        self._learned: dict[tuple[str, str], CoreMetadata] = {}
        self._open()

    # -- reading -----------------------------------------------------------------------------

    def load(self, tip: bytes | None) -> bool:
        """Trust the pages only if they were recorded for exactly this branch tip."""
        row = self._read("SELECT tip FROM scopes WHERE branch = ? AND upstream = ?", self.scope)
        self.valid = row is not None and row[0] == (tip.decode() if tip else "")
        return self.valid

    def cached(self, name: str) -> tuple[str, RemoteProject] | None:
        """(ETag, page) recorded for a project, when the pages are valid and have one."""
        if not self.valid:
            return None
        row = self._read(
            "SELECT etag, page FROM pages WHERE branch = ? AND upstream = ? AND name = ?", (*self.scope, name)
        )
        if row is None or not row[0]:
            return None
        try:
            return row[0], _decode_page(row[1])
        except (ValueError, TypeError, KeyError):  # a record that does not read as a page: fetch it
            return None

    def shown_warnings(self) -> set[str]:
        """The warnings the last run showed (or found shown before), whatever the tip."""
        db = self._db
        if db is None:
            return set()
        try:
            rows = db.execute("SELECT line FROM shown WHERE branch = ? AND upstream = ?", self.scope).fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)
            return set()
        return {row[0] for row in rows}

    def metadata(self, kind: str, sha256: str) -> CoreMetadata | None:
        """The core metadata parsed out of a stored blob, by this run or an earlier one."""
        learned = self._learned.get((kind, sha256))
        if learned is not None:
            return learned
        row = self._read("SELECT fields FROM metadata WHERE kind = ? AND sha256 = ?", (kind, sha256))
        return _decode_metadata(row[0]) if row else None

    def learn(self, kind: str, sha256: str, parsed: CoreMetadata) -> None:
        """Keep what was parsed out of a blob whose sha256 was checked; ``save`` writes it."""
        self._learned[(kind, sha256)] = parsed

    # -- writing -----------------------------------------------------------------------------

    def save(self, commit: bytes | None, fresh: dict[str, RemoteProject], shown: set[str] | None = None) -> bool:
        """In one transaction: the pages fetched this run, for the tip the run left the branch at,
        the warnings now shown (None: keep those recorded) and the metadata learned. False (and one
        warning line) when the file could not be written: the run's result stands regardless."""
        assert self.writable, "a read-only LocalState saves nothing"
        failure: Exception | None = None
        for attempt in range(2):
            try:
                self._write(commit, fresh, shown)
                return True
            except sqlite3.Error as exc:
                if attempt == 0 and _is_damage(exc):
                    self._damaged(_reason(exc))  # moved aside: a new file is made on the next attempt
                    continue
                failure = exc
            except OSError as exc:
                failure = exc
            break
        self.close()
        self._say(f"the local state {self.path} was not saved ({failure}): the next sync asks for every page again")
        return False

    def _write(self, commit: bytes | None, fresh: dict[str, RemoteProject], shown: set[str] | None) -> None:
        db = self._writer()
        pages = [(*self.scope, name, page.etag, _encode_page(page)) for name, page in fresh.items()]
        learned = [(kind, sha256, _encode_metadata(value)) for (kind, sha256), value in self._learned.items()]
        with db:
            if shown is not None:
                db.execute("DELETE FROM shown WHERE branch = ? AND upstream = ?", self.scope)
                db.executemany("INSERT INTO shown VALUES (?, ?, ?)", [(*self.scope, line) for line in sorted(shown)])
            if not self.valid:
                db.execute("DELETE FROM pages WHERE branch = ? AND upstream = ?", self.scope)
            db.executemany("INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?)", pages)
            db.execute(
                "INSERT OR REPLACE INTO scopes VALUES (?, ?, ?)", (*self.scope, commit.decode() if commit else "")
            )
            db.executemany("INSERT OR REPLACE INTO metadata VALUES (?, ?, ?)", learned)
        self.valid = True
        self._learned.clear()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- the connection and the one rule ------------------------------------------------------

    def _open(self) -> None:
        """Open the file if there is one: a file of another format is rebuilt (or read as empty,
        when read-only), one that cannot serve is dealt with by the one rule."""
        if self.writable:
            self._drop_legacy_files()
        if not os.path.lexists(self.path):
            return
        if not self.path.is_file():
            self._damaged("not a file")
            return
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            self._fail(exc)

    def _connect(self) -> sqlite3.Connection | None:
        """A connection to a file of this format; None when read-only and the format differs."""
        if self.writable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=TIMEOUT)
        else:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=TIMEOUT)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT:
                if not self.writable:
                    db.close()
                    return None
                _rebuild(db)
        except BaseException:
            db.close()
            raise
        return db

    def _writer(self) -> sqlite3.Connection:
        if self._db is None:
            if os.path.lexists(self.path) and not self.path.is_file():
                self._damaged("not a file")
            self._db = self._connect()
        assert self._db is not None
        return self._db

    def _read(self, sql: str, parameters: tuple[str, ...]) -> tuple[str, ...] | None:
        if self._db is None:
            return None
        try:
            return self._db.execute(sql, parameters).fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)
            return None

    def _fail(self, exc: sqlite3.Error) -> None:
        """A read failed: a damaged file under the one rule; anything else (locked too long, a
        file the process may not read) leaves the file alone and this run without it."""
        if _is_damage(exc):
            self._damaged(_reason(exc))
            return
        self.close()
        self.valid = False
        self._say(f"the local state {self.path} could not be read ({exc}): this run goes without it")

    def _damaged(self, reason: str) -> None:
        self.close()
        self.valid = False
        if not self.writable:
            consequence = "not read (the next sync moves it aside)"
        else:
            try:
                aside = _move_aside(self.path)
            except OSError as exc:
                consequence = f"not read, and could not be moved aside ({exc.strerror or exc})"
            else:
                consequence = f"not read, moved aside to {aside.name}; a new one is started"
        self._say(f"the local state {self.path} is damaged ({reason}): {consequence}")

    def _say(self, line: str) -> None:
        if not self._warned:
            self._warned = True
            self._warn(line)

    def _drop_legacy_files(self) -> None:
        for pattern in LEGACY_FILES:
            for old in self.path.parent.glob(pattern):
                for path in (old, *(old.with_name(old.name + suffix) for suffix in _SIDECARS)):
                    with contextlib.suppress(OSError):  # one that cannot go is only space: nothing reads it
                        path.unlink(missing_ok=True)


def _is_damage(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGE


def _reason(exc: sqlite3.Error) -> str:
    return str(exc) or type(exc).__name__


def _rebuild(db: sqlite3.Connection) -> None:
    lay_out(db, SCHEMA, FORMAT)


def lay_out(db: sqlite3.Connection, schema: Iterable[str], format_: int) -> None:
    """Empty a database of another format and lay out this one (``schema``, ``format_``), in one
    transaction: the one rule every local-state file follows (a damaged or older file is rebuilt)."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        if db.execute("PRAGMA user_version").fetchone()[0] == format_:
            return  # another run laid it out while this one waited for the lock
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            if not table.startswith("sqlite_"):
                db.execute(f'DROP TABLE "{table}"')
        for statement in schema:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {format_}")


def _move_aside(path: Path) -> Path:
    """Rename a damaged file (or whatever stands in its place) and its journals out of the way."""
    aside = path.with_name(path.name + ".damaged")
    if os.path.lexists(aside) and not aside.is_dir():
        aside.unlink()  # an earlier damage: this one is the news
    elif aside.exists():
        aside = path.with_name(f"{path.name}.damaged-{os.getpid()}")
    os.replace(path, aside)
    for suffix in _SIDECARS:  # a journal left beside a new file would be played into it
        sidecar = path.with_name(path.name + suffix)
        if os.path.lexists(sidecar):
            os.replace(sidecar, aside.with_name(aside.name + suffix))
    return aside


def _encode_page(page: RemoteProject) -> str:
    """Every field is a plain value, the files a list of flat records (no ``dataclasses.asdict``:
    its deep copy costs more than the rest of the save)."""
    return json.dumps({**vars(page), "files": [vars(item) for item in page.files]}, separators=(",", ":"))


def _decode_page(text: str) -> RemoteProject:
    data = json.loads(text)
    data["files"] = [RemoteFile(**item) for item in data["files"]]
    return RemoteProject(**data)


def _encode_metadata(metadata: CoreMetadata) -> str:
    return json.dumps(vars(metadata), separators=(",", ":"))


def _decode_metadata(text: str) -> CoreMetadata | None:
    """An entry as it was parsed; None for one that does not read as such (then the blob is read)."""
    try:
        data = json.loads(text)
        values: dict[str, Any] = {key: tuple(v) if isinstance(v, list) else v for key, v in data.items()}
        metadata = CoreMetadata(**values)
    except (ValueError, TypeError, AttributeError):
        return None
    for value in values.values():
        if not (value is None or isinstance(value, str) or all(isinstance(item, str) for item in value)):
            return None
    return metadata
