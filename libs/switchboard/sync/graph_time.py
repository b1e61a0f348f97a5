"""Graph's times ⇄ epoch milliseconds.

Graph writes instants as ISO 8601 in UTC (``2024-05-01T09:30:00Z``, up to 7 fractional
digits) and event/task times as a wall clock plus a zone (``dateTimeTimeZone``), the zone
an IANA name or a Windows one ("Pacific Standard Time"). The connector asks Graph for
UTC (``Prefer: outlook.timezone="UTC"``) and writes UTC, so the zone table is only the
fallback for a mailbox that answers in its own zone: the common Windows names, each
mapped to the IANA zone Unicode CLDR's windowsZones gives for territory 001.

All-day events are dates, not instants: their canonical times are the dates' UTC
midnights, whatever zone Graph names (`all_day_ms`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from switchboard.sync.graph_wire import DateTimeTimeZone

__all__ = ["WINDOWS_ZONES", "UnknownTimeZone", "all_day_ms", "format_instant", "format_utc",
           "parse_instant", "parse_zoned", "zone"]

WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Calcutta",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Buenos_Aires",
    "Mexico Standard Time": "America/Mexico_City",
}
_FRACTION = re.compile(r"\.(\d+)")


class UnknownTimeZone(ValueError):
    """A zone name that is neither IANA nor in the Windows table."""


def zone(name: str | None) -> ZoneInfo:
    """The zone Graph named (None or empty: UTC)."""
    if not name:
        return ZoneInfo("UTC")
    iana = WINDOWS_ZONES.get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimeZone(name) from None


def _parse(text: str) -> datetime:
    # Python 3.11 reads at most 6 fractional digits; Graph writes 7.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip(), count=1)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def parse_instant(text: str) -> int:
    """An ISO 8601 instant (``…Z`` or with an offset; naive means UTC) as epoch ms."""
    moment = _parse(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _ms(moment)


def parse_zoned(value: DateTimeTimeZone) -> int:
    """A ``dateTimeTimeZone`` as epoch ms (the wall clock read in its zone)."""
    moment = _parse(value.date_time)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(value.time_zone))
    return _ms(moment)


def all_day_ms(value: DateTimeTimeZone) -> int:
    """An all-day event's bound: the UTC midnight of its date, the zone ignored."""
    day = _parse(value.date_time).date()
    return _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


def format_utc(ms: int) -> DateTimeTimeZone:
    """Epoch ms as Graph's ``dateTimeTimeZone`` in UTC."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return DateTimeTimeZone(date_time=moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "0000",
                            time_zone="UTC")


def format_instant(ms: int) -> str:
    """Epoch ms as an ISO 8601 UTC instant (for ``$filter`` and the fake)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

