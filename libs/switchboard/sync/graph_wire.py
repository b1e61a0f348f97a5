"""Microsoft Graph (v1.0) JSON as msgspec Structs: the resources the mailbox connector
reads and writes (contacts, events, to-do tasks, messages and their attachments, the
user), their collection pages and Graph's error body.

Only the fields the sync uses are declared; everything else Graph sends is ignored.
Graph sends ``null`` for many absent values, so optional fields accept None. A delta
listing's deleted item is the item's ``id`` with ``@removed`` (and nothing else).
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec
from msgspec import Struct, field

__all__ = [
    "Attendee",
    "DateTimeTimeZone",
    "EmailAddress",
    "GraphAttachment",
    "GraphContact",
    "GraphError",
    "GraphErrorBody",
    "GraphEvent",
    "GraphMessage",
    "GraphPage",
    "GraphTodoTask",
    "GraphTodoTaskList",
    "GraphUser",
    "ItemBody",
    "Location",
    "Recipient",
    "Removed",
    "decode_error",
    "decode_page",
]

T = TypeVar("T")


class _Wire(Struct, kw_only=True, rename="camel", omit_defaults=True):
    pass


class EmailAddress(_Wire):
    address: str | None = None
    name: str | None = None


class Recipient(_Wire):
    email_address: EmailAddress | None = None


class Attendee(Recipient):
    type: str | None = None  # required | optional | resource


class ItemBody(_Wire):
    content_type: str | None = None  # text | html
    content: str | None = None


class DateTimeTimeZone(_Wire):
    """A wall-clock time and the zone it is in (IANA or Windows name, as Graph gives)."""

    date_time: str
    time_zone: str | None = None


class Location(_Wire):
    display_name: str | None = None


class Removed(_Wire):
    reason: str | None = None  # "deleted" or "changed" (left the listing's scope)


class _Item(_Wire):
    id: str
    last_modified_date_time: str | None = None
    etag: str | None = field(default=None, name="@odata.etag")
    removed: Removed | None = field(default=None, name="@removed")


class GraphContact(_Item):
    given_name: str | None = None
    surname: str | None = None
    display_name: str | None = None
    email_addresses: list[EmailAddress] | None = None
    business_phones: list[str] | None = None
    mobile_phone: str | None = None
    job_title: str | None = None
    company_name: str | None = None
    categories: list[str] | None = None


class GraphEvent(_Item):
    subject: str | None = None
    body: ItemBody | None = None
    location: Location | None = None
    start: DateTimeTimeZone | None = None
    end: DateTimeTimeZone | None = None
    is_all_day: bool | None = None
    sensitivity: str | None = None  # normal | personal | private | confidential
    organizer: Recipient | None = None
    attendees: list[Attendee] | None = None
    i_cal_u_id: str | None = None  # "iCalUId"
    # singleInstance | occurrence | exception | seriesMaster
    type: str | None = None
    series_master_id: str | None = None
    categories: list[str] | None = None


class GraphTodoTask(_Item):
    title: str | None = None
    body: ItemBody | None = None
    due_date_time: DateTimeTimeZone | None = None
    # notStarted | inProgress | completed | waitingOnOthers | deferred
    status: str | None = None
    importance: str | None = None  # low | normal | high
    completed_date_time: DateTimeTimeZone | None = None
    categories: list[str] | None = None


class GraphTodoTaskList(_Wire):
    id: str
    display_name: str | None = None
    wellknown_list_name: str | None = None  # "defaultList" for the user's Tasks


class GraphMessage(_Item):
    subject: str | None = None
    body: ItemBody | None = None
    internet_message_id: str | None = None
    sent_date_time: str | None = None
    received_date_time: str | None = None
    from_: Recipient | None = field(default=None, name="from")
    to_recipients: list[Recipient] | None = None
    cc_recipients: list[Recipient] | None = None
    is_draft: bool | None = None


class GraphAttachment(_Wire):
    """A message's attachment; `odata_type` says which (``#microsoft.graph.
    fileAttachment`` has ``contentBytes``, base64; item and reference attachments none)."""

    id: str
    odata_type: str = field(default="", name="@odata.type")
    name: str | None = None
    content_type: str | None = None
    size: int | None = None
    is_inline: bool | None = None
    content_bytes: str | None = None


class GraphUser(_Wire):
    id: str
    display_name: str | None = None
    given_name: str | None = None
    surname: str | None = None
    mail: str | None = None
    user_principal_name: str | None = None


class GraphPage(_Wire, Generic[T]):
    """One page of a collection: `value`, then either the next page's link, the delta
    link of the finished round (delta listings), or neither (the last page)."""

    value: list[T] = []
    next_link: str | None = field(default=None, name="@odata.nextLink")
    delta_link: str | None = field(default=None, name="@odata.deltaLink")


class GraphError(_Wire):
    code: str = ""
    message: str = ""


class GraphErrorBody(_Wire):
    error: GraphError


def decode_page(content: bytes, item: type[T]) -> GraphPage[T]:
    """A collection page of `item`s; msgspec.DecodeError/ValidationError if it is not one."""
    return msgspec.json.decode(content, type=GraphPage[item])  # type: ignore[valid-type]


def decode_error(content: bytes) -> GraphError:
    """Graph's ``{"error": {"code", "message"}}``; an empty one for any other body."""
    try:
        return msgspec.json.decode(content, type=GraphErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return GraphError()
