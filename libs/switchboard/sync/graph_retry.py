"""Retrying the Graph calls a lifecycle notification leaves to do after its 202
(`switchboard.services.graph_lifecycle`), pure: given how an attempt failed, what next.

The schedule is the project's `switchboard.retry.RetryPolicy` (seconds before each
attempt, jittered), from ``SWITCHBOARD_GRAPH_LIFECYCLE_RETRY_SCHEDULE`` (by default at
once, then 2 s, 10 s, 30 s, 1 min, 2 min: six attempts); all of them within
``SWITCHBOARD_GRAPH_LIFECYCLE_RETRY_MAX_S`` (300 s) of the first. Only a passing
failure is tried again: Graph's 429, 5xx, no answer in time, the broker unreachable. A
``Retry-After`` Graph sent is waited for at least, even beyond the schedule's longest
wait; one that would end past the time allowed gives up at once. Given up, the work is
left to the worker's next look at the profile (subscriptions) and the next notification
or schedule (runs), as before the retries. Nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import random

from msgspec import Struct

from switchboard.retry import RetryPolicy

__all__ = ["Failure", "Step", "next_step"]


class Failure(Struct, frozen=True, kw_only=True):
    """How one attempt failed: `passing` (worth trying again) and the wait the remote
    asked for, if it did (Graph's ``Retry-After``)."""

    passing: bool
    retry_after_s: float | None = None


class Step(Struct, frozen=True, kw_only=True):
    """What to do after a failed attempt: try `again` after `wait_s` seconds, or give up
    for the reason `why` (``permanent``, ``attempts``, ``time``)."""

    again: bool
    wait_s: float = 0.0
    why: str = ""


def next_step(policy: RetryPolicy, attempt: int, failure: Failure, elapsed_s: float,
              max_s: float, rng: random.Random | None = None) -> Step:
    """After attempt number `attempt` (1-based) failed as `failure`, `elapsed_s` seconds
    after the first began: again after how long, or give up (within `max_s` in all)."""
    if not failure.passing:
        return Step(again=False, why="permanent")
    if attempt >= policy.max_attempts:
        return Step(again=False, why="attempts")
    wait = policy.delay(attempt, rng=rng)
    if failure.retry_after_s is not None:
        wait = max(wait, failure.retry_after_s)
    if elapsed_s + wait > max_s:
        return Step(again=False, why="time")
    return Step(again=True, wait_s=wait)
