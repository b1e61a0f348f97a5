"""The console's charts: per-hub minute buckets of the last hour (switchboard.hub_stats)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchboard.hub_stats import BUCKET_MS, WINDOW_BUCKETS, WINDOW_MS, HubStats, minute_of
from switchboard.model import AttemptRecord

NOW = 1_800_000_000_000 + 12_345  # mid-minute on purpose


def attempt(hub: str = "h1", at: int = NOW, attempt: int = 1, status: Any = "delivered",
            latency: int | None = 20, code: int | None = 200) -> AttemptRecord:
    return AttemptRecord(delivery_id=f"d{at}{attempt}", activity_id="a", hub_id=hub,
                         destination_id="i", conversation_id="c", status=status,
                         attempt=attempt, at=at, code=code, latency_ms=latency)


def test_window_has_sixty_minutes_ending_now() -> None:
    w = HubStats().window("h1", NOW)
    assert len(w.buckets) == WINDOW_BUCKETS
    assert w.buckets[-1].at == minute_of(NOW) <= NOW < w.until
    assert w.until - w.since == WINDOW_MS
    assert [b.at for b in w.buckets] == list(range(w.since, w.until, BUCKET_MS))
    assert all(b.activities_in == 0 and b.latency_avg_ms is None for b in w.buckets)
    assert msgspec.json.decode(msgspec.json.encode(w))["bucketMs"] == BUCKET_MS


def test_counts_land_in_their_minute_and_hub() -> None:
    s = HubStats()
    s.record_activity("h1", NOW, NOW)
    s.record_activity("h1", NOW - BUCKET_MS, NOW)
    s.record_activity("h2", NOW, NOW)
    s.record_attempt(attempt(latency=30), NOW)
    s.record_attempt(attempt(attempt=2, status="pending", latency=3000, code=503), NOW)
    s.record_attempt(attempt(attempt=3, status="failed", latency=10, code=503), NOW)
    s.record_attempt(attempt(attempt=0, status="pending", latency=None), NOW)  # no request
    s.record_attempt(attempt(attempt=0, status="failed", latency=None), NOW)  # circuit: dead
    last, before = s.window("h1", NOW).buckets[-1], s.window("h1", NOW).buckets[-2]
    assert (last.activities_in, before.activities_in) == (1, 1)
    assert (last.deliveries_out, last.delivered, last.errors, last.failed) == (3, 1, 2, 2)
    assert last.latency_avg_ms == round((30 + 3000 + 10) / 3)
    assert last.latency_max_ms == 3000
    assert last.latency_p50_ms == 50  # the bin holding 30
    assert last.latency_p95_ms == 5000  # the bin holding 3000
    other = s.window("h2", NOW).buckets[-1]
    assert (other.activities_in, other.deliveries_out) == (1, 0)


def test_latency_above_the_last_bin_reports_the_maximum() -> None:
    s = HubStats()
    s.record_attempt(attempt(latency=90_000), NOW)
    b = s.window("h1", NOW).buckets[-1]
    assert b.latency_p50_ms == b.latency_p95_ms == b.latency_max_ms == 90_000


def test_old_and_far_future_records_are_dropped() -> None:
    s = HubStats()
    s.record_activity("h1", NOW - WINDOW_MS - 1, NOW)
    s.record_activity("h1", NOW + WINDOW_MS + 1, NOW)
    assert len(s) == 0 and s.dropped == 2
    # A little ahead (clock skew) is kept for when its minute comes.
    s.record_activity("h1", NOW + 2 * BUCKET_MS, NOW)
    assert sum(b.activities_in for b in s.window("h1", NOW).buckets) == 0
    later = NOW + 2 * BUCKET_MS
    assert s.window("h1", later).buckets[-1].activities_in == 1


def test_buckets_leave_with_the_window() -> None:
    s = HubStats()
    s.record_activity("h1", NOW, NOW)
    later = NOW + WINDOW_MS
    assert sum(b.activities_in for b in s.window("h1", later).buckets) == 0
    s.prune(later)
    assert len(s) == 0


@pytest.mark.parametrize("minutes", [WINDOW_BUCKETS * 5])
def test_memory_per_hub_is_bounded_over_time(minutes: int) -> None:
    s = HubStats()
    for m in range(minutes):
        now = NOW + m * BUCKET_MS
        s.record_activity("h1", now, now)
        assert len(s._hubs["h1"]) <= 2 * WINDOW_BUCKETS
    now = NOW + (minutes - 1) * BUCKET_MS
    assert sum(b.activities_in for b in s.window("h1", now).buckets) == WINDOW_BUCKETS


def test_hubs_are_capped_and_freed_when_their_buckets_expire() -> None:
    s = HubStats(max_hubs=2)
    s.record_activity("h1", NOW - WINDOW_MS + BUCKET_MS, NOW)
    s.record_activity("h2", NOW, NOW)
    s.record_activity("h3", NOW, NOW)  # no room: h1's bucket is still in the window
    assert len(s) == 2 and s.dropped == 1
    later = NOW + 2 * BUCKET_MS  # h1's only bucket has left the window: room for h3
    s.record_activity("h3", later, later)
    assert len(s) == 2 and s.window("h3", later).buckets[-1].activities_in == 1
    with pytest.raises(ValueError):
        HubStats(max_hubs=0)
