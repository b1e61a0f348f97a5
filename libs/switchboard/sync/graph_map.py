"""Graph JSON ⇄ canonical records, for the mailbox connector. Pure functions.

Reading: `contact_from_graph`, `event_from_graph`, `task_from_graph`, `email_from_graph`
turn a Graph item into a canonical record (a delta listing's ``@removed`` item into a
deleted one, stamped `now`: Graph gives no time for a delete). Writing:
`contact_to_graph`, `event_to_graph`, `task_to_graph` turn canonical values (a whole
record's, or an update's changed fields) into a Graph body; a field Graph cannot keep
raises `Unsupported`, since a value written and silently dropped would be read back as a
change and synced back.

Decisions: a contact's e-mail and phone are the first of Graph's lists (an update of
`email` replaces the list with that one address); recurring events are left out
(`event_from_graph` answers None for a series master, an occurrence and an exception:
the canonical event has no recurrence, and syncing occurrences one by one would create a
single event per occurrence); an event's `organizer` and `ical_uid` are Graph's own and
never written; a to-do's status other than ``completed`` is ``open``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchboard.sync.errors import ConnectorError, Unsupported
from switchboard.sync.graph_time import (
    UnknownTimeZone,
    all_day_ms,
    format_utc,
    parse_instant,
    parse_zoned,
)
from switchboard.sync.graph_wire import (
    DateTimeTimeZone,
    GraphContact,
    GraphEvent,
    GraphMessage,
    GraphTodoTask,
    ItemBody,
    Recipient,
)
from switchboard.sync.records import CalendarEvent, Contact, EmailLog, Task, Value

__all__ = [
    "CONTACT_FIELDS",
    "EVENT_FIELDS",
    "TASK_FIELDS",
    "contact_from_graph",
    "contact_to_graph",
    "email_from_graph",
    "event_from_graph",
    "event_to_graph",
    "record_values",
    "task_from_graph",
    "task_to_graph",
]

CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "mobile_phone", "title",
                  "company_name", "tags")
EVENT_FIELDS = ("subject", "body", "location", "start_at", "end_at", "all_day", "private",
                "attendees")
# Read from Graph, never written (Graph sets them).
EVENT_READ_ONLY = ("organizer", "ical_uid")
TASK_FIELDS = ("title", "notes", "due_at", "status", "priority", "completed_at")
_PRIVATE = {"private", "confidential"}


def _modified(item: GraphContact | GraphEvent | GraphTodoTask | GraphMessage,
              now: int) -> int:
    text = item.last_modified_date_time
    return parse_instant(text) if text else now


def _address(r: Recipient | None) -> str | None:
    if r is None or r.email_address is None:
        return None
    return r.email_address.address or None


def _body(body: ItemBody | None) -> str | None:
    return body.content if body is not None and body.content else None


def _text(value: Value, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise Unsupported(f"{name} must be text, not {type(value).__name__}")


def _strings(value: Value, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    raise Unsupported(f"{name} must be a list of text")


def _ms(value: Value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise Unsupported(f"{name} must be epoch milliseconds")


def _refuse(values: Mapping[str, Value], allowed: tuple[str, ...], what: str) -> None:
    extra = sorted(set(values) - set(allowed))
    if extra:
        raise Unsupported(f"Graph {what} have no field {', '.join(extra)}")


def record_values(record: Contact | CalendarEvent | Task,
                  fields: tuple[str, ...]) -> dict[str, Value]:
    """A record's `fields`, for a create (only those that hold something)."""
    out: dict[str, Value] = {}
    for name in fields:
        value = getattr(record, name)
        if value is not None and value != [] and value != "":
            out[name] = value
    return out


# Contacts -----------------------------------------------------------------------------

def contact_from_graph(item: GraphContact, now: int) -> Contact:
    """A Graph contact (or its ``@removed`` stub) as a canonical contact."""
    if item.removed is not None:
        return Contact(id=item.id, modified_at=now, deleted=True)
    emails = [e.address for e in item.email_addresses or [] if e.address]
    phones = [p for p in item.business_phones or [] if p]
    return Contact(
        id=item.id, modified_at=_modified(item, now),
        first_name=item.given_name or None, last_name=item.surname or None,
        email=emails[0] if emails else None, phone=phones[0] if phones else None,
        mobile_phone=item.mobile_phone or None, title=item.job_title or None,
        company_name=item.company_name or None, tags=list(item.categories or []))


def contact_to_graph(values: Mapping[str, Value], *, create: bool = False
                     ) -> dict[str, Any]:
    """Canonical contact values as a Graph contact body (a create's, or a PATCH's)."""
    _refuse(values, CONTACT_FIELDS, "contacts")
    out: dict[str, Any] = {}
    simple = {"first_name": "givenName", "last_name": "surname",
              "mobile_phone": "mobilePhone", "title": "jobTitle",
              "company_name": "companyName"}
    for name, value in values.items():
        if name in simple:
            out[simple[name]] = _text(value, name)
        elif name == "email":
            address = _text(value, name)
            out["emailAddresses"] = [{"address": address}] if address else []
        elif name == "phone":
            phone = _text(value, name)
            out["businessPhones"] = [phone] if phone else []
        elif name == "tags":
            out["categories"] = _strings(value, name)
    if create:
        # Outlook lists contacts by displayName; Graph does not derive it on create.
        name = " ".join(p for p in (out.get("givenName"), out.get("surname")) if p)
        if name:
            out["displayName"] = name
    return out


# Calendar events ----------------------------------------------------------------------

def event_from_graph(item: GraphEvent, now: int) -> CalendarEvent | None:
    """A Graph event as a canonical event; None for a recurring one (left out)."""
    if item.removed is not None:
        return CalendarEvent(id=item.id, modified_at=now, deleted=True)
    if item.type not in (None, "singleInstance"):
        return None
    all_day = bool(item.is_all_day)
    try:
        if all_day:
            start = all_day_ms(item.start) if item.start else None
            end = all_day_ms(item.end) if item.end else None
        else:
            start = parse_zoned(item.start) if item.start else None
            end = parse_zoned(item.end) if item.end else None
    except UnknownTimeZone as exc:
        # Not guessable: a wrong hour would be synced as if it were right.
        raise ConnectorError("graph_time_zone",
                             f"event {item.id} is in an unknown time zone {exc}") from None
    attendees = [a for a in (_address(x) for x in item.attendees or []) if a]
    return CalendarEvent(
        id=item.id, modified_at=_modified(item, now), subject=item.subject or None,
        body=_body(item.body),
        location=(item.location.display_name or None) if item.location else None,
        start_at=start, end_at=end, all_day=all_day,
        private=(item.sensitivity or "normal") in _PRIVATE,
        organizer=_address(item.organizer), attendees=attendees,
        ical_uid=item.i_cal_u_id or None, tags=list(item.categories or []))


def _when(ms: int | None) -> dict[str, str] | None:
    if ms is None:
        return None
    dt: DateTimeTimeZone = format_utc(ms)
    return {"dateTime": dt.date_time, "timeZone": dt.time_zone or "UTC"}


def event_to_graph(values: Mapping[str, Value]) -> dict[str, Any]:
    """Canonical event values as a Graph event body. All-day bounds are written as UTC
    midnights (what `event_from_graph` reads back); organizer and iCalUId are skipped."""
    _refuse(values, EVENT_FIELDS + EVENT_READ_ONLY, "events")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "subject":
            out["subject"] = _text(value, name)
        elif name == "body":
            out["body"] = {"contentType": "text", "content": _text(value, name) or ""}
        elif name == "location":
            out["location"] = {"displayName": _text(value, name) or ""}
        elif name == "start_at":
            out["start"] = _when(_ms(value, name))
        elif name == "end_at":
            out["end"] = _when(_ms(value, name))
        elif name == "all_day":
            out["isAllDay"] = bool(value)
        elif name == "private":
            out["sensitivity"] = "private" if value else "normal"
        elif name == "attendees":
            out["attendees"] = [{"emailAddress": {"address": a}, "type": "required"}
                                for a in _strings(value, name)]
    return out


# To-do tasks --------------------------------------------------------------------------

def task_from_graph(item: GraphTodoTask, now: int) -> Task:
    """A Graph to-do task as a canonical task."""
    if item.removed is not None:
        return Task(id=item.id, modified_at=now, deleted=True)
    importance = item.importance if item.importance in ("low", "high") else "normal"
    try:
        due = parse_zoned(item.due_date_time) if item.due_date_time else None
        done_at = (parse_zoned(item.completed_date_time)
                   if item.completed_date_time else None)
    except UnknownTimeZone as exc:
        raise ConnectorError("graph_time_zone",
                             f"task {item.id} is in an unknown time zone {exc}") from None
    return Task(
        id=item.id, modified_at=_modified(item, now), title=item.title or None,
        notes=_body(item.body), due_at=due,
        status="done" if item.status == "completed" else "open",
        priority="low" if importance == "low" else "high" if importance == "high"
        else "normal",
        completed_at=done_at, tags=list(item.categories or []))


def task_to_graph(values: Mapping[str, Value]) -> dict[str, Any]:
    """Canonical task values as a Graph to-do task body."""
    _refuse(values, TASK_FIELDS, "to-do tasks")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "title":
            out["title"] = _text(value, name)
        elif name == "notes":
            out["body"] = {"contentType": "text", "content": _text(value, name) or ""}
        elif name == "due_at":
            out["dueDateTime"] = _when(_ms(value, name))
        elif name == "status":
            out["status"] = "completed" if value == "done" else "notStarted"
        elif name == "priority":
            out["importance"] = value if value in ("low", "high") else "normal"
        elif name == "completed_at":
            out["completedDateTime"] = _when(_ms(value, name))
    return out


# Mail ---------------------------------------------------------------------------------

def email_from_graph(item: GraphMessage, me: str, now: int) -> EmailLog:
    """A Graph message as an e-mail to log; `me` is the mailbox's own address (a
    message from it is outgoing)."""
    if item.removed is not None:
        return EmailLog(id=item.id, modified_at=now, deleted=True)
    sender = _address(item.from_)
    sent = item.sent_date_time or item.received_date_time
    return EmailLog(
        id=item.id, modified_at=_modified(item, now),
        message_id=item.internet_message_id or None, subject=item.subject or None,
        body=_body(item.body), from_address=sender,
        to=[a for a in (_address(r) for r in item.to_recipients or []) if a],
        cc=[a for a in (_address(r) for r in item.cc_recipients or []) if a],
        sent_at=parse_instant(sent) if sent else None,
        direction="out" if sender and me and sender.casefold() == me.casefold() else "in")
