"""Sync schedules (Autofy's `Schedule`): every N minutes, hours or days (`intervalType`
0, 1, 2) at a time of day, in UTC or an IANA zone; pure.

A schedule's **slots** are the instants it fires at:

- minutes and hours: every N units from the time of day of 1970-01-01 (UTC, or in the
  zone) — a fixed period, the same on every day, unmoved by daylight saving;
- days: at the time of day (wall clock in the zone) on every N-th calendar day counted
  from 1970-01-01. A wall time that does not exist on a spring-forward day fires when
  the clock skips past it (02:30 → 03:30); one that happens twice fires once, the first.

`next_fire(schedule, last_fire, now)` is the slot to fire next: the first after the last
one fired (or after the time the schedule was set), at most `max_behind` slots late.
"""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Annotated, Literal

from msgspec import Meta, Struct

from switchboard.errors import BadRequest

__all__ = ["DAY_MS", "HOUR_MS", "MINUTE_MS", "Schedule", "check_schedule", "next_fire",
           "slot_after"]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_EPOCH_DATE = datetime.date(1970, 1, 1)


class Schedule(Struct, kw_only=True, rename="camel", omit_defaults=True,
               forbid_unknown_fields=True):
    """`intervalType` 0 = minutes, 1 = hours, 2 = days; `interval` N (Autofy's
    `scheduleInterval`); `timeOfDay` "HH:MM" (Autofy's `scheduleTime`); `timezone` an IANA
    name (UTC when absent)."""

    enabled: bool = True
    interval_type: Literal[0, 1, 2]
    interval: Annotated[int, Meta(ge=1, le=10_000)] = 1
    time_of_day: Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "00:00"
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None


def check_schedule(schedule: Schedule | None) -> None:
    """BadRequest unless the schedule's zone (if any) is a known IANA zone."""
    name = schedule.timezone if schedule is not None else None
    if name is None:
        return
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest("invalid_timezone", f"unknown timezone {name[:64]!r}",
                         field="schedule.timezone") from None


def _zone(schedule: Schedule) -> datetime.tzinfo:
    return datetime.UTC if schedule.timezone is None else zoneinfo.ZoneInfo(schedule.timezone)


def _hm(schedule: Schedule) -> tuple[int, int]:
    h, m = schedule.time_of_day.split(":")
    return int(h), int(m)


def _local_ms(day: datetime.date, schedule: Schedule) -> int:
    """The instant of the time of day on `day`, wall clock in the schedule's zone."""
    h, m = _hm(schedule)
    local = datetime.datetime(day.year, day.month, day.day, h, m, tzinfo=_zone(schedule))
    # fold=0: an ambiguous time is its first occurrence; a nonexistent one is read with
    # the offset before the gap, which lands when the wall clock has skipped past it.
    return int(local.timestamp() * 1000)


def slot_after(schedule: Schedule, t: int, *, minute_ms: int = MINUTE_MS) -> int:
    """The first slot strictly after `t` (ms)."""
    if schedule.interval_type in (0, 1):
        unit = minute_ms if schedule.interval_type == 0 else HOUR_MS
        period = schedule.interval * unit
        anchor = _local_ms(_EPOCH_DATE, schedule)
        return anchor + ((t - anchor) // period + 1) * period
    n = schedule.interval
    zone = _zone(schedule)
    day = datetime.datetime.fromtimestamp(t / 1000, tz=zone).date() - datetime.timedelta(days=1)
    # Back a day first: the slot of the local date of `t` may still be ahead.
    offset = (day - _EPOCH_DATE).days % n
    if offset:
        day += datetime.timedelta(days=n - offset)
    while True:
        at = _local_ms(day, schedule)
        if at > t:
            return at
        day += datetime.timedelta(days=n)


def next_fire(schedule: Schedule, last_fire: int, now: int, *, minute_ms: int = MINUTE_MS,
              max_behind: int = 10) -> int | None:
    """The slot to fire next (due when it is at most `now`): the first after `last_fire`
    (the last slot fired, or when the schedule was set). A worker that was away does not
    replay an unbounded backlog: of more than `max_behind` due slots only the last
    `max_behind` fire. None when disabled."""
    if not schedule.enabled:
        return None
    first = slot_after(schedule, last_fire, minute_ms=minute_ms)
    if first > now:
        return first
    if schedule.interval_type in (0, 1):
        period = schedule.interval * (minute_ms if schedule.interval_type == 0 else HOUR_MS)
        due = (now - first) // period + 1  # slots in [first, now]
        return first + max(0, due - max_behind) * period
    # Days: slots are uneven across daylight saving; skip most of a long gap, then walk.
    span = (max_behind + 1) * schedule.interval * DAY_MS
    if now - first > span:
        first = slot_after(schedule, now - span, minute_ms=minute_ms)
    slots = [first]
    while (t := slot_after(schedule, slots[-1], minute_ms=minute_ms)) <= now:
        slots.append(t)
    return slots[max(0, len(slots) - max_behind)]
