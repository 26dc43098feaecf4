"""What the server shows: the simple-API pages and file entries of one repository at any commit.

Pages are rendered by ``index``. The root page comes from ``root_index`` (off the event loop, from
the previous commit's project list); a project's manifest and pages are kept in one bounded LRU by
the id of its manifest blob, so a sync that moves the tip re-renders only the projects it changed.
Everything kept is a function of immutable git objects, so nothing kept can go stale.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..model.manifest import FileEntry, ProjectManifest, blobs_of, loads, manifest_path
from ..model.text import printable
from ..storage import gittree
from ..storage.blobs import Blobs
from ..storage.metadata import in_wheel
from ..storage.repo import MetadataRepo
from . import index
from .ref_watch import RefWatch
from .root_index import RootIndex

#: seconds a branch tip is trusted while its ref file's stamp is unchanged
TIP_REREAD_SECONDS = 1.0


@dataclass(frozen=True)
class Page:
    body: bytes
    media_type: str
    etag: str


class _LRU(OrderedDict[tuple[object, ...], Any]):
    """A bounded mapping forgetting the least recently stored entry first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: tuple[object, ...], value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class MirrorView:
    """Pages and files of one repository at any commit; shared by live and snapshot routes."""

    def __init__(self, repo: MetadataRepo, store: Blobs, branch: str = "main") -> None:
        self.repo = repo
        self.store = store
        self.branch = branch
        self._cache = _LRU(8192)
        self._root = RootIndex(repo.path)
        self._tip: tuple[object, float, bytes | None] | None = None
        self._ref = RefWatch(repo.path, branch)

    def tip(self) -> bytes | None:
        """The branch tip, re-read when its ref file changed (``ref_watch``) or ``TIP_REREAD_SECONDS`` after
        it was read.

        One ``fstat`` per request instead of reading and parsing the ref; the age bound covers
        what a stamp cannot see (an in-place write of the same size within one mtime tick, an
        inode reused while the ref is read by name).
        """
        stamp = self._ref.stamp()
        now = time.monotonic()
        if self._tip is None or self._tip[0] != stamp or now - self._tip[1] > TIP_REREAD_SECONDS:
            self._tip = (self._ref.hold(), now, self.repo.tip(self.branch))
        return self._tip[2]

    def _manifest_blob(self, commit: bytes | None, name: str) -> bytes | None:
        """The id of ``name``'s manifest blob at ``commit``, or None when the project is not there."""
        key = ("blob", commit, name)
        if key not in self._cache:
            entry = self.repo.entry(commit, manifest_path(name))
            is_file = entry is not None and entry[0] in (*gittree.FILE_MODES, gittree.SYMLINK)
            return self._cache.remember(key, entry[1] if is_file and entry is not None else None)
        return self._cache[key]

    def manifest(self, commit: bytes | None, name: str) -> ProjectManifest | None:
        blob = self._manifest_blob(commit, name)
        if blob is None:
            return None
        key = ("manifest", blob)
        if key not in self._cache:
            path = manifest_path(name)
            return self._cache.remember(key, loads(self.repo.blob(blob, path), path))
        return self._cache[key]

    def projects(self, commit: bytes | None) -> list[str]:
        """The sorted project names of ``commit``, kept up to date from the last (``root_index``)."""
        return self._root.names_of(commit)

    async def root_page(self, commit: bytes | None, media_type: str) -> Page:
        """The root page, built off the event loop from the last one (``root_index``)."""
        return await self._root.page(commit, media_type, functools.partial(_root_page, media_type=media_type))

    def project_page(self, commit: bytes | None, name: str, media_type: str) -> Page | None:
        blob = self._manifest_blob(commit, name)
        if blob is None:
            return None
        key = ("project", blob, media_type)
        if key not in self._cache:
            manifest = self.manifest(commit, name)
            assert manifest is not None
            body = index.project_json(manifest) if media_type == index.JSON_TYPE else index.project_html(manifest)
            return self._cache.remember(key, _page(body, media_type))
        return self._cache[key]

    async def metadata_in_wheel(self, project: str, entry: FileEntry) -> bytes | None:
        """A PEP 658 file read out of its wheel (``metadata.in_wheel``, in a thread), kept for the next
        request; not found is not kept (``hydrate`` may bring the wheel)."""
        key = ("in-wheel", entry.core_metadata)
        if key in self._cache:
            return self._cache[key]
        _file, metadata = blobs_of(project, entry)
        data = await asyncio.to_thread(in_wheel, self.store, metadata.sha256, metadata.wheel)
        return data if data is None else self._cache.remember(key, data)

    def withheld(self, commit: bytes | None, project: str, entry: FileEntry) -> str | None:
        """Why a file recorded at ``commit`` must not be served (one line), or None when it may be.

        A tombstone or a quarantine (PEP 792) at that commit or at the tip of the branch withholds
        it: a file taken down or a project quarantined after a snapshot is not offered through
        that snapshot either.
        """
        tip = self.tip()
        for manifest in (self.manifest(commit, project), None if tip == commit else self.manifest(tip, project)):
            if manifest is None:
                continue
            recorded = manifest.files.get(entry.filename, entry)
            stone = recorded.tombstone
            if stone is not None:
                return f"{entry.filename} was taken down on {stone.time}: {printable(stone.reason)}"
            if not index.offers_files(manifest):
                reason = f": {printable(manifest.status_reason)}" if manifest.status_reason else ""
                return f"{project} is quarantined, its files are not offered{reason}"
        return None

    def file_entry(self, commit: bytes | None, project: str, filename: str) -> tuple[FileEntry, bool] | None:
        """The entry a file URL refers to, and whether the URL asks for its core metadata."""
        manifest = self.manifest(commit, project)
        if manifest is None:
            return None
        entry = manifest.files.get(filename)
        if entry is not None:
            return entry, False
        if filename.endswith(".metadata"):
            entry = manifest.files.get(filename[: -len(".metadata")])
            if entry is not None and entry.core_metadata:
                return entry, True
        return None


def _root_page(names: list[str], media_type: str) -> Page:
    return _page(index.root_json(names) if media_type == index.JSON_TYPE else index.root_html(names), media_type)


def _page(body: bytes, media_type: str) -> Page:
    """A page and its strong ETag (a digest of the body: one tag per representation)."""
    return Page(body=body, media_type=media_type, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')
