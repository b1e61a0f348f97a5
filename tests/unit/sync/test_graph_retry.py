"""Retrying a lifecycle notification's Graph calls, pure: what `next_step` decides after
a failed attempt (the schedule, the attempts and the time allowed, Retry-After)."""

from __future__ import annotations

import random

from switchboard.retry import RetryPolicy
from switchboard.sync.graph_retry import Failure, Step, next_step

POLICY = RetryPolicy.parse("0,2,10,30", jitter=0.0)
PASSING = Failure(passing=True)


def test_a_passing_failure_waits_the_schedule() -> None:
    assert next_step(POLICY, 1, PASSING, 0.0, 300.0) == Step(again=True, wait_s=2.0)
    assert next_step(POLICY, 2, PASSING, 2.0, 300.0) == Step(again=True, wait_s=10.0)
    assert next_step(POLICY, 3, PASSING, 12.0, 300.0) == Step(again=True, wait_s=30.0)


def test_the_attempts_are_bounded() -> None:
    assert next_step(POLICY, 4, PASSING, 42.0, 300.0) == Step(again=False, why="attempts")


def test_the_time_is_bounded() -> None:
    assert next_step(POLICY, 3, PASSING, 271.0, 300.0) == Step(again=False, why="time")
    assert next_step(POLICY, 3, PASSING, 270.0, 300.0) == Step(again=True, wait_s=30.0)


def test_a_failure_that_will_not_pass_is_not_retried() -> None:
    assert next_step(POLICY, 1, Failure(passing=False), 0.0, 300.0) == Step(
        again=False, why="permanent")


def test_retry_after_is_a_lower_bound_even_beyond_the_schedule() -> None:
    throttled = Failure(passing=True, retry_after_s=45.0)
    assert next_step(POLICY, 1, throttled, 0.0, 300.0) == Step(again=True, wait_s=45.0)
    shorter = Failure(passing=True, retry_after_s=1.0)
    assert next_step(POLICY, 2, shorter, 0.0, 300.0) == Step(again=True, wait_s=10.0)
    # Asked to wait past the time allowed: given up now, not tried early.
    assert next_step(POLICY, 1, Failure(passing=True, retry_after_s=600.0), 0.0,
                     300.0) == Step(again=False, why="time")


def test_jitter_stays_within_the_policy() -> None:
    jittered = RetryPolicy.parse("0,10", jitter=0.2)
    rng = random.Random(7)
    for _ in range(100):
        step = next_step(jittered, 1, PASSING, 0.0, 300.0, rng)
        assert step.again and 8.0 <= step.wait_s <= 12.0


def test_how_graph_failures_are_classified() -> None:
    from switchboard.errors import Unavailable
    from switchboard.services.graph_http import GraphServerError, GraphUnavailable, graph_error
    from switchboard.services.graph_lifecycle import failure_of
    from switchboard.sync.errors import AuthFailed, RecordNotFound

    body = b'{"error": {"code": "x", "message": "y"}}'
    advised = graph_error(429, {"retry-after": "7"}, body)
    assert isinstance(advised, GraphUnavailable) and advised.advised_s == 7.0
    assert failure_of(advised) == Failure(passing=True, retry_after_s=7.0)
    # No Retry-After: passing, nothing asked (the error's own 5 s is only a guess).
    unsaid = graph_error(503, {}, body)
    assert failure_of(unsaid) == Failure(passing=True) and unsaid.retry_after == 5
    server = graph_error(500, {}, body)
    assert isinstance(server, GraphServerError) and server.code == "graph_error"
    assert failure_of(server) == Failure(passing=True)
    assert failure_of(Unavailable("kafka_unavailable", "down")) == Failure(passing=True)
    for final in (graph_error(400, {}, body), AuthFailed("no"), RecordNotFound("gone")):
        assert failure_of(final) == Failure(passing=False)
