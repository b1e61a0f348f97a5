"""Token buckets: bursts, refill, isolation between keys, bounded memory."""

import pytest

from switchboard.ratelimit import RateLimiter


def test_burst_then_refill_at_rate() -> None:
    rl = RateLimiter(rate=10, burst=3)
    assert [rl.take("a", 0.0) for _ in range(3)] == [None, None, None]
    wait = rl.take("a", 0.0)
    assert wait == pytest.approx(0.1)
    assert rl.take("a", 0.05) is not None  # half a token is not a token
    assert rl.take("a", 0.1) is None
    assert rl.take("a", 100.0) is None  # refill is capped at the burst
    assert [rl.take("a", 100.0) for _ in range(2)] == [None, None]
    assert rl.take("a", 100.0) == pytest.approx(0.1)


def test_keys_are_isolated_and_memory_bounded() -> None:
    rl = RateLimiter(rate=1, burst=1, max_keys=2)
    assert rl.take("noisy", 0) is None
    assert rl.take("noisy", 0) is not None
    assert rl.take("quiet", 0) is None  # another key is unaffected
    rl.take("third", 0)  # evicts the least recently used ("noisy")
    assert rl.take("noisy", 0) is None


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_peek_tells_without_spending() -> None:
    rl = RateLimiter(rate=10, burst=2)
    assert rl.peek("a", 0.0) is None  # unknown: a full bucket
    assert rl.take("a", 0.0) is None and rl.peek("a", 0.0) is None
    assert rl.take("a", 0.0) is None
    assert rl.peek("a", 0.0) == pytest.approx(0.1)
    assert rl.peek("a", 0.0) == pytest.approx(0.1)  # peeking spends nothing
    assert rl.peek("a", 0.1) is None
