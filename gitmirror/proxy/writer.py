"""The proxy's one writer: the batch of what it recorded, committed when due, never per request.

Requests record into the batch (``record``) and read it back (``pending``): until it is committed
it is the record the proxy serves. One task commits it every ``commit_interval`` seconds or once it
holds ``commit_changes`` changes, in a thread under the writer lock ``sync`` takes; a commit that
cannot take the lock keeps its changes for the next try. In review mode review's policy
(``approve --policy``) runs after each commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ..review.approve import ApproveError, approve
from ..storage.blobs import Blobs
from ..storage.repo import MetadataRepo, RepoError
from ..sync.config import Config
from .batch import Batch, Pending, commit_batch, due


class BatchWriter:
    """Commits the proxy's records to ``branch`` (with ``review:``, the review branch of ``main``)."""

    def __init__(self, config: Config, repo: MetadataRepo, store: Blobs, log: Callable[[str], None]) -> None:
        assert config.proxy is not None
        self.config = config
        self.settings = config.proxy
        self.repo = repo
        self.store = store
        self.log = log
        self.review = config.review.enabled
        self.branch = config.review.branch if self.review else config.branch
        self.batch = Batch()
        self.committing: dict[str, Pending] = {}
        self.policy_due = False  # review mode: something was recorded since review's policy last ran
        self._full = asyncio.Event()
        self._stopping = False
        self._one_commit = asyncio.Lock()  # the writer loop and a review-mode request may both ask

    def record(self, name: str, change: Pending) -> None:
        self.batch.record(name, change, time.monotonic())
        if self.batch.weight >= self.settings.commit_changes:
            self._full.set()

    def pending(self, name: str) -> Pending | None:
        """The uncommitted record of ``name``: the batch's, else the one being committed."""
        return self.batch.items.get(name) or self.committing.get(name)

    def names(self) -> set[str]:
        return {*self.batch.items, *self.committing}

    async def run(self) -> None:
        """Commit the batch whenever it is due, until ``stop``."""
        interval = self.settings.commit_interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), timeout=min(1.0, interval))
            self._full.clear()
            if not self._stopping and due(
                self.batch.weight, self.batch.started, time.monotonic(), interval, self.settings.commit_changes
            ):
                await self.commit()

    def stop(self) -> None:
        """Let ``run`` return (after the commit it may be making: a commit is never cut short)."""
        self._stopping = True
        self._full.set()

    async def commit(self) -> bytes | None:
        """Commit the batch now (in a thread, under the writer lock); a failure keeps it for the next try.
        In review mode, review's policy then approves what it may onto ``main``."""
        async with self._one_commit:
            return await self._commit()

    async def _commit(self) -> bytes | None:
        if not self.batch.items:
            if self.policy_due:
                await asyncio.to_thread(self._approve_by_policy)
            return None
        self.committing = self.batch.take()
        main = self.config.branch if self.review else None
        try:
            commit = await asyncio.to_thread(commit_batch, self.repo, self.branch, self.committing, main)
        except RepoError as exc:
            self.log(f"proxy: commit postponed: {exc}")
            self.batch.put_back(self.committing, time.monotonic())
            return None
        finally:
            self.committing = {}
        if commit is not None:
            self.log(f"proxy: committed {commit.decode()[:12]} to {self.branch}")
        if self.review:
            await asyncio.to_thread(self._approve_by_policy)
        return commit

    def _approve_by_policy(self) -> None:
        """``gitmirror approve --policy``: what the cooldown, ``auto_approve`` and the flags allow reaches ``main``."""
        self.policy_due = False
        try:
            result = approve(self.repo, self.store, self.config, [], by_policy=True)
        except (ApproveError, RepoError) as exc:
            self.policy_due = True
            self.log(f"proxy: review policy not applied: {exc}")
            return
        if result.commit is not None:
            self.log(f"proxy: {result.summary().splitlines()[-1]}")
