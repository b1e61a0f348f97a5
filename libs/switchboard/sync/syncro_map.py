"""Syncro customers and contacts as canonical accounts and contacts, and back (pure).

Field names are Syncro API v1's (``business_name``, ``firstname``, ``mobile``, …, as
`switchboard.providers.syncro_records` writes them). What Syncro cannot store is not
mapped: a sync between Syncro and another side maps only `ACCOUNT_FIELDS` and
`CONTACT_FIELDS` (`field_maps`), because a field written and never read back would look
like a delete on the next run and be "synced" back as a blank.

- A customer's `name` is its ``business_name``, or ``firstname lastname`` for a person
  without one; writing a name sets ``business_name``. Its `domain` is its e-mail's
  domain (read-only: used to match, never written).
- A Syncro contact has one ``name``: split at the first space into first and last name
  ("Ludwig van Beethoven" → "Ludwig" / "van Beethoven"), joined back with one space.
- A disabled customer (``disabled: true``) reads as deleted; Syncro keeps no tombstone
  of a record deleted for good, so those deletes are not seen in listings: a check of
  the paired ids finds them (`switchboard.sync.vanished`).
- Times: ``updated_at`` (ISO 8601) as epoch ms.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from switchboard.sync.errors import RecordNotFound, Unsupported
from switchboard.sync.options import FieldMap
from switchboard.sync.records import Account, Contact, Kind, Value

__all__ = [
    "ACCOUNT_FIELDS",
    "CONTACT_FIELDS",
    "STORED_FIELDS",
    "account_from_customer",
    "contact_from_syncro",
    "customer_body",
    "customer_values",
    "field_maps",
    "join_name",
    "parse_time",
    "split_name",
    "syncro_contact_body",
    "syncro_contact_values",
    "syncro_id",
]

# Canonical field → Syncro field, for what both can hold.
_CUSTOMER: dict[str, str] = {"name": "business_name", "phone": "phone",
                             "address": "address"}
_CONTACT: dict[str, str] = {"email": "email", "phone": "phone", "mobile_phone": "mobile",
                            "title": "title"}
ACCOUNT_FIELDS: tuple[str, ...] = tuple(_CUSTOMER)
CONTACT_FIELDS: tuple[str, ...] = ("first_name", "last_name", *_CONTACT)
# What a sync may map on Syncro's side: the above, and a contact's customer (its
# account, a reference the runner translates through the account pairs).
STORED_FIELDS: dict[Kind, tuple[str, ...]] = {
    "account": ACCOUNT_FIELDS, "contact": (*CONTACT_FIELDS, "account_id")}


def field_maps(kind: Kind) -> tuple[FieldMap, ...]:
    """The field mappings of a module with Syncro on one side (each field to itself)."""
    names = {"account": ACCOUNT_FIELDS, "contact": CONTACT_FIELDS}.get(kind)
    if names is None:
        raise Unsupported(f"Syncro has no {kind} records to sync")
    return tuple(FieldMap(n, n) for n in names)


def syncro_id(record_id: str) -> int:
    """A canonical id as Syncro's integer id; RecordNotFound for anything else (no
    Syncro record can have it)."""
    if not record_id.isdigit() or len(record_id) > 16:
        raise RecordNotFound(f"{record_id!r} is not a Syncro id", record_id)
    return int(record_id)


def parse_time(value: Any) -> int:
    """An ISO 8601 time as epoch ms (0 if missing or unreadable: such a record is
    always "changed since" nothing, never skipped)."""
    if not isinstance(value, str):
        return 0
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return 0
    if parsed.tzinfo is None:  # Syncro writes offsets; a bare time is taken as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return max(0, round(parsed.timestamp() * 1000))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def split_name(name: Any) -> tuple[str | None, str | None]:
    """A contact's one name as (first, last), split at the first space."""
    words = name.split() if isinstance(name, str) else []
    if not words:
        return None, None
    return words[0], " ".join(words[1:]) or None


def join_name(first: Value, last: Value) -> str:
    return " ".join(str(p).strip() for p in (first, last) if p not in (None, ""))


def _domain(email: Any) -> str | None:
    if not isinstance(email, str) or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().casefold() or None


def account_from_customer(c: Mapping[str, Any]) -> Account:
    name = _text(c.get("business_name")) or join_name(
        _text(c.get("firstname")), _text(c.get("lastname"))) or None
    return Account(id=str(c["id"]), modified_at=parse_time(c.get("updated_at")),
                   deleted=bool(c.get("disabled")), name=name,
                   domain=_domain(c.get("email")), phone=_text(c.get("phone")),
                   address=_text(c.get("address")))


def customer_values(values: Mapping[str, Value]) -> dict[str, Value]:
    """Canonical account fields as a customer's; Unsupported for one Syncro lacks."""
    out: dict[str, Value] = {}
    for name, value in values.items():
        if name not in _CUSTOMER:
            raise Unsupported(f"Syncro customers have no field for {name}")
        out[_CUSTOMER[name]] = value
    return out


def customer_body(account: Account) -> dict[str, Value]:
    """A ``POST /customers`` body from an account (Syncro wants a business or last
    name: an account always has a name to give, "(no name)" if empty)."""
    body = customer_values({n: getattr(account, n) for n in ACCOUNT_FIELDS})
    body["business_name"] = body.get("business_name") or "(no name)"
    return body


def contact_from_syncro(c: Mapping[str, Any]) -> Contact:
    first, last = split_name(c.get("name"))
    customer = c.get("customer_id")
    return Contact(id=str(c["id"]), modified_at=parse_time(c.get("updated_at")),
                   first_name=first, last_name=last, email=_text(c.get("email")),
                   phone=_text(c.get("phone")), mobile_phone=_text(c.get("mobile")),
                   title=_text(c.get("title")),
                   account_id=str(customer) if isinstance(customer, int) else None)


def syncro_contact_values(values: Mapping[str, Value], current: Contact | None = None
                          ) -> dict[str, Value]:
    """Canonical contact fields as a Syncro contact's. A first or last name alone needs
    the other half (`current`) to write the one ``name``."""
    out: dict[str, Value] = {}
    for name, value in values.items():
        if name in _CONTACT:
            out[_CONTACT[name]] = value
        elif name == "account_id":
            # Moved to another customer; Syncro cannot leave a contact without one.
            if isinstance(value, str) and value:
                out["customer_id"] = syncro_id(value)
        elif name not in ("first_name", "last_name"):
            raise Unsupported(f"Syncro contacts have no field for {name}")
    if "first_name" in values or "last_name" in values:
        first = values.get("first_name", current.first_name if current else None)
        last = values.get("last_name", current.last_name if current else None)
        out["name"] = join_name(first, last)
    return out


def syncro_contact_body(contact: Contact, customer_id: int) -> dict[str, Value]:
    """A ``POST /contacts`` body (Syncro files every contact under a customer)."""
    body = syncro_contact_values({n: getattr(contact, n) for n in CONTACT_FIELDS})
    body["name"] = body.get("name") or contact.email or "(no name)"
    body["customer_id"] = customer_id
    return body
