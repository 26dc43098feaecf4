"""The incremental sync cache: upstream ETags, ``_last-serial`` and the last page of each project.

It lives next to the blob store, never in the git repository: it is a private speed-up, not part
of what the mirror publishes. With it an unchanged project costs one conditional request (HTTP
304) and the page is taken from the cache. The cache is never trusted over the repository: it
records the branch tip it was written for, and when the tip has moved (another tool committed, a
run crashed between commit and cache write) or the upstream changed, it is ignored and rebuilt.

It also keeps the warnings the last run showed, whatever the tip: a sync shows a warning once per
change (``Syncer._warn``), not at every run of a cron job that finds the same state.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .cachefile import write_or_start_again
from .page import RemoteFile, RemoteProject
from .unchanged import STATE_DIR, state_key
from .upstream import Upstream

SCHEMA = "2"  # 2: legacy files are ``RemoteProject.skipped``, no longer ``rejected`` (pages of 1 are refetched)


def _encode(page: RemoteProject) -> str:
    """Every field is a plain value, the files a list of flat records: no ``dataclasses.asdict``,
    whose deep copy of 300 pages was 0.35 s (profiled) at the end of a cold sync."""
    data = {**vars(page), "files": [vars(item) for item in page.files]}
    return json.dumps(data, separators=(",", ":"))


def _decode(text: str) -> RemoteProject:
    data = json.loads(text)
    data["files"] = [RemoteFile(**item) for item in data["files"]]
    return RemoteProject(**data)


class SyncState:
    """Per branch and upstream: ``<store>/state/sync-<id>.sqlite3`` (one SQLite file, atomic saves)."""

    def __init__(self, store_root: Path, branch: str, upstream: str) -> None:
        self.path = Path(store_root) / STATE_DIR / f"sync-{state_key(branch, upstream)}.sqlite3"
        self.branch = branch
        self.upstream = upstream
        self.valid = False
        self._db: sqlite3.Connection | None = None

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is None:
            if not create and not self.path.exists():
                return None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pages (name TEXT PRIMARY KEY, etag TEXT, last_serial TEXT, page TEXT)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS shown (line TEXT PRIMARY KEY)")
        return self._db

    def load(self, tip: bytes | None) -> bool:
        """Trust the cache only if it was written for exactly this branch tip and upstream; a file
        that is no database (damaged) is no cache, and the next ``save`` starts it again."""
        try:
            db = self._connect(create=False)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if db is not None else None
        except sqlite3.DatabaseError:
            self.close()
            meta = None
        if meta is None:
            self.valid = False
            return False
        self.valid = meta == {
            "schema": SCHEMA,
            "commit": tip.decode() if tip else "",
            "upstream": self.upstream,
            "branch": self.branch,
        }
        return self.valid

    def cached(self, name: str) -> tuple[str, RemoteProject] | None:
        """(ETag, page) recorded for a project, when the cache is valid and has one."""
        if not self.valid or self._db is None:
            return None
        try:
            row = self._db.execute("SELECT etag, page FROM pages WHERE name = ?", (name,)).fetchone()
            if row is None or not row[0] or not row[1]:
                return None
            return row[0], _decode(row[1])
        except (sqlite3.DatabaseError, ValueError, TypeError):  # a damaged record: fetch the page
            return None

    def shown_warnings(self) -> set[str]:
        """The warnings the last run showed (or found shown before); empty without a readable file."""
        try:
            db = self._connect(create=False)
            return {row[0] for row in db.execute("SELECT line FROM shown")} if db is not None else set()
        except sqlite3.DatabaseError:
            self.close()
            return set()

    def save(self, commit: bytes | None, fresh: dict[str, RemoteProject], shown: set[str] | None = None) -> None:
        """Record the pages fetched this run, for the tip the run left the branch at, and the
        warnings now shown (None: keep those recorded); a file that is no database is started again
        (once: a disk that keeps failing raises)."""
        write_or_start_again(self.path, lambda: self._save(commit, fresh, shown), self.close)

    def _save(self, commit: bytes | None, fresh: dict[str, RemoteProject], shown: set[str] | None) -> None:
        db = self._connect(create=True)
        assert db is not None
        with db:
            if shown is not None:
                db.execute("DELETE FROM shown")
                db.executemany("INSERT INTO shown (line) VALUES (?)", [(line,) for line in sorted(shown)])
            if not self.valid:
                db.execute("DELETE FROM pages")
            db.executemany(
                "INSERT OR REPLACE INTO pages (name, etag, last_serial, page) VALUES (?, ?, ?, ?)",
                [(name, page.etag, page.last_serial, _encode(page)) for name, page in fresh.items()],
            )
            db.execute("DELETE FROM meta")
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema", SCHEMA),
                    ("commit", commit.decode() if commit else ""),
                    ("upstream", self.upstream),
                    ("branch", self.branch),
                ],
            )
        self.valid = True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Pages:
    """Project pages for one run: each fetched once, conditionally when the cache allows.

    ``must_refetch(name)`` says a project needs healing (a recorded blob is missing from the
    store), so its page is fetched unconditionally whatever the cache holds.
    """

    def __init__(
        self,
        upstream: Upstream,
        state: SyncState | None = None,
        must_refetch: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.upstream = upstream
        self.state = state
        self.must_refetch = must_refetch
        self.fresh: dict[str, RemoteProject] = {}
        self.not_modified = 0
        self.fetched = 0
        self._tasks: dict[str, asyncio.Task[RemoteProject]] = {}

    async def get(self, name: str) -> RemoteProject:
        """The page; raises ``ProjectNotFound`` / ``UpstreamError`` like ``Upstream.project``."""
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = asyncio.ensure_future(self._fetch(name))
        return await asyncio.shield(task)

    async def _fetch(self, name: str) -> RemoteProject:
        cached = self.state.cached(name) if self.state else None
        if cached is not None and self.must_refetch(name):
            cached = None
        page = await self.upstream.project(name, etag=cached[0] if cached else None)
        if page is None:
            assert cached is not None
            self.not_modified += 1
            return cached[1]
        self.fetched += 1
        self.fresh[name] = page
        return page
