"""Retry policy for deliveries: outcome classification, the retry schedule and the
circuit breaker, pure.

In the manner of `stamina`: the policy is a function of the attempt number (and the
receiver's Retry-After); nothing here sleeps or reads a clock it was not given.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
import random

from msgspec import Struct

__all__ = ["DEFAULT_SCHEDULE", "Circuit", "Outcome", "RetryPolicy", "Strikes", "classify_status",
           "parse_retry_after"]

# At once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 27 hours in all.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_TENANT_ATTEMPTS = 20
MAX_TENANT_WAIT_S = 7 * 24 * 3600
# Longer than any HTTP-date or sane number of seconds: not worth parsing.
_MAX_RETRY_AFTER_CHARS = 64

_RNG = random.Random()


class Outcome(enum.Enum):
    """What one delivery attempt means for the delivery."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


def classify_status(status: int) -> Outcome:
    """Classify an HTTP response status.

    2xx is delivered. Every other status is retried, because Standard Webhooks senders
    retry any non-2xx: a 4xx is as often a misconfigured or redeploying receiver as a
    real rejection, and the receiver deduplicates on ``webhook-id``. The one exception is
    410 Gone, by which an endpoint says it is gone for good and wants no more attempts.
    """
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.PERMANENT
    return Outcome.RETRY


class RetryPolicy(Struct, frozen=True, kw_only=True):
    """A retry schedule: `waits[i]` seconds before attempt i+1, each counted from the
    previous failure (`waits[0]` is the wait before the first attempt, normally 0).

    So ``len(waits)`` attempts in all. Each wait is jittered by ±`jitter` (a fraction) so
    deliveries that failed together do not retry together. Pure, as in `stamina`: the
    policy says how long; whoever owns the delivery does the waiting.
    """

    waits: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.waits:
            raise ValueError("a retry schedule needs at least one attempt")
        if any(w < 0 or not math.isfinite(w) for w in self.waits):
            raise ValueError("retry waits must be finite and not negative")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be at least 0 and below 1")

    @classmethod
    def parse(cls, schedule: str, jitter: float = 0.2) -> RetryPolicy:
        """From ``"0,5,300"`` (seconds, comma-separated); ValueError when malformed."""
        try:
            waits = tuple(float(part) for part in schedule.split(","))
        except ValueError:
            raise ValueError(f"retry schedule {schedule!r}: comma-separated seconds") from None
        return cls(waits=waits, jitter=jitter)

    @classmethod
    def parse_tenant(cls, schedule: str, jitter: float = 0.2) -> RetryPolicy:
        """A hub's own schedule: like `parse`, within bounds a tenant may choose
        (at most 20 attempts, no wait over 7 days)."""
        policy = cls.parse(schedule, jitter)
        if len(policy.waits) > MAX_TENANT_ATTEMPTS:
            raise ValueError(f"at most {MAX_TENANT_ATTEMPTS} attempts")
        if policy.longest > MAX_TENANT_WAIT_S:
            raise ValueError(f"no wait may exceed {MAX_TENANT_WAIT_S} seconds")
        return policy

    @property
    def max_attempts(self) -> int:
        return len(self.waits)

    @property
    def longest(self) -> float:
        """The longest wait in the schedule: the cap for a receiver's Retry-After."""
        return max(self.waits)

    def backoff(self, attempt: int) -> float:
        """The un-jittered wait after failed attempt number `attempt` (1-based)."""
        index = min(max(attempt, 1), len(self.waits) - 1)
        return self.waits[index]

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one.

        A receiver's ``Retry-After`` is honoured as a lower bound, but never beyond the
        schedule's longest wait: a hostile endpoint must not park a lane for longer.
        """
        wait = self.backoff(attempt)
        if self.jitter and wait:
            wait *= 1.0 + self.jitter * (2.0 * (rng or _RNG).random() - 1.0)
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self.longest)
        return max(0.0, wait)

    def should_retry(self, attempt: int, outcome: Outcome) -> bool:
        """Whether to try again after attempt number `attempt` (1-based) ended in `outcome`."""
        return outcome is Outcome.RETRY and attempt < self.max_attempts


class Circuit(Struct, kw_only=True):
    """One destination's circuit breaker, pure: fed outcomes and the time, it says whether
    an attempt may go out now.

    Closed: everything goes. After `threshold` consecutive failures it opens for
    `cooldown_s`; then exactly one attempt (a probe) may go; its success closes the
    circuit, its failure reopens it for twice as long (at most `max_cooldown_s`). While
    open, deliveries wait (parked) instead of spending their attempts.
    """

    threshold: int
    cooldown_s: float
    max_cooldown_s: float
    failures: int = 0
    open_until: float | None = None  # monotonic seconds; None = closed
    cooldown: float = 0.0
    probing: bool = False
    failing_since: float | None = None  # wall-clock seconds of the first failure in a row

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def admit(self, now: float) -> bool:
        """Whether an attempt may start at monotonic time `now` (taking the probe slot)."""
        if self.open_until is None:
            return True
        if self.probing or now < self.open_until:
            return False
        self.probing = True
        return True

    def wait(self, now: float) -> float:
        """Seconds until a probe may go (0 when closed)."""
        if self.open_until is None:
            return 0.0
        return max(0.0, self.open_until - now)

    def record(self, ok: bool, now: float, wall: float) -> None:
        """An attempt admitted by `admit` ended; `ok` = delivered (or a permanent answer)."""
        was_probe, self.probing = self.probing, False
        if ok:
            self.failures = 0
            self.open_until = None
            self.cooldown = 0.0
            self.failing_since = None
            return
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = wall
        if was_probe or self.open_until is not None:
            self.cooldown = min(self.max_cooldown_s, max(self.cooldown, self.cooldown_s) * 2)
            self.open_until = now + self.cooldown
        elif self.failures >= self.threshold:
            self.cooldown = self.cooldown_s
            self.open_until = now + self.cooldown

    def abandon(self) -> None:
        """An admitted probe did not run to an outcome (cancelled): free the probe slot."""
        self.probing = False


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    `now` is Unix seconds. A date in the past means 0. Anything malformed is None (the
    header is advice; a bad one must not fail the delivery).
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_RETRY_AFTER_CHARS:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


class Strikes:
    """Internal errors per record, so a record that always fails (a bug, not a delivery
    failure) is given up after `limit` tries instead of wedging its stage forever.

    Keys are whatever names the record (partition and offset, a delivery id). Bounded:
    the oldest keys are forgotten beyond `capacity` (a forgotten key starts again at 0,
    which only delays giving up).
    """

    def __init__(self, limit: int, capacity: int = 10_000) -> None:
        self.limit = max(1, limit)
        self._capacity = capacity
        self._counts: dict[object, int] = {}

    def strike(self, key: object) -> int:
        """Count one more failure of `key`; return how many it has had."""
        n = self._counts.pop(key, 0) + 1
        self._counts[key] = n  # re-inserted: most recent last
        if len(self._counts) > self._capacity:
            del self._counts[next(iter(self._counts))]
        return n

    def out(self, key: object) -> bool:
        """`key` has failed `limit` times: give it up."""
        return self._counts.get(key, 0) >= self.limit

    def clear(self, key: object) -> None:
        self._counts.pop(key, None)

    def backoff_s(self, key: object) -> float:
        """Wait before the next try: 0.5 s doubling, at most 10 s."""
        n = self._counts.get(key, 0)
        return 0.0 if n == 0 else min(10.0, 0.5 * 2 ** (n - 1))
