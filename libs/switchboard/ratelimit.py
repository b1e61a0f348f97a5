"""Token buckets per key (an integration, an API token): pure, the clock is passed in."""

from __future__ import annotations

from collections import OrderedDict

from msgspec import Struct


class Bucket(Struct):
    tokens: float
    updated: float


class RateLimiter:
    """At most `rate` per second per key, with bursts up to `burst`.

    Keeps at most `max_keys` buckets; the least recently used is forgotten first (a
    forgotten key starts again with a full bucket, which errs on the side of serving).
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def peek(self, key: str, now: float) -> float | None:
        """Like `take` without spending: None if `key` has a token, else the wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.updated) * self.rate)
        return None if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str, now: float, rate: float | None = None) -> float | None:
        """Spend one token for `key`: None if allowed, else seconds until one is free.

        `rate` overrides the limiter's rate for this key (burst: one second of it, at
        least 1), for limits that differ per key.
        """
        burst = self.burst if rate is None else max(1.0, rate)
        rate = self.rate if rate is None else rate
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(tokens=burst, updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate
