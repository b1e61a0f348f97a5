"""Syncro's customers, tickets and leads as the hub's REST actions read and write them.
Pure, no I/O: the request bodies (msgspec Structs named with Syncro's own snake_case
fields, unknown fields refused), the record kinds, and the markers that make a create
happen once. Searches are in `syncro_search`, the raw API call in `syncro_call`; the
services/channels/syncro_actions.py routes wire them to `SyncroClient`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.providers import syncro_idempotency as idem

__all__ = [
    "KINDS",
    "CommentCreate",
    "CustomerFields",
    "Kind",
    "LeadFields",
    "TicketComment",
    "TicketCreate",
    "TicketUpdate",
    "decode_body",
    "idempotency_key",
    "lookup_params",
    "mark_create",
    "marked_as_body",
    "record_id",
    "ticket_defaults",
    "to_wire",
]

Id = Annotated[int, Meta(ge=1, le=2**53)]
Short = Annotated[str, Meta(max_length=255)]
Text = Annotated[str, Meta(max_length=60_000)]
Email = Annotated[str, Meta(max_length=255, pattern=r"^[^@\s,;]+@[^@\s,;]+$")]
# Syncro takes dates as ISO 8601 (a date, or a date and time with an optional offset).
Date = Annotated[str, Meta(max_length=40, pattern=(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"))]
Properties = dict[Short, str | int | float | bool | None]
# Several addresses: Syncro keeps them as one comma-separated string; a list is joined.
Emails = Annotated[str, Meta(max_length=2000)] | Annotated[list[Email], Meta(max_length=50)]

_S = Short | None | UnsetType
_T = Text | None | UnsetType
_I = Id | None | UnsetType
_B = bool | UnsetType
_D = Date | None | UnsetType


class CustomerFields(Struct, forbid_unknown_fields=True, kw_only=True):
    """A customer to create, or the fields of one to change (every field optional)."""

    business_name: _S = UNSET
    firstname: _S = UNSET
    lastname: _S = UNSET
    email: Email | UnsetType | None = UNSET
    phone: _S = UNSET
    mobile: _S = UNSET
    address: _S = UNSET
    address_2: _S = UNSET
    city: _S = UNSET
    state: _S = UNSET
    zip: _S = UNSET
    notes: _T = UNSET
    get_sms: _B = UNSET
    opt_out: _B = UNSET
    no_email: _B = UNSET
    get_billing: _B = UNSET
    get_marketing: _B = UNSET
    get_reports: _B = UNSET
    ref_customer_id: _I = UNSET
    referred_by: _S = UNSET
    tax_rate_id: _I = UNSET
    notification_email: Emails | UnsetType | None = UNSET
    invoice_cc_emails: Emails | UnsetType | None = UNSET
    invoice_term_id: _I = UNSET
    properties: Properties | UnsetType = UNSET


class TicketComment(Struct, forbid_unknown_fields=True, kw_only=True):
    """One of a ticket's ``comments_attributes``."""

    subject: Annotated[str, Meta(min_length=1, max_length=255)]
    body: Annotated[str, Meta(min_length=1, max_length=60_000)]
    hidden: _B = UNSET
    sms_body: _T = UNSET
    do_not_email: _B = UNSET
    tech: _S = UNSET


class TicketUpdate(Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields of a ticket to change (every field optional)."""

    customer_id: Id | UnsetType = UNSET
    subject: Annotated[str, Meta(min_length=1, max_length=255)] | UnsetType = UNSET
    number: _S = UNSET
    due_date: _D = UNSET
    start_at: _D = UNSET
    end_at: _D = UNSET
    ticket_type_id: _I = UNSET
    location_id: _I = UNSET
    problem_type: _S = UNSET
    status: _S = UNSET
    user_id: _I = UNSET
    properties: Properties | UnsetType = UNSET
    asset_ids: Annotated[list[Id], Meta(max_length=500)] | UnsetType = UNSET
    signature_name: _S = UNSET
    signature_data: _T = UNSET
    sla_id: _I = UNSET
    contact_id: _I = UNSET
    priority: _S = UNSET
    outtake_form_data: _T = UNSET
    outtake_form_date: _D = UNSET
    outtake_form_name: _S = UNSET
    comments_attributes: Annotated[list[TicketComment], Meta(max_length=50)] | UnsetType = (
        UNSET)


class TicketCreate(TicketUpdate, forbid_unknown_fields=True, kw_only=True):
    """A ticket to create: its customer and subject are required."""

    customer_id: Id
    subject: Annotated[str, Meta(min_length=1, max_length=255)]


class LeadFields(Struct, forbid_unknown_fields=True, kw_only=True):
    """A lead to create, or the fields of one to change (every field optional)."""

    business_name: _S = UNSET
    first_name: _S = UNSET
    last_name: _S = UNSET
    email: Email | UnsetType | None = UNSET
    phone: _S = UNSET
    mobile: _S = UNSET
    address: _S = UNSET
    city: _S = UNSET
    state: _S = UNSET
    zip: _S = UNSET
    converted: _B = UNSET
    message_read: _B = UNSET
    disabled: _B = UNSET
    ticket_subject: _S = UNSET
    ticket_description: _T = UNSET
    ticket_problem_type: _S = UNSET
    ticket_type_id: _I = UNSET
    ticket_properties: Properties | UnsetType = UNSET
    location_id: _I = UNSET
    from_check_in: _B = UNSET
    customer_id: _I = UNSET
    ticket_id: _I = UNSET
    contact_id: _I = UNSET
    hidden_notes: _T = UNSET
    appointment_time: _D = UNSET
    appointment_type_id: _I = UNSET
    status: _S = UNSET
    user_id: _I = UNSET
    mailbox_id: _I = UNSET
    opportunity_start_date: _D = UNSET
    opportunity_amount_dollars: Annotated[float, Meta(ge=0)] | UnsetType | None = UNSET
    likelihood: Annotated[int, Meta(ge=0, le=100)] | UnsetType | None = UNSET
    properties: Properties | UnsetType = UNSET
    customer_purchase_id: _I = UNSET
    signature_date: _D = UNSET
    signature_name: _S = UNSET
    signature_data: _T = UNSET


class CommentCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    """A comment on a ticket (``POST /tickets/{id}/comment``). `hidden` defaults to the
    integration's ``commentHidden``; `do_not_email` to false, as in Syncro."""

    subject: Annotated[str, Meta(min_length=1, max_length=255)]
    body: Annotated[str, Meta(min_length=1, max_length=60_000)]
    hidden: bool | None = None
    do_not_email: bool = False


# ---- decoding ----------------------------------------------------------------------------

_UNKNOWN = re.compile(r"unknown field `([^`]{0,200})`")
_MISSING = re.compile(r"missing required field `([^`]{0,200})`")


def decode_body(raw: bytes, into: Any) -> Any:
    """`raw` JSON as `into`; BadRequest naming the field at fault (an unknown field
    included: ``comments_attributes[0].colour``)."""
    try:
        return jsonsafe.decode(raw, jsonsafe.decoder_for(into))
    except BadRequest as exc:
        unknown = _UNKNOWN.search(exc.description)
        missing = _MISSING.search(exc.description)
        found = unknown or missing
        if found is None:
            raise
        name = found.group(1)
        field = f"{exc.field}.{name}" if exc.field else name
        if unknown is not None:
            raise BadRequest("unknown_field", f"unknown field {name!r}", field) from None
        raise BadRequest("missing_field", f"{name!r} is required", field) from None


def _join(value: Any) -> Any:
    return ", ".join(value) if isinstance(value, list) and all(
        isinstance(v, str) for v in value) else value


def to_wire(body: Struct) -> dict[str, Any]:
    """The JSON Syncro takes: only the fields given (null kept: it clears a field), lists
    of addresses joined as Syncro keeps them."""
    out: dict[str, Any] = msgspec.to_builtins(body)
    for name in ("notification_email", "invoice_cc_emails"):
        if name in out:
            out[name] = _join(out[name])
    return out


# ---- what a record kind is ---------------------------------------------------------------

ParamKind = Literal["str", "id", "bool", "date", "list", "sort", "order"]


class Kind(Struct, frozen=True):
    """One of Syncro's record kinds, as the actions use it."""

    plural: str  # the path and list key: customers
    one: str  # the record key: customer
    create: type[Struct]
    update: type[Struct]
    search: Mapping[str, ParamKind]
    deletable: bool
    # Where a create carries the marker that makes it happen once (None: a first comment).
    marker_field: str | None


CUSTOMER_SEARCH: dict[str, ParamKind] = {
    "sort": "sort", "order": "order", "query": "str", "firstname": "str", "lastname": "str",
    "business_name": "str", "id": "id", "id_not": "id", "email": "str",
    "include_disabled": "bool",
}
TICKET_SEARCH: dict[str, ParamKind] = {
    "customer_id": "id", "contact_id": "id", "number": "str", "resolved_after": "date",
    "created_after": "date", "since_updated_at": "date", "status": "str", "query": "str",
    "user_id": "id", "mine": "bool", "ticket_search_id": "id",
}
LEAD_SEARCH: dict[str, ParamKind] = {
    "status_list": "list", "query": "str", "users": "list", "mailbox_ids": "list",
    "has_ticket": "bool",
}

KINDS: dict[str, Kind] = {
    "customers": Kind("customers", "customer", CustomerFields, CustomerFields,
                      CUSTOMER_SEARCH, deletable=True, marker_field="notes"),
    "tickets": Kind("tickets", "ticket", TicketCreate, TicketUpdate, TICKET_SEARCH,
                    deletable=True, marker_field=None),
    "leads": Kind("leads", "lead", LeadFields, LeadFields, LEAD_SEARCH, deletable=False,
                  marker_field="hidden_notes"),
}


def record_id(value: str, name: str) -> str:
    """A record id from a path (Syncro's ids are positive integers)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 16 or int(value) < 1:
        raise BadRequest("invalid_id", f"{name} must be a positive integer", name)
    return str(int(value))


# ---- creating once -----------------------------------------------------------------------

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def idempotency_key(header: str | None) -> str | None:
    """The caller's ``Idempotency-Key`` (1-200 visible ASCII characters), or None."""
    if header is None:
        return None
    if not _KEY.match(header):
        raise BadRequest("invalid_idempotency_key",
                         "Idempotency-Key must be 1 to 200 visible ASCII characters",
                         "Idempotency-Key")
    return header


INITIAL_SUBJECT = "Initial Issue"


def mark_create(kind: Kind, body: dict[str, Any], token: str) -> dict[str, Any]:
    """`body` with the marker where a later lookup finds it: a customer's ``notes``, a
    lead's ``hidden_notes``, a ticket's first comment (a hidden "Initial Issue" comment
    carrying the subject when none is given)."""
    out = dict(body)
    if kind.marker_field is not None:
        current = out.get(kind.marker_field)
        out[kind.marker_field] = idem.mark(current if isinstance(current, str) else "", token)
        return out
    comments = [dict(c) for c in out.get("comments_attributes") or []]
    if comments:
        comments[0]["body"] = idem.mark(str(comments[0].get("body", "")), token)
    else:
        comments = [{"subject": INITIAL_SUBJECT,
                     "body": idem.mark(str(out.get("subject", "")), token),
                     "hidden": True, "do_not_email": True}]
    out["comments_attributes"] = comments
    return out


def ticket_defaults(body: dict[str, Any], status: str | None,
                    problem_type: str | None) -> dict[str, Any]:
    """A new ticket's `body` with the integration's ``defaultTicketStatus`` and
    ``problemType`` where the caller gave none."""
    out = dict(body)
    if status is not None and out.get("status") is None:
        out["status"] = status
    if problem_type is not None and out.get("problem_type") is None:
        out["problem_type"] = problem_type
    return out


def marked_as_body(kind: Kind, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` as the idempotency lookup reads them (it looks in ``body``): the field
    that carries `kind`'s marker shown as ``body``."""
    field = kind.marker_field
    if field is None:
        return list(records)
    return [{**r, "body": r.get(field)} for r in records]


def lookup_params(kind: Kind, body: Mapping[str, Any]) -> dict[str, str]:
    """Where a record this create may already have made would be listed: the search by
    its most distinctive field (a ticket: its customer's tickets)."""
    if kind.plural == "tickets":
        return {"customer_id": str(body.get("customer_id", ""))}
    fields = ("email", "business_name", "lastname", "firstname") if kind.plural == \
        "customers" else ("email", "business_name", "last_name", "first_name")
    for name in fields:
        value = body.get(name)
        if isinstance(value, str) and value:
            return {name: value} if kind.plural == "customers" else {"query": value}
    return {}
