"""Retry policy: classification, backoff schedule, Retry-After parsing. Pure."""

from __future__ import annotations

import random

import pytest

from switchboard.retry import (
    Circuit,
    Outcome,
    RetryPolicy,
    Strikes,
    classify_status,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify_status(status) is Outcome.DELIVERED


@pytest.mark.parametrize("status", [100, 301, 302, 304, 400, 401, 403, 404, 409, 413, 429,
                                    500, 502, 503, 504, 599])
def test_every_other_status_is_retried(status: int) -> None:
    assert classify_status(status) is Outcome.RETRY


def test_410_gone_is_permanent() -> None:
    assert classify_status(410) is Outcome.PERMANENT


def test_default_schedule_is_about_27_hours_in_eight_attempts() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.max_attempts == 8
    assert [policy.delay(n) for n in range(1, 8)] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert 27 * 3600 <= sum(policy.waits) <= 28 * 3600


def test_parse_reads_the_setting() -> None:
    policy = RetryPolicy.parse("0,1,2,3", jitter=0.0)
    assert policy.waits == (0.0, 1.0, 2.0, 3.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("text", ["", "0,,1", "a,b", "0,-1", "0,inf", "0,nan"])
def test_parse_refuses_a_malformed_schedule(text: str) -> None:
    with pytest.raises(ValueError):
        RetryPolicy.parse(text)


def test_absurd_attempt_numbers_use_the_last_wait() -> None:
    policy = RetryPolicy.parse("0,1,10", jitter=0.0)
    assert policy.delay(10_000) == 10.0
    assert policy.delay(0) == 1.0  # treated as the first attempt


def test_jitter_stays_within_twenty_percent_and_spreads() -> None:
    policy = RetryPolicy(jitter=0.2)
    rng = random.Random(7)
    for attempt in range(1, 8):
        base = policy.backoff(attempt)
        samples = [policy.delay(attempt, rng=rng) for _ in range(300)]
        assert all(base * 0.8 <= s <= base * 1.2 for s in samples)
        # Jitter actually spreads the delays (a fixed delay would resynchronise retries).
        assert max(samples) - min(samples) > base * 0.2


def test_retry_after_is_a_floor_capped_at_the_longest_wait() -> None:
    policy = RetryPolicy.parse("0,0.1,5,3.2", jitter=0.0)
    assert policy.delay(1, retry_after=1.0) == 1.0
    assert policy.delay(1, retry_after=3600.0) == 5.0  # a hostile header cannot park a lane
    assert policy.delay(2, retry_after=0.5) == 5.0  # our own wait is already longer
    assert policy.delay(1, retry_after=0.0) == 0.1


def test_should_retry_counts_attempts() -> None:
    policy = RetryPolicy.parse("0,1,1")
    assert policy.should_retry(1, Outcome.RETRY)
    assert policy.should_retry(2, Outcome.RETRY)
    assert not policy.should_retry(3, Outcome.RETRY)
    assert not policy.should_retry(1, Outcome.PERMANENT)
    assert not policy.should_retry(1, Outcome.DELIVERED)


def test_one_attempt_policy_never_retries() -> None:
    assert not RetryPolicy.parse("0").should_retry(1, Outcome.RETRY)


@pytest.mark.parametrize("kwargs", [{"waits": ()}, {"waits": (0, -1.0)}, {"jitter": 1.5},
                                    {"jitter": -0.1}])
def test_invalid_policy_is_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def _circuit() -> Circuit:
    return Circuit(threshold=3, cooldown_s=10.0, max_cooldown_s=25.0)


def test_circuit_opens_after_consecutive_failures_only() -> None:
    c = _circuit()
    for t in (1.0, 2.0):
        assert c.admit(t)
        c.record(False, t, 1000 + t)
    assert c.admit(3.0)
    c.record(True, 3.0, 1003.0)  # a success resets the count
    for t in (4.0, 5.0, 6.0):
        assert c.admit(t)
        c.record(False, t, 1000 + t)
    assert c.is_open and not c.admit(7.0)
    assert c.wait(7.0) == pytest.approx(9.0)
    assert c.failing_since == 1004.0


def test_one_probe_at_a_time_and_its_outcome_decides() -> None:
    c = _circuit()
    for t in (0.0, 0.0, 0.0):
        c.admit(t)
        c.record(False, t, t)
    assert not c.admit(9.9)
    assert c.admit(10.0)  # the probe
    assert not c.admit(10.0)  # only one
    c.record(False, 10.0, 10.0)  # probe failed: open twice as long
    assert c.wait(10.0) == pytest.approx(20.0)
    assert c.admit(30.0)
    c.record(False, 30.0, 30.0)
    assert c.wait(30.0) == pytest.approx(25.0)  # capped
    assert c.admit(55.0)
    c.record(True, 55.0, 55.0)
    assert not c.is_open and c.admit(55.0) and c.failing_since is None


def test_an_abandoned_probe_frees_the_slot() -> None:
    c = _circuit()
    for _ in range(3):
        c.admit(0.0)
        c.record(False, 0.0, 0.0)
    assert c.admit(10.0)
    c.abandon()
    assert c.admit(10.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        (" 120 ", 120.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # IMF-fixdate
        ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # obsolete RFC 850 form
        ("Tue Nov 14 22:13:21 2023", 1.0),  # asctime form
        ("Tue, 14 Nov 2023 22:13:50 -0000", 30.0),
        ("Mon, 13 Nov 2023 00:00:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, "", "  ", "-1", "1.5", "soon", "\uff11\uff12", "9" * 100,
                                   "Tue, 99 Nov 2023 22:13:50 GMT"])
def test_malformed_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_strikes_give_up_after_the_limit_with_doubling_waits() -> None:
    strikes = Strikes(3)
    key = ("activities", 7)
    assert strikes.backoff_s(key) == 0.0
    assert strikes.strike(key) == 1 and not strikes.out(key)
    assert strikes.backoff_s(key) == 0.5
    assert strikes.strike(key) == 2 and not strikes.out(key)
    assert strikes.backoff_s(key) == 1.0
    assert strikes.strike(key) == 3 and strikes.out(key)
    strikes.clear(key)
    assert not strikes.out(key) and strikes.strike(key) == 1


def test_strikes_are_bounded_and_waits_capped() -> None:
    strikes = Strikes(100, capacity=2)
    for _ in range(30):
        strikes.strike("a")
    assert strikes.backoff_s("a") == 10.0
    strikes.strike("b")
    strikes.strike("c")  # "a" is the oldest: forgotten
    assert strikes.backoff_s("a") == 0.0 and strikes.strike("a") == 1
