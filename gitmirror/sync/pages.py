"""Project pages for one run: each fetched once, conditionally when the local state allows.

An unchanged project costs one conditional request (HTTP 304) and its page is the one the local
state (``state.LocalState``) recorded for the branch tip; what upstream answered anew is kept in
``fresh`` for the run to record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..model.page import RemoteProject
from ..upstream.upstream import Upstream
from .state import LocalState


class Pages:
    """The pages of one run; ``state`` None: every page fetched unconditionally.

    ``must_refetch(name)`` says a project needs healing (a recorded blob is missing from the
    store), so its page is fetched unconditionally whatever the local state holds.
    """

    def __init__(
        self,
        upstream: Upstream,
        state: LocalState | None = None,
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
