"""The platform connector contract on the wire (pure): paths, query parameters, JSON
shapes and auth, as the README's "Platform contract" documents them for a vendor.

A record is the canonical record's JSON (`switchboard.sync.records`, camelCase, the
``kind`` tag optional, unknown fields ignored; JSON Schemas in ``schemas/sync-*``).
Listings answer ``{"records": […], "nextCursor": "…" | null}``; errors answer
``{"error": {"code": "…", "message": "…"}}`` with the status that says what went wrong
(`switchboard.sync.status`). Times are epoch milliseconds.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import quote

import msgspec
from msgspec import Meta, Struct

from switchboard.sync.connector import Page, User
from switchboard.sync.records import KINDS, Kind, Record, Value

__all__ = [
    "CONTACT_ID",
    "CURSOR",
    "DOMAIN",
    "EMAIL",
    "EMAIL_DOMAIN",
    "LIMIT",
    "NAME",
    "RESOURCES",
    "UPDATED_SINCE",
    "ErrorBody",
    "ErrorDetail",
    "PlatformAuth",
    "RecordPage",
    "UserPage",
    "auth_headers",
    "create_body",
    "decode_page",
    "decode_record",
    "decode_user",
    "decode_users",
    "error_message",
    "mine_path",
    "record_path",
    "update_body",
]

# Query parameters.
UPDATED_SINCE = "updatedSince"  # epoch ms, inclusive; the answer includes tombstones
CURSOR = "cursor"  # the previous page's nextCursor, as given
LIMIT = "limit"  # records a page the client would like (the platform may give fewer)
NAME = "name"
EMAIL = "email"  # repeated for several addresses
DOMAIN = "domain"
EMAIL_DOMAIN = "emailDomain"
CONTACT_ID = "contactId"  # repeated

RESOURCES: dict[Kind, str] = {
    "account": "accounts", "contact": "contacts", "task": "tasks", "event": "events",
    "email": "emails", "opportunity": "opportunities",
}
# Platform-assigned: never sent in a create or update body.
_SERVER_FIELDS = ("kind", "id", "modifiedAt", "fieldModifiedAt", "deleted")

Token = Annotated[str, Meta(min_length=1, max_length=4096)]


class PlatformAuth(Struct, frozen=True, kw_only=True, rename="camel"):
    """How the connector authenticates (seed 001's two ways): an OAuth2 access token as
    ``Authorization: Bearer``, or an API token as Basic auth, the token the user name and
    ``X`` the password (as BrightSync's own API takes its access token)."""

    scheme: Literal["bearer", "basic"]
    token: Token

    def __repr__(self) -> str:
        # Never the token: these end up in logs and reports.
        return f"PlatformAuth(scheme={self.scheme!r})"


class ErrorDetail(Struct, frozen=True, kw_only=True):
    code: str = ""
    message: str = ""


class ErrorBody(Struct, frozen=True, kw_only=True):
    """A platform's error answer: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class RecordPage(Struct, frozen=True, kw_only=True, rename="camel"):
    """A listing's page as JSON; records stay raw until the kind is known."""

    records: list[msgspec.Raw]
    next_cursor: str | None = None


class UserPage(Struct, frozen=True, kw_only=True, rename="camel"):
    records: list[User]
    next_cursor: str | None = None


def auth_headers(auth: PlatformAuth) -> dict[str, str]:
    """The ``Authorization`` header for `auth`."""
    if auth.scheme == "bearer":
        return {"authorization": f"Bearer {auth.token}"}
    basic = base64.b64encode(f"{auth.token}:X".encode()).decode("ascii")
    return {"authorization": f"Basic {basic}"}


def record_path(kind: Kind, record_id: str | None = None) -> str:
    """``/contacts`` or ``/contacts/{id}`` (the id percent-encoded: it is the platform's,
    and may hold anything)."""
    base = "/" + RESOURCES[kind]
    if record_id is None:
        return base
    return f"{base}/{quote(record_id, safe='')}"


def mine_path(kind: Kind) -> str:
    """The current user's records (seed 001's getMyContacts, …): ``/me/contacts``."""
    return "/me/" + RESOURCES[kind]


def error_message(body: bytes) -> str:
    """The message of an error answer, whatever its shape (a proxy's HTML included)."""
    try:
        err = msgspec.json.decode(body, type=ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return body[:200].decode("utf-8", "replace")
    return f"{err.code}: {err.message}" if err.code else err.message


def decode_record(kind: Kind, body: bytes | msgspec.Raw) -> Record:
    """One record of `kind`; ValidationError/DecodeError if it is not one."""
    return msgspec.json.decode(body, type=KINDS[kind])


def decode_page(kind: Kind, body: bytes) -> Page[Record]:
    page = msgspec.json.decode(body, type=RecordPage)
    return Page(records=[decode_record(kind, r) for r in page.records],
                cursor=page.next_cursor or None)


def decode_user(body: bytes) -> User:
    return msgspec.json.decode(body, type=User)


def decode_users(body: bytes) -> Page[User]:
    page = msgspec.json.decode(body, type=UserPage)
    return Page(records=page.records, cursor=page.next_cursor or None)


def create_body(record: Record) -> bytes:
    """A create's JSON: the record without what the platform assigns."""
    raw = msgspec.to_builtins(record)
    return msgspec.json.encode({k: v for k, v in raw.items() if k not in _SERVER_FIELDS})


def _wire_names(kind: Kind) -> dict[str, str]:
    return {f.name: f.encode_name for f in msgspec.structs.fields(KINDS[kind])}


def update_body(kind: Kind, values: Mapping[str, Value]) -> bytes:
    """A PATCH's JSON: the changed fields by their wire names (a null clears one).
    ValueError for a field the record does not have, or one the platform assigns."""
    names = _wire_names(kind)
    out: dict[str, Value] = {}
    for name, value in values.items():
        wire = names.get(name)
        if wire is None or wire in _SERVER_FIELDS:
            raise ValueError(f"a {kind} has no writable field {name!r}")
        out[wire] = value
    return msgspec.json.encode(out)
