"""What a plan says to do: operations on the sides (a tagged union), the conflicts it
resolved, and the plan itself. Data only; a runner applies them.

How to apply a plan, and why it is safe to stop anywhere: apply `ops` in order; after a
`Create` succeeds, store `created_pair(op, new_id, modified_at)` in the pair index; when
every op is done, store `Plan.pairs`, drop `Plan.unpaired`, then store `Plan.watermark`.
A run stopped part-way leaves the watermark where it was, so the next plan reads the same
changes again and finishes the work: updates already written are recognised by their
content, deletes already made by the deleted flag, creates by their pair (or, if the
pair was lost with the crash, by matching).

Creates `alongside` picks may run concurrently, each followed by its own pair: a crash
then leaves up to a window of created records without their pairs, and the next run
pairs each with its source by a match key both carry (an e-mail, a domain, a name), which
only the copy of that source has among the plan's creates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from msgspec import Struct

from switchboard.sync.fingerprint import Fingerprint
from switchboard.sync.matching import KeyName, Match, match_key
from switchboard.sync.options import FieldMap, Side
from switchboard.sync.pairs import Pair, PairSide
from switchboard.sync.records import KINDS, Kind, Value

__all__ = [
    "Conflict",
    "Create",
    "Delete",
    "Op",
    "Plan",
    "Update",
    "Watermark",
    "alongside",
    "created_pair",
]


class Create(Struct, frozen=True, kw_only=True, rename="camel", tag="create",
             tag_field="op"):
    """Create a record on `side` from the other side's record `source_id`."""

    kind: Kind
    side: Side
    source_id: str
    values: dict[str, Value]  # `side`'s field names
    # The pair to record once the create succeeds (see `created_pair`).
    source: PairSide
    fields: Fingerprint


class Update(Struct, frozen=True, kw_only=True, rename="camel", tag="update",
             tag_field="op"):
    """Set `values` (only the fields that change) on `side`'s record `id`."""

    kind: Kind
    side: Side
    id: str
    values: dict[str, Value]


class Delete(Struct, frozen=True, kw_only=True, rename="camel", tag="delete",
             tag_field="op"):
    """Delete `side`'s record `id` (its partner was deleted)."""

    kind: Kind
    side: Side
    id: str


Op = Create | Update | Delete


class Conflict(Struct, frozen=True, kw_only=True, rename="camel"):
    """Both sides changed `field` (pair-space key; ``deleted`` for an edit against a
    delete) to different values; the later change won, the portal on a tie."""

    kind: Kind
    portal_id: str
    mailbox_id: str
    field: str
    portal_value: Value
    mailbox_value: Value
    portal_at: int
    mailbox_at: int
    winner: Side


class Watermark(Struct, frozen=True, kw_only=True, rename="camel"):
    """How far each side's changes have been read, in that side's own clock (ms): the
    next run asks each for what changed since (inclusive)."""

    portal: int = 0
    mailbox: int = 0
    # A side's own state between runs, kept with the watermark: its change cursors
    # (Graph's delta links, by resource), so the next run reads only what changed,
    # deletes included; when its paired ids were last checked (Syncro's, which keeps no
    # tombstone: `switchboard.sync.vanished`).
    portal_links: dict[str, str] = {}
    mailbox_links: dict[str, str] = {}


class Plan(Struct, frozen=True, kw_only=True, rename="camel"):
    kind: Kind
    ops: list[Op]
    # Pair entries to store (new matches, refreshed fingerprints, tombstones); the pairs
    # of creates come from their ops.
    pairs: list[Pair]
    # Pairs to drop (both records deleted).
    unpaired: list[Pair]
    matched: list[Match]
    conflicts: list[Conflict]
    watermark: Watermark

    @property
    def empty(self) -> bool:
        """Nothing to write anywhere (the watermark may still move)."""
        return not (self.ops or self.pairs or self.unpaired)


def created_pair(op: Create, new_id: str, modified_at: int = 0) -> Pair:
    """The pair to record after `op` created record `new_id` (its `modified_at`, if the
    side answered with it)."""
    target = PairSide(id=new_id, seen_at=modified_at, fields=op.fields)
    if op.side == "mailbox":
        return Pair(kind=op.kind, portal=op.source, mailbox=target)
    return Pair(kind=op.kind, portal=target, mailbox=op.source)


# Per kind, the match keys (besides content) a created record carries over from its
# source, and the fields each key is read from (`matching.match_key`).
_KEYS: dict[Kind, tuple[tuple[KeyName, tuple[str, ...]], ...]] = {
    "contact": (("email", ("email",)),),
    "account": (("domain", ("domain", "website")), ("name", ("name",))),
}


def _keys(op: Create, same: frozenset[str]) -> list[tuple[KeyName, str]] | None:
    """`op`'s match keys as its created record will carry them (the same as its
    source's); None unless every key field is copied as itself and one key has a value."""
    keys = _KEYS.get(op.kind, ())
    if not keys or not all(f in same for _, fields in keys for f in fields):
        return None
    rec = cast(Any, KINDS[op.kind])(id="", modified_at=0, **{
        f: op.values[f] for _, fields in keys for f in fields if f in op.values})
    out = [(key, v) for key, _ in keys if (v := match_key(rec, {}, key)) is not None]
    return out or None


def alongside(ops: Sequence[Op], maps: Sequence[FieldMap]) -> set[int]:
    """The indexes of the creates in `ops` that may run concurrently: each carries a
    match key to its new record that no other create of the plan has, so a later run
    pairs the two even if the crash lost the pair. The rest run one at a time."""
    same = frozenset(m.portal for m in maps if m.portal == m.mailbox)
    keyed: dict[int, list[tuple[KeyName, str]]] = {}
    seen: dict[tuple[KeyName, str], int] = {}
    for i, op in enumerate(ops):
        if isinstance(op, Create) and (keys := _keys(op, same)) is not None:
            keyed[i] = keys
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
    return {i for i, keys in keyed.items() if all(seen[k] == 1 for k in keys)}
