"""Each hub's own counters for the last hour, in one-minute buckets (pure: no I/O, the
clock is passed in).

Fed with the activities the ingress accepted (their hub and time) and the delivery log's
attempt records; read as a window of `WINDOW_BUCKETS` buckets ending at the current
minute. Memory is bounded whatever the traffic: per hub at most the buckets of two windows
(records from the future within one window are kept for when their minute comes), each a
fixed set of counters and a fixed latency histogram, and at most `max_hubs` hubs.
"""

from __future__ import annotations

from bisect import bisect_left

from msgspec import Struct, field

from switchboard.model import AttemptRecord

BUCKET_MS = 60_000
WINDOW_BUCKETS = 60
WINDOW_MS = BUCKET_MS * WINDOW_BUCKETS
# Upper bounds (ms) of the latency histogram's bins; one more bin holds everything above.
# Hubs are made by the operator, so this is far above any deployment's count; it only
# keeps records naming made-up hubs from growing memory.
MAX_HUBS = 100_000
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000,
                                      30_000)


class _Counts(Struct):
    activities_in: int = 0
    attempts: int = 0
    delivered: int = 0
    errors: int = 0
    failed: int = 0
    latency_count: int = 0
    latency_sum_ms: int = 0
    latency_max_ms: int = 0
    latency_bins: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))


class StatsBucket(Struct, rename="camel"):
    """One minute of a hub: what came in, what went out, and how long attempts took."""

    at: int  # the minute's start, ms since the epoch
    activities_in: int  # activities the ingress accepted for the hub
    deliveries_out: int  # delivery attempts made (requests sent, redeliveries included)
    delivered: int  # attempts that succeeded
    errors: int  # attempts that did not (each is retried or dead-lettered)
    failed: int  # deliveries dead-lettered
    latency_avg_ms: int | None  # over the attempts that got an answer or timed out
    latency_p50_ms: int | None  # the upper bound of the histogram bin holding the median
    latency_p95_ms: int | None
    latency_max_ms: int | None


class HubWindow(Struct, rename="camel"):
    """The answer of ``GET /api/v1/hubs/{hubId}/stats``: oldest bucket first."""

    hub_id: str
    bucket_ms: int
    since: int  # the first bucket's start
    until: int  # the end of the last bucket (the current minute's)
    buckets: list[StatsBucket]


def minute_of(at_ms: int) -> int:
    """The start of the bucket holding `at_ms`."""
    return at_ms - at_ms % BUCKET_MS


def _quantile(bins: list[int], count: int, q: float, top: int) -> int | None:
    if count == 0:
        return None
    rank = max(1, int(q * count + 0.999999))
    seen = 0
    for i, n in enumerate(bins):
        seen += n
        if seen >= rank:
            # The last bin has no upper bound: the largest latency seen is the honest one.
            return LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else top
    return top


def _bucket(at: int, c: _Counts | None) -> StatsBucket:
    if c is None:
        return StatsBucket(at=at, activities_in=0, deliveries_out=0, delivered=0, errors=0,
                           failed=0, latency_avg_ms=None, latency_p50_ms=None,
                           latency_p95_ms=None, latency_max_ms=None)
    n = c.latency_count
    return StatsBucket(
        at=at, activities_in=c.activities_in, deliveries_out=c.attempts,
        delivered=c.delivered, errors=c.errors, failed=c.failed,
        latency_avg_ms=round(c.latency_sum_ms / n) if n else None,
        latency_p50_ms=_quantile(c.latency_bins, n, 0.5, c.latency_max_ms),
        latency_p95_ms=_quantile(c.latency_bins, n, 0.95, c.latency_max_ms),
        latency_max_ms=c.latency_max_ms if n else None,
    )


class HubStats:
    """Per-hub minute buckets of the last hour, for at most `max_hubs` hubs at a time."""

    def __init__(self, max_hubs: int = MAX_HUBS) -> None:
        if max_hubs < 1:
            raise ValueError("max_hubs must be at least 1")
        self.max_hubs = max_hubs
        self._hubs: dict[str, dict[int, _Counts]] = {}
        self.dropped = 0  # records not counted: too old, too far ahead, or no room

    def __len__(self) -> int:
        return len(self._hubs)

    def _counts(self, hub_id: str, at: int, now: int) -> _Counts | None:
        if not now - WINDOW_MS < at < now + WINDOW_MS:
            self.dropped += 1
            return None
        buckets = self._hubs.get(hub_id)
        if buckets is None:
            if len(self._hubs) >= self.max_hubs:
                self.prune(now)
            if len(self._hubs) >= self.max_hubs:
                self.dropped += 1
                return None
            buckets = self._hubs[hub_id] = {}
        minute = minute_of(at)
        c = buckets.get(minute)
        if c is None:
            if len(buckets) >= 2 * WINDOW_BUCKETS:
                self._prune_hub(hub_id, buckets, now)
            c = buckets[minute] = _Counts()
        return c

    def record_activity(self, hub_id: str, at: int, now: int) -> None:
        """Count one activity accepted for `hub_id` at `at` (ms)."""
        c = self._counts(hub_id, at, now)
        if c is not None:
            c.activities_in += 1

    def record_attempt(self, rec: AttemptRecord, now: int) -> None:
        """Count one record of the delivery log: an attempt (``attempt`` ≥ 1) with its
        outcome and latency, and a delivery dead-lettered (status ``failed``)."""
        if rec.attempt < 1 and rec.status != "failed":
            return  # a status change without a request: nothing went out
        c = self._counts(rec.hub_id, rec.at, now)
        if c is None:
            return
        if rec.status == "failed":
            c.failed += 1
        if rec.attempt < 1:
            return
        c.attempts += 1
        if rec.status == "delivered":
            c.delivered += 1
        else:
            c.errors += 1
        if rec.latency_ms is not None and rec.latency_ms >= 0:
            ms = rec.latency_ms
            c.latency_count += 1
            c.latency_sum_ms += ms
            c.latency_max_ms = max(c.latency_max_ms, ms)
            c.latency_bins[bisect_left(LATENCY_BOUNDS_MS, ms)] += 1

    def _prune_hub(self, hub_id: str, buckets: dict[int, _Counts], now: int) -> None:
        oldest = minute_of(now) - (WINDOW_BUCKETS - 1) * BUCKET_MS
        for minute in [m for m in buckets if m < oldest]:
            del buckets[minute]
        if not buckets:
            del self._hubs[hub_id]

    def prune(self, now: int) -> None:
        """Forget every bucket that has left the window, and hubs left with none."""
        for hub_id, buckets in list(self._hubs.items()):
            self._prune_hub(hub_id, buckets, now)

    def window(self, hub_id: str, now: int) -> HubWindow:
        """The hub's last `WINDOW_BUCKETS` minutes, the current one last."""
        last = minute_of(now)
        first = last - (WINDOW_BUCKETS - 1) * BUCKET_MS
        buckets = self._hubs.get(hub_id, {})
        return HubWindow(
            hub_id=hub_id, bucket_ms=BUCKET_MS, since=first, until=last + BUCKET_MS,
            buckets=[_bucket(m, buckets.get(m))
                     for m in range(first, last + BUCKET_MS, BUCKET_MS)],
        )
