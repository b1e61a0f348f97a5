"""Which long-running loops a process depends on, and whether they are still running.

A service's consume loop (router, deliverer, a table reader...) is an asyncio task; if it
dies of an exception nobody awaits, the process keeps answering HTTP while doing nothing.
Loops started with `supervised()` are recorded by the process's `Supervisor` (found through
a context variable that the app sets before starting its services), and the liveness
probe fails as soon as one of them has ended, so the orchestrator restarts the process.

Loops started later, on demand (the stream fan-out and WebChat tails start with their first
socket, outside the start-up context), are watched by the supervisor their owner captured
at start (`current.get()`); one stopped on purpose (its last socket gone) is `release`d
first, so it does not count as dead.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Supervisor:
    """The essential loops of one process, by name (a newer loop of a name replaces the
    older one, so a service may restart its own loop)."""

    def __init__(self) -> None:
        self._loops: dict[str, asyncio.Task[Any]] = {}

    def watch(self, task: asyncio.Task[T]) -> asyncio.Task[T]:
        self._loops[task.get_name()] = task
        task.add_done_callback(self._ended)
        return task

    def release(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task`: it is about to end on purpose (it was not needed any more).
        A newer loop of the same name stays watched."""
        if self._loops.get(task.get_name()) is task:
            del self._loops[task.get_name()]

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._loops.get(task.get_name()) is not task or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("loop %s died", task.get_name(), exc_info=exc)

    def dead(self) -> list[str]:
        """Every loop that has ended (returned, failed or was cancelled), with why."""
        out = []
        for name, task in sorted(self._loops.items()):
            if not task.done():
                continue
            if task.cancelled():
                out.append(f"{name}: cancelled")
            elif (exc := task.exception()) is not None:
                out.append(f"{name}: {exc.__class__.__name__}")
            else:
                out.append(f"{name}: returned")
        return out

    def names(self) -> list[str]:
        return sorted(self._loops)

    def task(self, name: str) -> asyncio.Task[Any]:
        return self._loops[name]


current: contextvars.ContextVar[Supervisor | None] = contextvars.ContextVar(
    "switchboard_supervisor", default=None)


def supervised(coro: Coroutine[Any, Any, T], *, name: str,
               supervisor: Supervisor | None = None) -> asyncio.Task[T]:
    """`asyncio.create_task`, recorded by `supervisor`, else by the current process's
    supervisor (if any)."""
    task = asyncio.create_task(coro, name=name)
    if supervisor is None:
        supervisor = current.get()
    if supervisor is not None:
        supervisor.watch(task)
    return task
