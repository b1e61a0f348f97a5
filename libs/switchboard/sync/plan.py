"""The planner: one module's run, from the changes both sides report to the operations
that bring them in step. A pure function; `switchboard.sync.ops` says how to apply it.

Steps: keep each record's newest version (a listing may repeat one); drop what the pair
index says is no change (its fingerprint is what the sync last wrote or read there: this
is loop prevention) or is older than what was already taken into account; reconcile
every pair that changed (`switchboard.sync.merge`); match unpaired records against the
other side's unpaired records and lookups before creating anything
(`switchboard.sync.matching`); create the rest where the direction allows. Planning again
after the plan was applied yields an empty plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from msgspec import Struct

from switchboard.sync.fingerprint import Fingerprint, check_maps, fingerprint, side_field
from switchboard.sync.matching import Candidate, Match, match
from switchboard.sync.merge import reconcile
from switchboard.sync.ops import Conflict, Create, Op, Plan, Watermark
from switchboard.sync.options import SIDES, FieldMap, ModuleOptions, Side, flows, other
from switchboard.sync.pairs import Pair, PairIndex, PairSide
from switchboard.sync.records import KINDS, Kind, Record

__all__ = ["Changes", "plan"]


class Changes(Struct, frozen=True, kw_only=True):
    """What a run read: each side's records changed since the watermark (deleted ones
    included, repeats allowed), and the records its lookups found (`matching.lookups`)."""

    portal: list[Record] = []
    mailbox: list[Record] = []
    portal_known: list[Record] = []
    mailbox_known: list[Record] = []


def _newest(records: Iterable[Record]) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for r in records:
        old = out.get(r.id)
        # The newest version; at the same time a delete is the later event.
        if old is None or (r.modified_at, r.deleted) > (old.modified_at, old.deleted):
            out[r.id] = r
    return out


def _fresh(rec: Record, old: PairSide, fp: Fingerprint) -> Record | None:
    """`rec` if it tells the pair something new; None for an echo of the sync's own
    write, a record read again unchanged, or a version older than one already seen."""
    if rec.modified_at < old.seen_at:
        return None
    if rec.deleted == old.deleted and (rec.deleted or fp == old.fields):
        return None
    return rec


def _watermark(old: int, changes: Iterable[Record], overlap_ms: int) -> int:
    newest = max((r.modified_at for r in changes), default=None)
    return old if newest is None else max(old, newest - overlap_ms)


def _create(kind: Kind, maps: Sequence[FieldMap], source: Side, rec: Record,
            fp: Fingerprint) -> Create:
    target = other(source)
    values = {side_field(fm, target): getattr(rec, side_field(fm, source)) for fm in maps}
    return Create(kind=kind, side=target, source_id=rec.id, values=values,
                  source=PairSide(id=rec.id, seen_at=rec.modified_at, fields=fp),
                  fields=dict(fp))


def plan(kind: Kind, changes: Changes, pairs: PairIndex, options: ModuleOptions,
         watermark: Watermark) -> Plan:
    """The operations of one run of module `kind` (see the module's docstring)."""
    maps = options.field_maps(kind)
    check_maps(kind, maps)
    cls = KINDS[kind]
    lists = (changes.portal, changes.mailbox, changes.portal_known, changes.mailbox_known)
    for records in lists:
        for r in records:
            if not isinstance(r, cls):
                raise TypeError(f"a {type(r).__name__} among the {kind} changes")

    newest: dict[Side, dict[str, Record]] = {"portal": _newest(changes.portal),
                                             "mailbox": _newest(changes.mailbox)}
    units: dict[str, tuple[Pair, dict[Side, Record | None]]] = {}
    candidates: dict[Side, list[Candidate]] = {"portal": [], "mailbox": []}
    for side in SIDES:
        for rec in newest[side].values():
            fp = fingerprint(rec, maps, side)
            pair = pairs.find(kind, side, rec.id)
            if pair is None:
                candidates[side].append(Candidate(rec, fp, changed=True))
                continue
            fresh = _fresh(rec, pair.side(side), fp)
            if fresh is not None:
                units.setdefault(pair.key, (pair, {"portal": None, "mailbox": None}))
                units[pair.key][1][side] = fresh
    for side in SIDES:
        known = changes.portal_known if side == "portal" else changes.mailbox_known
        for rec in _newest(known).values():
            if rec.id not in newest[side] and pairs.find(kind, side, rec.id) is None:
                candidates[side].append(Candidate(rec, fingerprint(rec, maps, side), False))

    ops: list[Op] = []
    new_pairs: list[Pair] = []
    unpaired: list[Pair] = []
    conflicts: list[Conflict] = []
    for key in sorted(units):
        pair, recs = units[key]
        out = reconcile(kind, maps, options, pair, recs["portal"], recs["mailbox"])
        ops += out.ops
        conflicts += out.conflicts
        if out.pair is None:
            unpaired.append(pair)
        elif out.pair != pair:
            new_pairs.append(out.pair)

    matched: list[Match] = []
    used: set[tuple[Side, str]] = set()
    for cp, cm, by in match(kind, candidates["portal"], candidates["mailbox"]):
        out = reconcile(kind, maps, options, None, cp.record, cm.record)
        assert out.pair is not None  # both records are live
        ops += out.ops
        conflicts += out.conflicts
        new_pairs.append(out.pair)
        matched.append(Match(cp.record.id, cm.record.id, by))
        used.update((("portal", cp.record.id), ("mailbox", cm.record.id)))

    for side in SIDES:
        if not flows(options.direction, side):
            continue
        for c in sorted(candidates[side], key=lambda c: c.record.id):
            if c.changed and not c.record.deleted and (side, c.record.id) not in used:
                ops.append(_create(kind, maps, side, c.record, c.fingerprint))

    return Plan(kind=kind, ops=ops, pairs=new_pairs, unpaired=unpaired, matched=matched,
                conflicts=conflicts,
                watermark=Watermark(
                    portal=_watermark(watermark.portal, changes.portal, options.overlap_ms),
                    mailbox=_watermark(watermark.mailbox, changes.mailbox,
                                       options.overlap_ms)))
