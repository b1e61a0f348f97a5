"""One pair's reconciliation: given what each side's record holds now (or None if it did
not change in this run) and the pair's fingerprints, decide the writes.

Per field, three-way against the fingerprint of what each side last held: a side
*changed* a field when its hash differs from its fingerprint. A change is written to the
other side only if the direction lets that side's changes flow. When both sides changed
a field to different values, the later change wins (per-field times where a side gives
them, else the record's), the portal on a tie, and the conflict is reported. With no
fingerprint yet (a pair just matched), every differing field counts as changed on both
sides, except that an empty value never overwrites a filled one.

Deletes: a delete propagates only if the options allow it from that side (and the
direction lets that side's changes flow); an edit on the other side made later than the
delete wins over it (reported as a conflict on ``deleted``). A delete that does not
propagate leaves a tombstone in the pair, so the survivor is never recreated.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec import Struct

from switchboard.sync.fingerprint import Fingerprint, fingerprint, pair_key, side_field
from switchboard.sync.ops import Conflict, Create, Delete, Op, Update
from switchboard.sync.options import SIDES, FieldMap, ModuleOptions, Side, flows, other
from switchboard.sync.pairs import Pair, PairSide
from switchboard.sync.records import Kind, Record, Value, field_time, is_empty

__all__ = ["Outcome", "after_create", "reconcile"]


class Outcome(Struct, frozen=True, kw_only=True):
    ops: list[Op]
    # The pair after this run; None when it leaves the index (both records deleted).
    pair: Pair | None
    conflicts: list[Conflict]


def _sides(pair: Pair | None) -> tuple[PairSide | None, PairSide | None]:
    return (pair.portal, pair.mailbox) if pair is not None else (None, None)


def _seen(old: PairSide | None, rec: Record | None) -> int:
    old_at = old.seen_at if old is not None else 0
    return max(old_at, rec.modified_at) if rec is not None else old_at


def _deleted_now(old: PairSide | None, rec: Record | None) -> bool:
    if rec is not None:
        return rec.deleted
    return old is not None and old.deleted


def reconcile(kind: Kind, maps: Sequence[FieldMap], options: ModuleOptions,
              pair: Pair | None, p: Record | None, m: Record | None) -> Outcome:
    """The writes, the pair after them and the conflicts, for one pair (`pair` None: a
    match of `p` and `m` made in this run)."""
    old_p, old_m = _sides(pair)
    dead_p, dead_m = _deleted_now(old_p, p), _deleted_now(old_m, m)
    if dead_p and dead_m:
        return Outcome(ops=[], pair=None, conflicts=[])
    if pair is not None and (dead_p or dead_m):
        return _one_deleted(kind, maps, options, pair, p, m, "portal" if dead_p else "mailbox")
    return _merge(kind, maps, options, pair, p, m)


def _one_deleted(kind: Kind, maps: Sequence[FieldMap], options: ModuleOptions, pair: Pair,
                 p: Record | None, m: Record | None, dead: Side) -> Outcome:
    live: Side = other(dead)
    recs = {"portal": p, "mailbox": m}
    d_rec, l_rec = recs[dead], recs[live]
    d_old, l_old = pair.side(dead), pair.side(live)
    l_fp = fingerprint(l_rec, maps, live) if l_rec is not None else l_old.fields
    conflicts: list[Conflict] = []
    if d_rec is not None and not d_old.deleted:
        # Deleted in this run's changes: does the delete propagate?
        l_changed = l_rec is not None and l_fp != l_old.fields
        delete_at = d_rec.modified_at
        edit_at = l_rec.modified_at if l_rec is not None else 0
        delete_wins = not l_changed or delete_at > edit_at or (
            delete_at == edit_at and dead == "portal")
        if l_changed and l_rec is not None and options.deletes(dead) \
                and flows(options.direction, live):
            conflicts.append(_conflict(kind, pair.portal.id, pair.mailbox.id, "deleted",
                                       {dead: True, live: False},
                                       {dead: delete_at, live: edit_at},
                                       dead if delete_wins else live))
        if delete_wins and options.deletes(dead):
            op = Delete(kind=kind, side=live, id=l_old.id)
            return Outcome(ops=[op], pair=None, conflicts=conflicts)
    # The delete stays where it was made (a tombstone); the survivor's state is noted so
    # its changes are not looked at again, but nothing is written to a deleted record.
    sides = {
        dead: PairSide(id=d_old.id, seen_at=_seen(d_old, d_rec), fields=d_old.fields,
                       deleted=True),
        live: PairSide(id=l_old.id, seen_at=_seen(l_old, l_rec), fields=l_fp),
    }
    new = Pair(kind=kind, portal=sides["portal"], mailbox=sides["mailbox"])
    return Outcome(ops=[], pair=new, conflicts=conflicts)


def _conflict(kind: Kind, portal_id: str, mailbox_id: str, field: str,
              values: dict[Side, Value], times: dict[Side, int], winner: Side) -> Conflict:
    return Conflict(kind=kind, portal_id=portal_id, mailbox_id=mailbox_id, field=field,
                    portal_value=values["portal"], mailbox_value=values["mailbox"],
                    portal_at=times["portal"], mailbox_at=times["mailbox"], winner=winner)


def _merge(kind: Kind, maps: Sequence[FieldMap], options: ModuleOptions,
           pair: Pair | None, p: Record | None, m: Record | None) -> Outcome:
    old_p, old_m = _sides(pair)
    base: dict[Side, Fingerprint | None] = {
        "portal": old_p.fields if old_p is not None else None,
        "mailbox": old_m.fields if old_m is not None else None,
    }
    recs: dict[Side, Record | None] = {"portal": p, "mailbox": m}
    now: dict[Side, Fingerprint] = {
        s: fingerprint(r, maps, s) if r is not None else dict(base[s] or {})
        for s, r in recs.items()
    }
    ids = {"portal": old_p.id if old_p is not None else _id(p),
           "mailbox": old_m.id if old_m is not None else _id(m)}
    writes: dict[Side, dict[str, Value]] = {"portal": {}, "mailbox": {}}
    final: dict[Side, Fingerprint] = {"portal": dict(now["portal"]),
                                      "mailbox": dict(now["mailbox"])}
    conflicts: list[Conflict] = []
    for fmap in maps:
        key = pair_key(fmap)
        hp, hm = now["portal"].get(key), now["mailbox"].get(key)
        if hp == hm:
            continue
        values: dict[Side, Value] = {
            s: getattr(r, side_field(fmap, s)) if r is not None else None
            for s, r in recs.items()}
        go: dict[Side, bool] = {}
        for s in SIDES:
            b = base[s]
            changed = recs[s] is not None and (b is None or b.get(key) != now[s].get(key))
            go[s] = changed and flows(options.direction, s)
            if b is None and is_empty(values[s]):
                go[s] = False  # a first match fills gaps, it never empties a field
        if go["portal"] and go["mailbox"]:
            rp, rm = recs["portal"], recs["mailbox"]
            assert rp is not None and rm is not None
            times: dict[Side, int] = {"portal": field_time(rp, fmap.portal),
                                      "mailbox": field_time(rm, fmap.mailbox)}
            winner: Side = "mailbox" if times["mailbox"] > times["portal"] else "portal"
            conflicts.append(_conflict(kind, ids["portal"], ids["mailbox"], key, values,
                                       times, winner))
        elif go["portal"] or go["mailbox"]:
            winner = "portal" if go["portal"] else "mailbox"
        else:
            continue  # diverged, but neither side's change may flow: leave both
        loser = other(winner)
        writes[loser][side_field(fmap, loser)] = values[winner]
        final[loser][key] = now[winner][key]
    ops: list[Op] = [Update(kind=kind, side=s, id=ids[s], values=writes[s])
                     for s in SIDES if writes[s]]
    new = Pair(kind=kind,
               portal=PairSide(id=ids["portal"], seen_at=_seen(old_p, p),
                               fields=final["portal"]),
               mailbox=PairSide(id=ids["mailbox"], seen_at=_seen(old_m, m),
                                fields=final["mailbox"]))
    return Outcome(ops=ops, pair=new, conflicts=conflicts)


def _id(rec: Record | None) -> str:
    assert rec is not None, "a new match has both records"
    return rec.id


def after_create(op: Create, made: Record, maps: Sequence[FieldMap]) -> tuple[
        dict[str, Value], Pair]:
    """What a create leaves: the pair with the created record's own fingerprint (what the
    side holds, not what was sent), and the values the side assigned itself (a mailbox's
    new iCalendar UID, its organizer) to write back to the source (its field names), so
    both sides agree without another run. `made` in pair space (references translated)."""
    target, source = op.side, other(op.side)
    made_fp = fingerprint(made, maps, target)
    back: dict[str, Value] = {}
    source_fp = dict(op.source.fields)
    for fmap in maps:
        key = pair_key(fmap)
        value = getattr(made, side_field(fmap, target))
        if made_fp.get(key) != op.fields.get(key) and not is_empty(value):
            back[side_field(fmap, source)] = value
            source_fp[key] = made_fp[key]
    made_side = PairSide(id=made.id, seen_at=made.modified_at, fields=made_fp)
    source_side = PairSide(id=op.source.id, seen_at=op.source.seen_at, fields=source_fp)
    if target == "mailbox":
        return back, Pair(kind=op.kind, portal=source_side, mailbox=made_side)
    return back, Pair(kind=op.kind, portal=made_side, mailbox=source_side)
