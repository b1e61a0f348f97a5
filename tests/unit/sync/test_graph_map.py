"""Graph JSON ⇄ canonical records: round trips, event time zones, all-day events,
recurring events left out, deletes, and fields Graph cannot keep."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchboard.sync.errors import ConnectorError, Unsupported
from switchboard.sync.graph_map import (
    CONTACT_FIELDS,
    EVENT_FIELDS,
    TASK_FIELDS,
    contact_from_graph,
    contact_to_graph,
    email_from_graph,
    event_from_graph,
    event_to_graph,
    record_values,
    task_from_graph,
    task_to_graph,
)
from switchboard.sync.graph_time import format_utc, parse_instant, parse_zoned
from switchboard.sync.graph_wire import (
    DateTimeTimeZone,
    GraphContact,
    GraphEvent,
    GraphMessage,
    GraphTodoTask,
)
from switchboard.sync.records import CalendarEvent, Contact, Task

T0 = "2030-01-15T08:00:00Z"
DAY = 86_400_000


def wire(cls: Any, body: dict[str, Any], **extra: Any) -> Any:
    return msgspec.convert({"id": "g1", "lastModifiedDateTime": T0, **body, **extra}, cls)


def test_contact_round_trip() -> None:
    c = Contact(id="p", modified_at=1, first_name="Ada", last_name="Lovelace",
                email="ada@example.com", phone="+1", mobile_phone="+2", title="Countess",
                company_name="Analytical", tags=["vip"])
    body = contact_to_graph(record_values(c, CONTACT_FIELDS), create=True)
    assert body["displayName"] == "Ada Lovelace"
    back = contact_from_graph(wire(GraphContact, body), now=5)
    assert back == msgspec.structs.replace(c, id="g1", modified_at=parse_instant(T0))


def test_contact_update_clears_and_refuses_what_graph_cannot_keep() -> None:
    assert contact_to_graph({"email": None, "phone": ""}) == {"emailAddresses": [],
                                                               "businessPhones": []}
    with pytest.raises(Unsupported):
        contact_to_graph({"owner_id": "u1"})


def test_removed_items_are_deleted_records_stamped_now() -> None:
    stub = {"id": "g9", "@removed": {"reason": "deleted"}}
    assert contact_from_graph(msgspec.convert(stub, GraphContact), now=77) == Contact(
        id="g9", modified_at=77, deleted=True)
    assert event_from_graph(msgspec.convert(stub, GraphEvent), now=77) == CalendarEvent(
        id="g9", modified_at=77, deleted=True)
    assert task_from_graph(msgspec.convert(stub, GraphTodoTask), now=77).deleted


@pytest.mark.parametrize(("zone", "wall", "utc"), [
    ("UTC", "2030-01-15T09:00:00.0000000", "2030-01-15T09:00:00Z"),
    ("Europe/Berlin", "2030-01-15T09:00:00.0000000", "2030-01-15T08:00:00Z"),
    ("Pacific Standard Time", "2030-07-15T09:00:00.0000000", "2030-07-15T16:00:00Z"),
    ("W. Europe Standard Time", "2030-07-15T09:00:00.1234567", "2030-07-15T07:00:00.123Z"),
])
def test_event_times_are_read_in_their_zone(zone: str, wall: str, utc: str) -> None:
    assert parse_zoned(DateTimeTimeZone(date_time=wall, time_zone=zone)) == parse_instant(utc)


def test_an_unknown_zone_is_an_error_not_a_guess() -> None:
    ev = wire(GraphEvent, {"start": {"dateTime": "2030-01-15T09:00:00", "timeZone": "Mars"},
                           "end": {"dateTime": "2030-01-15T10:00:00", "timeZone": "Mars"}})
    with pytest.raises(ConnectorError, match="time zone"):
        event_from_graph(ev, now=0)


def test_event_round_trip_in_utc() -> None:
    e = CalendarEvent(id="p", modified_at=1, subject="Standup", body="notes",
                      location="Room 1", start_at=parse_instant("2030-01-15T08:00:00Z"),
                      end_at=parse_instant("2030-01-15T08:30:00Z"), private=True,
                      attendees=["bob@example.com"])
    body = event_to_graph(record_values(e, EVENT_FIELDS))
    assert body["start"] == {"dateTime": "2030-01-15T08:00:00.0000000", "timeZone": "UTC"}
    back = event_from_graph(wire(GraphEvent, body, type="singleInstance"), now=5)
    assert back == msgspec.structs.replace(e, id="g1", modified_at=parse_instant(T0))


def test_all_day_events_are_dates_whatever_the_zone() -> None:
    ev = wire(GraphEvent, {"isAllDay": True,
                           "start": {"dateTime": "2030-01-15T00:00:00.0000000",
                                     "timeZone": "Pacific Standard Time"},
                           "end": {"dateTime": "2030-01-16T00:00:00.0000000",
                                   "timeZone": "Pacific Standard Time"}})
    got = event_from_graph(ev, now=0)
    assert got is not None and got.all_day
    assert got.start_at == parse_instant("2030-01-15T00:00:00Z")
    assert got.end_at == got.start_at + DAY
    body = event_to_graph({"all_day": True, "start_at": got.start_at, "end_at": got.end_at})
    assert body["isAllDay"] and body["end"]["dateTime"].startswith("2030-01-16T00:00:00")


@pytest.mark.parametrize("kind", ["seriesMaster", "occurrence", "exception"])
def test_recurring_events_are_left_out(kind: str) -> None:
    assert event_from_graph(wire(GraphEvent, {"type": kind}), now=0) is None


def test_read_only_event_fields_are_skipped_on_write() -> None:
    assert event_to_graph({"organizer": "x@example.com", "ical_uid": "u"}) == {}


def test_task_round_trip_and_status() -> None:
    t = Task(id="p", modified_at=1, title="Call", notes="n", due_at=parse_instant(T0),
             status="done", priority="high", completed_at=parse_instant(T0))
    body = task_to_graph(record_values(t, TASK_FIELDS))
    assert (body["status"], body["importance"]) == ("completed", "high")
    assert task_from_graph(wire(GraphTodoTask, body), now=5) == msgspec.structs.replace(
        t, id="g1", modified_at=parse_instant(T0))
    assert task_from_graph(wire(GraphTodoTask, {"status": "inProgress"}), 0).status == "open"


def test_messages_are_logged_with_direction() -> None:
    m = wire(GraphMessage, {"from": {"emailAddress": {"address": "Megan@contoso.com"}},
                            "sentDateTime": T0, "internetMessageId": "<1@x>",
                            "ccRecipients": [{"emailAddress": {"address": "c@x.com"}}]})
    got = email_from_graph(m, "megan@contoso.com", now=0)
    assert (got.direction, got.message_id, got.cc, got.sent_at) == (
        "out", "<1@x>", ["c@x.com"], parse_instant(T0))


def test_format_utc_round_trips() -> None:
    ms = parse_instant("2030-01-15T08:00:00.125Z")
    assert parse_zoned(format_utc(ms)) == ms
