"""What a plan says to do: operations on the sides (a tagged union), the conflicts it
resolved, and the plan itself. Data only; a runner applies them.

How to apply a plan, and why it is safe to stop anywhere: apply `ops` in order; after a
`Create` succeeds, store `created_pair(op, new_id, modified_at)` in the pair index; when
every op is done, store `Plan.pairs`, drop `Plan.unpaired`, then store `Plan.watermark`.
A run stopped part-way leaves the watermark where it was, so the next plan reads the same
changes again and finishes the work: updates already written are recognised by their
content, deletes already made by the deleted flag, creates by their pair (or, if the
pair was lost with the crash, by matching).
"""

from __future__ import annotations

from msgspec import Struct

from switchboard.sync.fingerprint import Fingerprint
from switchboard.sync.matching import Match
from switchboard.sync.options import Side
from switchboard.sync.pairs import Pair, PairSide
from switchboard.sync.records import Kind, Value

__all__ = [
    "Conflict",
    "Create",
    "Delete",
    "Op",
    "Plan",
    "Update",
    "Watermark",
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
    # A side's own change cursors (Graph's delta links, by resource), kept with the
    # watermark so the next run reads only what changed, deletes included.
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
