"""The dependencies of stored releases, parsed once per blob and kept beside the store.

A sync that follows dependencies reads the core metadata of every release it walks, on every run
that walks them (a ``--full`` run, or any run against an upstream without a serial to compare).
Since a PEP 658 file that equals its wheel's METADATA is no longer stored on its own
(bench/RESULTS.md item 35), that meant unzipping every stored wheel again: 74 us for the bench's
small wheels (0.2 s of CPU in a 300-project run), milliseconds for real wheels whose central
directory lists thousands of files, which ``zipfile`` reads whole.

What is kept is a pure function of one blob's bytes, and blobs never change, so an entry is never
stale: it needs no invalidation, only to be dropped when the parsing itself changes (``SCHEMA``
holds the parsed fields' names; bump its number when ``metadata.parse`` reads differently). It is
a private speed-up like the sync cache (``state``), never part of what the mirror publishes: a
missing or unreadable file only costs the unzipping it saves.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from pathlib import Path

from .cachefile import write_or_start_again
from .metadata import CoreMetadata
from .unchanged import STATE_DIR

#: where the parsed fields came from: a stored wheel's METADATA, or a stored PEP 658 file (one
#: that differs from its wheel's, or an sdist's); a blob is read the way its kind says
WHEEL = "wheel"
METADATA_FILE = "metadata"

SCHEMA = "2:" + ",".join(field.name for field in fields(CoreMetadata))


class MetadataCache:
    """``<store>/state/core-metadata.sqlite3``: parsed core metadata by (kind, blob sha256).

    Looked up one key at a time (a run asks for a few releases or for thousands); what a run
    learns is written in one transaction by ``save``. Reading never changes the file (``plan``
    only reads): a file of another schema, or one that is not a database, reads as empty, and
    the next ``save`` starts it again.
    """

    def __init__(self, store_root: Path | str) -> None:
        self.path = Path(store_root) / STATE_DIR / "core-metadata.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._writable = False
        self._unreadable = False
        self._learned: dict[tuple[str, str], CoreMetadata] = {}

    def get(self, kind: str, sha256: str) -> CoreMetadata | None:
        learned = self._learned.get((kind, sha256))
        if learned is not None:
            return learned
        db = self._reader()
        if db is None:
            return None
        try:
            row = db.execute("SELECT fields FROM metadata WHERE kind = ? AND sha256 = ?", (kind, sha256)).fetchone()
        except sqlite3.Error:
            self.close()
            self._unreadable = True
            return None
        return _decode(row[0]) if row else None

    def put(self, kind: str, sha256: str, metadata: CoreMetadata) -> None:
        self._learned[(kind, sha256)] = metadata

    def save(self) -> None:
        """Write what this run learned; a file that cannot be written is left for the next run."""
        if not self._learned:
            return
        rows = [(kind, sha256, _encode(metadata)) for (kind, sha256), metadata in self._learned.items()]

        def write() -> None:
            with self._writer() as db:
                db.executemany("INSERT OR REPLACE INTO metadata (kind, sha256, fields) VALUES (?, ?, ?)", rows)

        try:
            write_or_start_again(self.path, write, self.close)
        except (sqlite3.Error, OSError):
            self.close()
            return
        self._learned.clear()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._writable = False

    def _reader(self) -> sqlite3.Connection | None:
        """The database opened read-only, or None: absent, not a database, or of another schema."""
        if self._db is not None or self._unreadable:
            return self._db
        self._unreadable = True  # until proven otherwise, and for this run if it is not
        if not self.path.is_file():
            return None
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return None
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error:
            row = None
        if row is None or row[0] != SCHEMA:
            db.close()
            return None
        self._unreadable = False
        self._db = db
        return db

    def _writer(self) -> sqlite3.Connection:
        """The database opened for writing, made or emptied (another schema) as needed."""
        if self._db is not None and self._writable:
            return self._db
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS metadata "
                "(kind TEXT NOT NULL, sha256 TEXT NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (kind, sha256))"
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA:
                with db:
                    db.execute("DELETE FROM metadata")
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA,))
        except BaseException:
            db.close()
            raise
        self._db, self._writable, self._unreadable = db, True, False
        return db


def _encode(metadata: CoreMetadata) -> str:
    return json.dumps(vars(metadata), separators=(",", ":"))


def _decode(text: str) -> CoreMetadata | None:
    """An entry as it was parsed; None for one that does not read as such (then the blob is read)."""
    try:
        data = json.loads(text)
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        metadata = CoreMetadata(**values)
    except (ValueError, TypeError, AttributeError):
        return None
    for value in values.values():
        if not (value is None or isinstance(value, str) or all(isinstance(item, str) for item in value)):
            return None
    return metadata
