"""Schedules (pure): slots per interval type, zones and daylight saving, month ends,
disabled, the bounded catch-up; Hypothesis for the invariants."""

from __future__ import annotations

import datetime
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.errors import BadRequest
from switchboard.sync.schedule import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    Schedule,
    check_schedule,
    next_fire,
    slot_after,
)

UTC = datetime.UTC


def ms(*args: int, tz: datetime.tzinfo = UTC) -> int:
    return int(datetime.datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def utc(t: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t / 1000, UTC)


def test_every_30_minutes_from_4_am_is_on_the_hour_and_half_hour() -> None:
    s = Schedule(interval_type=0, interval=30, time_of_day="04:00")
    assert utc(slot_after(s, ms(2025, 5, 2, 10, 7))) == datetime.datetime(2025, 5, 2, 10, 30,
                                                                          tzinfo=UTC)
    # Strictly after: a slot is never its own successor.
    assert slot_after(s, ms(2025, 5, 2, 10, 30)) == ms(2025, 5, 2, 11, 0)


def test_every_7_minutes_is_a_fixed_period_across_midnight() -> None:
    s = Schedule(interval_type=0, interval=7, time_of_day="00:05")
    t = ms(2025, 1, 1, 23, 50)
    slots = [t := slot_after(s, t) for _ in range(5)]
    assert all(b - a == 7 * MINUTE_MS for a, b in itertools.pairwise(slots))
    assert all((x - ms(1970, 1, 1, 0, 5)) % (7 * MINUTE_MS) == 0 for x in slots)


def test_every_3_hours_at_a_quarter_past() -> None:
    s = Schedule(interval_type=1, interval=3, time_of_day="01:15")
    t = slot_after(s, ms(2025, 6, 1, 2, 0))
    assert utc(t).hour == 4 and utc(t).minute == 15
    assert slot_after(s, t) - t == 3 * HOUR_MS


def test_daily_at_4_am_new_york_follows_the_wall_clock_across_dst() -> None:
    ny = __import__("zoneinfo").ZoneInfo("America/New_York")
    s = Schedule(interval_type=2, interval=1, time_of_day="04:00", timezone="America/New_York")
    t = ms(2025, 3, 7, 12, 0)
    slots = [t := slot_after(s, t) for _ in range(4)]
    local = [datetime.datetime.fromtimestamp(x / 1000, ny) for x in slots]
    assert [(d.day, d.hour, d.minute) for d in local] == [(8, 4, 0), (9, 4, 0), (10, 4, 0),
                                                          (11, 4, 0)]
    # Spring forward on 9 March: that day is 23 hours long.
    assert slots[1] - slots[0] == 23 * HOUR_MS
    assert slots[2] - slots[1] == 24 * HOUR_MS


def test_a_wall_time_skipped_by_dst_fires_once_when_the_clock_passes_it() -> None:
    s = Schedule(interval_type=2, interval=1, time_of_day="02:30", timezone="America/New_York")
    t = slot_after(s, ms(2024, 3, 9, 12, 0))
    assert utc(t) == datetime.datetime(2024, 3, 10, 7, 30, tzinfo=UTC)  # 03:30 EDT
    assert utc(slot_after(s, t)) == datetime.datetime(2024, 3, 11, 6, 30, tzinfo=UTC)


def test_a_wall_time_that_happens_twice_fires_once() -> None:
    s = Schedule(interval_type=2, interval=1, time_of_day="01:30", timezone="America/New_York")
    t = slot_after(s, ms(2024, 11, 2, 12, 0))
    assert utc(t) == datetime.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # the first 01:30
    assert utc(slot_after(s, t)) == datetime.datetime(2024, 11, 4, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(("start", "want"), [
    ((2024, 2, 28, 12), [(2024, 2, 29), (2024, 3, 1)]),
    ((2025, 2, 28, 12), [(2025, 3, 1), (2025, 3, 2)]),
    ((2025, 12, 31, 12), [(2026, 1, 1), (2026, 1, 2)]),
    ((2025, 4, 30, 12), [(2025, 5, 1), (2025, 5, 2)]),
])
def test_daily_slots_cross_month_and_year_ends(start: tuple[int, ...],
                                               want: list[tuple[int, int, int]]) -> None:
    s = Schedule(interval_type=2, interval=1, time_of_day="06:00")
    t = ms(*start)
    got = []
    for _ in want:
        t = slot_after(s, t)
        got.append((utc(t).year, utc(t).month, utc(t).day))
    assert got == want


def test_every_other_day_counts_days_from_the_epoch() -> None:
    s = Schedule(interval_type=2, interval=2, time_of_day="00:00")
    t = slot_after(s, ms(2025, 2, 27, 1, 0))
    assert ((t // DAY_MS) % 2) == 0 and slot_after(s, t) - t == 2 * DAY_MS


def test_disabled_never_fires() -> None:
    s = Schedule(enabled=False, interval_type=0, interval=1)
    assert next_fire(s, 0, ms(2025, 1, 1)) is None


def test_a_new_schedule_fires_first_after_it_was_set_and_catches_up_at_most_max_behind() -> None:
    s = Schedule(interval_type=0, interval=1)
    set_at = ms(2025, 1, 1, 10, 0) + 30_000
    assert next_fire(s, set_at, set_at + 1000) == ms(2025, 1, 1, 10, 1)  # not yet due
    # Away for an hour: of 60 due slots only the last 10 fire, one after another.
    now = set_at + HOUR_MS
    first = next_fire(s, set_at, now, max_behind=10)
    assert first == ms(2025, 1, 1, 10, 51)
    days = Schedule(interval_type=2, interval=1, time_of_day="04:00")
    assert next_fire(days, ms(2020, 1, 1), ms(2025, 1, 1, 5, 0), max_behind=3) == ms(
        2024, 12, 30, 4, 0)


def test_the_minute_can_be_shortened_for_tests() -> None:
    s = Schedule(interval_type=0, interval=2)
    assert slot_after(s, 1_000, minute_ms=1000) == 2_000
    assert slot_after(s, 2_000, minute_ms=1000) == 4_000


def test_unknown_zones_are_refused() -> None:
    check_schedule(Schedule(interval_type=2, timezone="Europe/Paris"))
    check_schedule(None)
    with pytest.raises(BadRequest) as err:
        check_schedule(Schedule(interval_type=2, timezone="Mars/Olympus"))
    assert err.value.field == "schedule.timezone"


zones = st.sampled_from([None, "America/New_York", "Europe/London", "Australia/Lord_Howe",
                         "Asia/Kathmandu", "Pacific/Apia"])
schedules = st.builds(
    Schedule, interval_type=st.sampled_from([0, 1, 2]), interval=st.integers(1, 100),
    time_of_day=st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23),
                          st.integers(0, 59)),
    timezone=zones)
times = st.integers(ms(1971, 1, 1), ms(2100, 1, 1))


@settings(max_examples=300, deadline=None)
@given(schedules, times)
def test_slots_are_strictly_increasing_and_nothing_lies_between(s: Schedule, t: int) -> None:
    a = slot_after(s, t)
    b = slot_after(s, a)
    assert t < a < b
    # No slot between t and a: asking from any point before a gives a.
    assert slot_after(s, (t + a) // 2) == a
    assert slot_after(s, a - 1) == a
    if s.interval_type == 2:
        # About N days apart (a DST change moves it by at most a few hours).
        assert abs((b - a) - s.interval * DAY_MS) <= 3 * HOUR_MS


@settings(max_examples=200, deadline=None)
@given(schedules, times, st.integers(0, 50 * DAY_MS), st.integers(1, 20))
def test_next_fire_is_a_slot_after_the_last_and_at_most_max_behind_are_due(
        s: Schedule, last: int, gap: int, behind: int) -> None:
    now = last + gap
    fire = next_fire(s, last, now, max_behind=behind)
    assert fire is not None and fire > last
    assert slot_after(s, fire - 1) == fire  # it is a slot
    due = 0
    t = fire
    while t <= now and due <= behind:
        due += 1
        t = slot_after(s, t)
    assert due <= behind


def test_the_scheduler_owns_the_partition_the_producer_sends_a_profiles_runs_to() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from switchboard.services.sync_scheduler import partition_of, slot_job_id

    for n in (1, 4, 12):
        for i in range(200):
            pid = f"profile-{i}"
            assert partition_of(pid, n) == DefaultPartitioner()(pid.encode(), list(range(n)),
                                                                list(range(n)))
    # A slot's job id is the same whoever fires it, and differs per slot and profile.
    assert slot_job_id("p", 1) == slot_job_id("p", 1) != slot_job_id("p", 2)
    assert slot_job_id("p", 1) != slot_job_id("q", 1)
