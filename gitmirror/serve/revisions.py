"""Snapshot revisions for the server: resolved off the event loop, a bounded number at a time.

Finding an abbreviated commit id or a date's commit may walk the history; done on the event loop,
a few such requests stall every other request of the server. So ``BoundedResolver`` answers names
that cost nothing (refs, names that cannot be a date or an id) at once, and sends the rest to
worker threads, at most ``workers`` at a time, each with its own ``snapshot.Resolver`` over its own
repository handle (dulwich's pack readers are not shared between threads). What resolved is
remembered by those resolvers; what named nothing is remembered here, per branch tip, for
``miss_ttl`` seconds, so repeated misses cost one resolution, not one each.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from ..storage.repo import MetadataRepo
from ..storage.snapshot import Resolver, RevisionError, Snapshot, looks_like_date

MAX_REVISION_LENGTH = 128
_ID_LIKE = re.compile(r"[0-9a-fA-F]{4,40}")


class BoundedResolver:
    """``await resolver(rev)`` -> ``Snapshot``, or ``RevisionError`` with the one line to show."""

    def __init__(
        self,
        repo: MetadataRepo,
        tip: Callable[[], bytes | None],
        branch: str = "main",
        workers: int = 2,
        miss_ttl: float = 10.0,
        size: int = 4096,
    ) -> None:
        self.repo = repo
        self.tip = tip
        self.branch = branch
        self.miss_ttl = miss_ttl
        self.size = size
        self._workers = workers
        self._idle: list[Resolver] = []
        self._names = Resolver(repo, branch)  # branches and tags: read each time, on the event loop
        self._slots: asyncio.Semaphore | None = None
        self._misses: OrderedDict[tuple[bytes | None, str], tuple[float, str]] = OrderedDict()

    async def __call__(self, rev: str) -> Snapshot:
        check_shape(rev)
        if not self._costly(rev):
            return _guarded(self._names, rev)  # a lookup or two
        key = (self.tip(), rev)
        self._recall_miss(key)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._workers)
        async with self._slots:
            self._recall_miss(key)  # found to name nothing while this request waited for a slot
            resolver = self._idle.pop() if self._idle else Resolver(MetadataRepo(self.repo.path), self.branch)
            try:
                return await run_in_threadpool(_guarded, resolver, rev)
            except RevisionError as exc:
                self._misses[key] = (time.monotonic() + self.miss_ttl, str(exc))
                if len(self._misses) > self.size:
                    self._misses.popitem(last=False)
                raise
            finally:
                self._idle.append(resolver)

    def _costly(self, rev: str) -> bool:
        """Whether resolving may walk the history: a date or an id-like name that is not a ref."""
        if not (looks_like_date(rev) or _ID_LIKE.fullmatch(rev)):
            return False
        return not any(self.repo.has_ref(ref) for ref in (f"refs/heads/{rev}".encode(), f"refs/tags/{rev}".encode()))

    def _recall_miss(self, key: tuple[bytes | None, str]) -> None:
        """Raise the remembered ``RevisionError`` for a recent miss at this tip."""
        known = self._misses.get(key)
        if known is None:
            return
        expires, message = known
        if time.monotonic() < expires:
            raise RevisionError(message)
        self._misses.pop(key, None)


def check_shape(rev: str) -> None:
    """Refuse revisions no ref, date or commit id can spell before they reach a ref lookup."""
    if not rev or len(rev) > MAX_REVISION_LENGTH:
        raise RevisionError("unknown revision (empty or longer than 128 characters)")
    if not rev.isprintable() or "/" in rev or "\\" in rev:
        raise RevisionError(f"unknown revision {rev!r}")


def _guarded(resolver: Callable[[str], Snapshot], rev: str) -> Snapshot:
    """One resolution; dates out of the calendar's range (and refs that cannot be read) become one line."""
    try:
        return resolver(rev)
    except (ValueError, OverflowError, OSError) as exc:
        raise RevisionError(f"invalid revision {rev!r} ({exc})") from None
