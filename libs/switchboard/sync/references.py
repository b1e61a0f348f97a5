"""References between records (a contact's account, a task's contact and account)
translated through the pairs, so each side holds its own ids.

The planner compares one value per field on both sides, so references are compared in
**portal space**: before planning, a mailbox record's reference becomes the id of the
portal record paired with the one it names (`to_portal_space`); a reference to a record
that is not paired (yet) is left out (None: "no reference"), so it is never written as
a foreign id. Written to the mailbox, a portal id becomes its partner's mailbox id
(`to_side`); one with no partner is left out of the write and named, and the runner
records that field as unsynced on both sides of the pair (`unsynced`), so the next time
either record is read the reference counts as a change and is written once its target is
paired. The referenced kinds' modules must be applied first: accounts, then contacts,
then tasks (`MODULE_ORDER`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from switchboard.sync.fingerprint import Fingerprint, pair_key, value_hash
from switchboard.sync.options import FieldMap, Side
from switchboard.sync.pairs import Pair, PairIndex
from switchboard.sync.records import Kind, Record, Value

__all__ = ["MODULE_ORDER", "REFERENCES", "reference_maps", "to_portal_space", "to_side",
           "unsynced"]

# Per kind, its reference fields and the kind each names.
REFERENCES: dict[Kind, dict[str, Kind]] = {
    "contact": {"account_id": "account"},
    "task": {"contact_id": "contact", "account_id": "account"},
}
# Modules (by kind) in the order a run applies them: what is referenced before what refers to it;
# e-mail logging last (it matches e-mails to the contacts synced before it).
MODULE_ORDER: tuple[Kind, ...] = ("account", "contact", "task", "event", "email")


def reference_maps(kind: Kind, maps: Sequence[FieldMap]) -> dict[str, FieldMap]:
    """The mapped reference fields of `kind`, by portal field name (only a reference
    mapped to the same field on both sides is translated)."""
    refs = REFERENCES.get(kind, {})
    return {m.portal: m for m in maps if m.portal == m.mailbox and m.portal in refs}


def _translate(ref: Value, target_kind: Kind, source: Side, index: PairIndex | None
               ) -> str | None:
    if not isinstance(ref, str) or not ref or index is None:
        return None
    pair = index.find(target_kind, source, ref)
    if pair is None:
        return None
    other = pair.mailbox if source == "portal" else pair.portal
    return None if other.deleted else other.id


def to_portal_space(kind: Kind, records: Iterable[Record], maps: Sequence[FieldMap],
                    indexes: Mapping[Kind, PairIndex]) -> list[Record]:
    """Mailbox records with their references as the paired portal ids (None where the
    record named is not paired)."""
    refs = reference_maps(kind, maps)
    if not refs:
        return list(records)
    out: list[Record] = []
    for rec in records:
        changes: dict[str, Value] = {}
        for name in refs:
            value = getattr(rec, name)
            if value is not None:
                changes[name] = _translate(value, REFERENCES[kind][name], "mailbox",
                                           indexes.get(REFERENCES[kind][name]))
        out.append(msgspec.structs.replace(rec, **changes) if changes else rec)
    return out


def to_side(kind: Kind, side: Side, values: Mapping[str, Value], maps: Sequence[FieldMap],
            indexes: Mapping[Kind, PairIndex]) -> tuple[dict[str, Value], list[str]]:
    """Values about to be written to `side` with portal-space references as that side's
    ids, and the reference fields left out (their record has no partner there)."""
    out = dict(values)
    refs = reference_maps(kind, maps)
    left_out: list[str] = []
    if side == "portal":
        return out, left_out
    for name in refs:
        if name not in out or out[name] is None:
            continue
        target = REFERENCES[kind][name]
        mine = _translate(out[name], target, "portal", indexes.get(target))
        if mine is None:
            del out[name]
            left_out.append(name)
        else:
            out[name] = mine
    return out, left_out


def unsynced(pair: Pair, fields: Sequence[str], maps: Sequence[FieldMap]) -> Pair:
    """`pair` with `fields` (portal names) marked unsynced on both sides: the hash of no
    value, so a record read again with a reference counts as changed."""
    if not fields:
        return pair
    keys = [pair_key(m) for m in maps if m.portal in fields]
    empty = value_hash(None)

    def mark(fp: Fingerprint) -> Fingerprint:
        return {**fp, **{k: empty for k in keys}}

    return msgspec.structs.replace(
        pair, portal=msgspec.structs.replace(pair.portal, fields=mark(pair.portal.fields)),
        mailbox=msgspec.structs.replace(pair.mailbox, fields=mark(pair.mailbox.fields)))
