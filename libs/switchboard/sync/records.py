"""One canonical record per entity, whatever side it comes from (msgspec Structs).

A connector maps its own records to these and back; the planner only ever sees these.
Every record carries the side's own `id`, `modified_at` (epoch ms, the side's clock),
`field_modified_at` (per-field times, for sides that give them; a field without one was
modified at `modified_at`, see `field_time`) and `deleted` (a listing "updated since T"
includes deleted records, as the connector contract asks). Field names are camelCase on
the wire and snake_case in Python; `kind` tags the union. Wherever a field is *named*
(`field_modified_at` keys, field mappings) it is by its snake_case canonical name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

__all__ = [
    "ATTACHMENT_CEILING",
    "KINDS",
    "Account",
    "Attachment",
    "CalendarEvent",
    "Contact",
    "EmailLog",
    "Kind",
    "OpportunityRef",
    "Record",
    "SyncedRecord",
    "Task",
    "Value",
    "field_time",
    "is_empty",
]

Id = Annotated[str, Meta(min_length=1, max_length=256)]
Short = Annotated[str, Meta(max_length=1024)]
Text = Annotated[str, Meta(max_length=1_000_000)]
Ms = Annotated[int, Meta(ge=0, le=2**53)]
Kind = Literal["contact", "account", "task", "event", "email", "opportunity"]
# What a synced field may hold: the planner compares, hashes and copies these.
Value = str | int | float | bool | list[str] | None


class _Base(Struct, kw_only=True, rename="camel", omit_defaults=True,
            tag_field="kind"):
    id: Id
    modified_at: Ms
    # Sides that track changes per field (Salesforce field history, our own fakes) give
    # them here; the planner's conflicts are per field, so better times mean fewer
    # overwritten edits. Absent fields fall back to `modified_at`.
    field_modified_at: dict[str, Ms] = {}
    deleted: bool = False


class Contact(_Base, tag="contact"):
    """A person (seed 001's Contact; a mailbox's contact)."""

    first_name: Short | None = None
    last_name: Short | None = None
    email: Short | None = None
    phone: Short | None = None
    mobile_phone: Short | None = None
    title: Short | None = None
    company_name: Short | None = None
    # References to other records are the side's own ids; a run translates them
    # through the pairs (`switchboard.sync.references`).
    account_id: Id | None = None
    owner_id: Id | None = None
    tags: list[Short] = []


class Account(_Base, tag="account"):
    """A company or department (seed 001's Account, Autofy's company)."""

    name: Short | None = None
    domain: Short | None = None
    website: Short | None = None
    phone: Short | None = None
    industry: Short | None = None
    address: Short | None = None
    owner_id: Id | None = None


class Task(_Base, tag="task"):
    """A to-do (a CRM task, a mailbox's to-do item)."""

    title: Short | None = None
    notes: Text | None = None
    due_at: Ms | None = None
    status: Literal["open", "done"] = "open"
    priority: Literal["low", "normal", "high"] = "normal"
    completed_at: Ms | None = None
    contact_id: Id | None = None
    account_id: Id | None = None
    # Like a contact's: what a module's tag filter reads (Outlook's categories).
    tags: list[Short] = []


# The largest attachment any deployment may copy (SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES
# is at most this): a record's schema bounds what a platform must accept.
ATTACHMENT_CEILING = 25 * 1024 * 1024


class Attachment(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A file attached to a logged e-mail or an event, as Graph's fileAttachment: its bytes base64
    (`content_bytes`; a platform's answer may leave them out)."""

    name: Short
    content_type: Short | None = None
    size: Annotated[int, Meta(ge=0, le=ATTACHMENT_CEILING)]  # decoded bytes
    content_bytes: Annotated[str, Meta(max_length=(ATTACHMENT_CEILING + 2) // 3 * 4)] | \
        None = None


class CalendarEvent(_Base, tag="event"):
    """A meeting or appointment (two-way calendar sync)."""

    subject: Short | None = None
    body: Text | None = None
    location: Short | None = None
    start_at: Ms | None = None
    end_at: Ms | None = None
    all_day: bool = False
    private: bool = False
    organizer: Short | None = None
    attendees: list[Short] = []
    # The iCalendar UID both sides keep for one meeting: the match key.
    ical_uid: Short | None = None
    tags: list[Short] = []
    # Written to the portal with the calendar module's fetchAttachments: the mailbox
    # event's files (`switchboard.sync.attachments`); not a synced field.
    attachments: Annotated[list[Attachment], Meta(max_length=250)] = []


class EmailLog(_Base, tag="email"):
    """An e-mail logged into the portal (one-way e-mail logging; seed 001's
    createEmail / updateEmail)."""

    message_id: Short | None = None  # RFC 5322 Message-ID: the match key
    subject: Short | None = None
    body: Text | None = None
    from_address: Short | None = None
    to: list[Short] = []
    cc: list[Short] = []
    sent_at: Ms | None = None
    direction: Literal["in", "out"] = "in"
    contact_ids: list[Id] = []
    account_id: Id | None = None
    opportunity_ids: list[Id] = []
    # With the e-mail module's fetchAttachments (`switchboard.sync.attachments`).
    attachments: Annotated[list[Attachment], Meta(max_length=250)] = []


class OpportunityRef(_Base, tag="opportunity"):
    """A deal a logged e-mail may be attached to (seed 001's getOpportunitiesForContacts);
    read, never synced."""

    name: Short | None = None
    account_id: Id | None = None
    contact_ids: list[Id] = []
    stage: Short | None = None
    closed: bool = False


Record = Contact | Account | Task | CalendarEvent | EmailLog | OpportunityRef
# The kinds the planner synchronises (an opportunity is only ever looked up).
SyncedRecord = Contact | Account | Task | CalendarEvent | EmailLog

KINDS: dict[Kind, type[Record]] = {
    "contact": Contact,
    "account": Account,
    "task": Task,
    "event": CalendarEvent,
    "email": EmailLog,
    "opportunity": OpportunityRef,
}


def field_time(record: Record, name: str) -> int:
    """When `name` last changed on its side: its own time if the side gives one, else
    the record's."""
    return record.field_modified_at.get(name, record.modified_at)


def is_empty(value: Value) -> bool:
    """No value at all: None, "" or []. A first match fills such gaps without a conflict."""
    return value is None or value == "" or value == []
