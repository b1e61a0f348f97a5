"""Two in-memory sides and a tiny executor for the planner's tests.

A side keeps every record (deleted ones as tombstones, so "changed since T" includes
them, as the connector contract asks) and stamps each write with a shared clock. The
portal gives per-field modification times, the mailbox does not, so both paths of the
conflict rule are exercised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from switchboard.sync.matching import Lookup, lookups
from switchboard.sync.ops import Create, Delete, Plan, Update, Watermark, created_pair
from switchboard.sync.options import SIDES, ModuleOptions, Side
from switchboard.sync.pairs import PairIndex
from switchboard.sync.plan import Changes, plan
from switchboard.sync.records import KINDS, Kind, Record


class Clock:
    def __init__(self, now: int = 1_000) -> None:
        self.now = now
        self.hold = False  # the next write happens in the same millisecond as the last

    def tick(self, step: int = 1) -> int:
        if self.hold:
            self.hold = False
        else:
            self.now += step
        return self.now


class MemorySide:
    def __init__(self, name: Side, clock: Clock, field_times: bool | None = None) -> None:
        self.name = name
        self.clock = clock
        self.field_times = (name == "portal") if field_times is None else field_times
        self.records: dict[str, Record] = {}
        self._next = 0
        # Writes made by the sync, for assertions: (op, id).
        self.sync_writes: list[tuple[str, str]] = []

    def _stamp(self, names: Iterable[str], old: Record | None) -> dict[str, int]:
        if not self.field_times:
            return {}
        times = dict(old.field_modified_at) if old is not None else {}
        times.update((n, self.clock.now) for n in names)
        return times

    def create(self, kind: Kind, **values: Any) -> Record:
        self._next += 1
        rid = f"{self.name[0].upper()}{self._next:05d}"
        now = self.clock.tick()
        rec = KINDS[kind](id=rid, modified_at=now, field_modified_at=self._stamp(values, None),
                          **values)
        self.records[rid] = rec
        return rec

    def update(self, rid: str, **values: Any) -> Record:
        old = self.records[rid]
        assert not old.deleted, "a deleted record cannot be updated"
        now = self.clock.tick()
        rec = msgspec.structs.replace(old, modified_at=now,
                                      field_modified_at=self._stamp(values, old), **values)
        self.records[rid] = rec
        return rec

    def delete(self, rid: str) -> Record:
        old = self.records[rid]
        rec = msgspec.structs.replace(old, deleted=True, modified_at=self.clock.tick())
        self.records[rid] = rec
        return rec

    def changed_since(self, kind: Kind, since: int) -> list[Record]:
        return [r for r in self.records.values()
                if isinstance(r, KINDS[kind]) and r.modified_at >= since]

    def live(self) -> list[Record]:
        return [r for r in self.records.values() if not r.deleted]

    def lookup(self, q: Lookup) -> list[Record]:
        from switchboard.sync.matching import match_key

        wanted = set(q.values)
        out = []
        for r in self.live():
            if isinstance(r, KINDS[q.kind]) and match_key(r, {}, q.by) in wanted:
                out.append(r)
        return out


def read(kind: Kind, portal: MemorySide, mailbox: MemorySide, index: PairIndex,
         watermark: Watermark, *, since_zero: bool = False) -> Changes:
    """What a runner would read: the changes since the watermark, then the lookups."""
    p = portal.changed_since(kind, 0 if since_zero else watermark.portal)
    m = mailbox.changed_since(kind, 0 if since_zero else watermark.mailbox)
    known: dict[Side, list[Record]] = {"portal": [], "mailbox": []}
    for side in SIDES:
        recs = p if side == "portal" else m
        unpaired = [r for r in recs if index.find(kind, side, r.id) is None]
        for q in lookups(kind, side, unpaired):
            target = portal if q.side == "portal" else mailbox
            known[q.side] += target.lookup(q)
    return Changes(portal=p, mailbox=m, portal_known=known["portal"],
                   mailbox_known=known["mailbox"])


def apply(result: Plan, portal: MemorySide, mailbox: MemorySide, index: PairIndex,
          *, stop_after: int | None = None, lose_last_pair: bool = False
          ) -> tuple[PairIndex, bool]:
    """Apply `result`; with `stop_after`, only its first ops (a run killed there, maybe
    between a create and the write of its pair). Answers the index and whether the run
    finished (only then is the watermark to be stored)."""
    sides = {"portal": portal, "mailbox": mailbox}
    ops = result.ops if stop_after is None else result.ops[:stop_after]
    for i, op in enumerate(ops):
        side = sides[op.side]
        if isinstance(op, Create):
            rec = side.create(op.kind, **op.values)
            side.sync_writes.append(("create", rec.id))
            last = stop_after is not None and i == len(ops) - 1
            if not (last and lose_last_pair):
                index = index.updated([created_pair(op, rec.id, rec.modified_at)])
        elif isinstance(op, Update):
            side.update(op.id, **op.values)
            side.sync_writes.append(("update", op.id))
        elif isinstance(op, Delete):
            side.delete(op.id)
            side.sync_writes.append(("delete", op.id))
    if stop_after is not None:
        return index, False
    return index.updated(result.pairs, result.unpaired), True


class Sync:
    """One module between two memory sides: its index and watermark, run by run."""

    def __init__(self, kind: Kind = "contact", options: ModuleOptions | None = None,
                 clock: Clock | None = None) -> None:
        self.kind: Kind = kind
        self.options = options or ModuleOptions()
        self.clock = clock or Clock()
        self.portal = MemorySide("portal", self.clock)
        self.mailbox = MemorySide("mailbox", self.clock)
        self.index = PairIndex()
        self.watermark = Watermark()

    def plan(self, *, since_zero: bool = False, lookups: bool = True) -> Plan:
        changes = read(self.kind, self.portal, self.mailbox, self.index, self.watermark,
                       since_zero=since_zero)
        if not lookups:
            changes = Changes(portal=changes.portal, mailbox=changes.mailbox)
        return plan(self.kind, changes, self.index, self.options, self.watermark)

    def run(self, **kw: Any) -> Plan:
        result = self.plan(**kw)
        self.apply(result)
        return result

    def apply(self, result: Plan, **kw: Any) -> bool:
        self.index, done = apply(result, self.portal, self.mailbox, self.index, **kw)
        if done:
            self.watermark = result.watermark
        return done
