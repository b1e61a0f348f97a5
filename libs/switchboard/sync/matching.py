"""Match before create: find the record on the other side that already is this one, so
a first run (or a run after a lost pair) never duplicates.

Keys are tried in tiers, most specific first: contacts by e-mail; accounts by e-mail
domain, then name; calendar events by iCalendar UID; logged e-mails by Message-ID; and
for every kind, last, by identical synced content (which also finds a record the sync
created in a run that stopped before it could record the pair). Within one key, records
pair off one to one, in id order, so two same-side duplicates are mirrored rather than
merged into one. Only live, unpaired records match, and at least one of the two must be
a change of this run: two records neither side changed are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from msgspec import Struct

from switchboard.sync.fingerprint import Fingerprint, content_hash
from switchboard.sync.options import Side, other
from switchboard.sync.records import Account, CalendarEvent, Contact, EmailLog, Kind, Record

__all__ = ["TIERS", "Candidate", "Lookup", "Match", "lookups", "match", "match_key"]

KeyName = Literal["email", "domain", "name", "ical_uid", "message_id", "content"]
TIERS: dict[Kind, tuple[KeyName, ...]] = {
    "contact": ("email", "content"),
    "account": ("domain", "name", "content"),
    "task": ("content",),
    "event": ("ical_uid", "content"),
    "email": ("message_id", "content"),
    "opportunity": (),
}
_SPACE = re.compile(r"\s+")


class Candidate(Struct, frozen=True):
    """A record that may match: a change of this run, or one found by a lookup."""

    record: Record
    fingerprint: Fingerprint
    changed: bool


class Match(Struct, frozen=True, rename="camel"):
    """Two records found to be the same, and the key that said so."""

    portal_id: str
    mailbox_id: str
    by: KeyName


class Lookup(Struct, frozen=True, rename="camel"):
    """A search the runner makes on `side` before planning (seed 001's
    ``getContactsByEmail``, ``getAccountsByDomain``, ``getAccountsByName``); what it
    finds is given to the planner as that side's known records."""

    side: Side
    kind: Kind
    by: Literal["email", "domain", "name"]
    values: tuple[str, ...]


def _email(value: str | None) -> str | None:
    value = (value or "").strip().casefold()
    return value if "@" in value else None


def _domain(account: Account) -> str | None:
    raw = account.domain or account.website or ""
    raw = raw.strip().casefold()
    raw = re.sub(r"^[a-z][a-z0-9+.-]*://", "", raw).split("/", 1)[0].split("@")[-1]
    raw = raw.rstrip(".").removeprefix("www.")
    return raw or None


def _name(value: str | None) -> str | None:
    value = _SPACE.sub(" ", (value or "").strip()).casefold()
    return value or None


def match_key(record: Record, fingerprint: Fingerprint, key: KeyName) -> str | None:
    """The record's value for one match key, normalised; None if it has none."""
    if key == "content":
        return content_hash(fingerprint)
    if isinstance(record, Contact) and key == "email":
        return _email(record.email)
    if isinstance(record, Account):
        return _domain(record) if key == "domain" else _name(record.name)
    if isinstance(record, CalendarEvent) and key == "ical_uid":
        return record.ical_uid or None
    if isinstance(record, EmailLog) and key == "message_id":
        return (record.message_id or "").strip() or None
    return None


def _order(c: Candidate) -> tuple[bool, str]:
    return (not c.changed, c.record.id)


def _pair_up(ps: list[Candidate], ms: list[Candidate]) -> list[tuple[Candidate, Candidate]]:
    # Changes claim partners first; two records found only by lookups never pair.
    out: list[tuple[Candidate, Candidate]] = []
    free_p, free_m = list(ps), list(ms)
    for p in ps:
        if p.changed and free_m:
            out.append((p, free_m.pop(0)))
            free_p.remove(p)
    for m in free_m:
        if m.changed and free_p:
            out.append((free_p.pop(0), m))
    return out


def match(kind: Kind, portal: Sequence[Candidate], mailbox: Sequence[Candidate]
          ) -> list[tuple[Candidate, Candidate, KeyName]]:
    """One-to-one matches between live unpaired candidates of the two sides."""
    left_p = sorted((c for c in portal if not c.record.deleted), key=_order)
    left_m = sorted((c for c in mailbox if not c.record.deleted), key=_order)
    out: list[tuple[Candidate, Candidate, KeyName]] = []
    for tier in TIERS[kind]:
        by_p: dict[str, list[Candidate]] = {}
        by_m: dict[str, list[Candidate]] = {}
        for cands, groups in ((left_p, by_p), (left_m, by_m)):
            for c in cands:
                value = match_key(c.record, c.fingerprint, tier)
                if value is not None:
                    groups.setdefault(value, []).append(c)
        taken: set[int] = set()
        for value in sorted(by_p.keys() & by_m.keys()):
            for p, m in _pair_up(by_p[value], by_m[value]):
                out.append((p, m, tier))
                taken.update((id(p), id(m)))
        left_p = [c for c in left_p if id(c) not in taken]
        left_m = [c for c in left_m if id(c) not in taken]
    return out


def lookups(kind: Kind, side: Side, unpaired: Sequence[Record]) -> list[Lookup]:
    """The searches to make on the *other* side for `side`'s live unpaired changes, so
    the planner can match records that did not change in this run."""
    live = [r for r in unpaired if not r.deleted]
    target = other(side)
    out: list[Lookup] = []
    if kind == "contact":
        emails = sorted({e for r in live if isinstance(r, Contact)
                         if (e := _email(r.email))})
        if emails:
            out.append(Lookup(target, kind, "email", tuple(emails)))
    elif kind == "account":
        accounts = [r for r in live if isinstance(r, Account)]
        domains = sorted({d for r in accounts if (d := _domain(r))})
        names = sorted({n for r in accounts if (n := _name(r.name))})
        if domains:
            out.append(Lookup(target, kind, "domain", tuple(domains)))
        if names:
            out.append(Lookup(target, kind, "name", tuple(names)))
    return out
