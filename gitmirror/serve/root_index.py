"""The root ``/simple/`` page, built off the event loop from the previous commit's project list.

The root lists every project: walking the whole tree after each commit would cost what the
mirror holds, not what changed, and done on the event loop it stalls every other request. So
``RootIndex`` keeps the sorted names of the last commit it listed and reaches the next one through
the pruned tree diff between the two (``MetadataRepo.changes``: only changed shard directories are
read), in one worker thread with its own repository handle (dulwich's pack readers are not shared
between threads). The pages of the last commit asked for are kept; the list is a pure function of
the commit, so nothing kept can go stale.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..model.manifest import project_of_path
from ..storage.repo import MetadataRepo

Render = Callable[[list[str]], Any]


def changed_projects(repo: MetadataRepo, old: bytes, new: bytes) -> tuple[set[str], set[str]]:
    """(projects added or changed, projects gone) between two commits, from a pruned tree diff."""
    changed: set[str] = set()
    removed: set[str] = set()
    for change in repo.changes(old, new):
        before = project_of_path(change.old.path.decode()) if change.old else None
        after = project_of_path(change.new.path.decode()) if change.new else None
        if after:
            changed.add(after)
        if before and before != after:
            removed.add(before)
    return changed, removed - changed


def changed_names(repo: MetadataRepo, names: list[str], old: bytes, new: bytes) -> tuple[set[str], set[str]]:
    """(projects added, projects removed) from commit ``old``, whose sorted names are ``names``, to ``new``."""
    changed, removed = changed_projects(repo, old, new)
    return {name for name in changed if not listed(names, name)}, removed


def listed(names: list[str], name: str) -> bool:
    """Whether ``name`` is in the sorted list ``names``."""
    at = bisect.bisect_left(names, name)
    return at < len(names) and names[at] == name


def updated(names: list[str], added: set[str], removed: set[str]) -> list[str]:
    """``names`` (sorted) with ``added`` merged in and ``removed`` left out, still sorted, in one pass."""
    kept = [name for name in names if name not in removed] if removed else names
    return list(heapq.merge(kept, sorted(added))) if added else list(kept)


class RootIndex:
    """``await root.page(commit, key, render)``: the root page of ``commit`` rendered by ``render``
    (one per media type ``key``), computed in a worker thread, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._repo: MetadataRepo | None = None
        self._names: tuple[bytes | None, list[str]] | None = None
        self._pages: dict[tuple[bytes | None, str], Any] = {}

    async def page(self, commit: bytes | None, key: str, render: Render) -> Any:
        known = self._pages.get((commit, key))
        if known is not None:
            return known
        return await run_in_threadpool(self.page_now, commit, key, render)

    def page_now(self, commit: bytes | None, key: str, render: Render) -> Any:
        """The same, in the calling thread (a worker's; or a caller with no event loop)."""
        with self._lock:
            known = self._pages.get((commit, key))
            if known is None:
                names = self.names(commit)
                known = render(names)
                self._pages = {k: v for k, v in self._pages.items() if k[0] == commit}
                self._pages[(commit, key)] = known
            return known

    def names_of(self, commit: bytes | None) -> list[str]:
        """The sorted project names of ``commit``, in the calling thread (it blocks: not on the event loop)."""
        with self._lock:
            return self.names(commit)

    def names(self, commit: bytes | None) -> list[str]:
        """The sorted project names of ``commit``; caller holds the lock."""
        if self._repo is None:
            self._repo = MetadataRepo(self.path)
        previous = self._names
        if previous is not None and previous[0] == commit:
            return previous[1]
        if previous is None or previous[0] is None or commit is None:
            names = self._repo.projects(commit)
        else:
            names = updated(previous[1], *changed_names(self._repo, previous[1], previous[0], commit))
        self._names = (commit, names)
        return names
