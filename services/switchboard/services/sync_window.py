"""At most a window of a run's operations in flight (the creates `ops.alongside` lets run
at once, ``SWITCHBOARD_SYNC_CREATE_CONCURRENCY``); the first failure fails the run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["Window"]


class Window:
    """At most `size` operations in flight; the first failure fails the run."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.tasks: set[asyncio.Task[None]] = set()

    def _reap(self, done: set[asyncio.Task[None]]) -> None:
        self.tasks -= done
        errors = [e for t in done if (e := t.exception()) is not None]
        if errors:
            raise errors[0]

    async def start(self, op: Callable[[], Awaitable[None]]) -> None:
        """Start `op()` once there is room (made only then: a failure meanwhile leaves
        no coroutine behind)."""
        while len(self.tasks) >= self.size:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            self._reap(done)
        self.tasks.add(asyncio.ensure_future(op()))

    async def drain(self) -> None:
        while self.tasks:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
            self._reap(done)

    async def cancel(self) -> None:
        """Stop what is still in flight (after a failure): its creates may have landed
        without their pairs, which the next run matches."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
