"""Retry policy: classification, backoff schedule, Retry-After parsing. Pure."""

from __future__ import annotations

import random

import pytest

from switchboard.retry import Outcome, RetryPolicy, classify_status, parse_retry_after

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


def test_backoff_doubles_and_caps() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=10.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_survives_absurd_attempt_numbers() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=10.0, jitter=0.0)
    assert policy.delay(10_000) == 10.0
    assert policy.delay(0) == 0.5  # treated as the first attempt


def test_full_jitter_stays_within_zero_and_backoff() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=30.0, jitter=1.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        cap = policy.backoff(attempt)
        samples = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(0.0 <= s <= cap for s in samples)
        # Jitter actually spreads the delays (a fixed delay would resynchronise retries).
        assert max(samples) - min(samples) > cap * 0.5


def test_partial_jitter_keeps_a_floor() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=30.0, jitter=0.25)
    rng = random.Random(1)
    samples = [policy.delay(3, rng=rng) for _ in range(500)]
    assert all(3.0 <= s <= 4.0 for s in samples)


def test_retry_after_is_a_floor_capped_at_max() -> None:
    policy = RetryPolicy(base_s=0.1, max_s=5.0, jitter=0.0)
    assert policy.delay(1, retry_after=1.0) == 1.0
    assert policy.delay(1, retry_after=3600.0) == 5.0  # a hostile header cannot park a lane
    assert policy.delay(6, retry_after=0.5) == 3.2  # our own backoff is already longer
    assert policy.delay(1, retry_after=0.0) == 0.1


def test_should_retry_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, Outcome.RETRY)
    assert policy.should_retry(2, Outcome.RETRY)
    assert not policy.should_retry(3, Outcome.RETRY)
    assert not policy.should_retry(1, Outcome.PERMANENT)
    assert not policy.should_retry(1, Outcome.DELIVERED)


def test_one_attempt_policy_never_retries() -> None:
    assert not RetryPolicy(max_attempts=1).should_retry(1, Outcome.RETRY)


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_s": -1.0}, {"jitter": 1.5},
                                    {"jitter": -0.1}])
def test_invalid_policy_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


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
