"""One upstream request per key however many clients ask at once.

A page refresh or a file download is started by the first request for it; every request that
arrives while it runs awaits the same task, and the next request after it ends starts a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """The running task of each key; ``start`` joins it or starts it."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Future[T]] = {}

    def start(self, key: K, work: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """The task for ``key``: the one running, else ``work()`` started now. Await it shielded
        (``asyncio.shield``) so one client going away does not cancel it for the others."""
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(work())
            task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def running(self, key: K) -> asyncio.Future[T] | None:
        return self._tasks.get(key)

    def _forget(self, key: K, done: asyncio.Future[T]) -> None:
        if self._tasks.get(key) is done:
            del self._tasks[key]
        if not done.cancelled():
            done.exception()  # its callers report it; a task nobody awaited is not an error

    async def settle(self, timeout: float) -> None:
        """Let the running tasks finish, ``timeout`` seconds at most (then ``cancel_all``)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=timeout)

    async def cancel_all(self) -> None:
        """Stop every running task (shutdown): none may outlive the upstream client."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
