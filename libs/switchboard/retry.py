"""Retry policy for deliveries: outcome classification and backoff schedule, pure.

In the manner of `stamina`: exponential backoff with jitter, capped, a bounded number of
attempts. Nothing here sleeps; the deliverer sleeps inside the lane that owns the delivery.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
import random

from msgspec import Struct

__all__ = ["Outcome", "RetryPolicy", "classify_status", "parse_retry_after"]

# 2**62 * base is far past any sane cap; stops float overflow for absurd attempt numbers.
_MAX_EXPONENT = 62
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
    """Exponential backoff: attempt n waits about ``base_s * 2**(n-1)``, at most ``max_s``.

    `jitter` is the fraction of that wait drawn at random: 1.0 is full jitter (uniform in
    [0, wait]), 0.0 none. Jitter spreads retries of many deliveries that failed together.
    """

    max_attempts: int = 8
    base_s: float = 0.5
    max_s: float = 60.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("base_s and max_s must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def backoff(self, attempt: int) -> float:
        """The un-jittered wait after failed attempt number `attempt` (1-based)."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        return min(self.max_s, self.base_s * math.ldexp(1.0, exponent))

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one.

        A receiver's ``Retry-After`` is honoured as a lower bound, but never beyond
        `max_s`: a hostile endpoint must not park a lane for hours.
        """
        wait = self.backoff(attempt)
        if self.jitter:
            wait -= wait * self.jitter * (rng or _RNG).random()
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self.max_s)
        return max(0.0, wait)

    def should_retry(self, attempt: int, outcome: Outcome) -> bool:
        """Whether to try again after attempt number `attempt` (1-based) ended in `outcome`."""
        return outcome is Outcome.RETRY and attempt < self.max_attempts


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
