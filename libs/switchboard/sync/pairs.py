"""The record-pair index: which record here is which record there, and the fingerprint
of what the sync last wrote (or read) on each side.

A pair is found from either side's id. A side marked `deleted` is a tombstone: its
record was deleted and the delete did not propagate (the direction or the options did
not allow it, or the other side's later edit won), so the survivor is never recreated
there. A pair leaves the index when both of its records are deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from msgspec import Struct

from switchboard.sync.fingerprint import Fingerprint
from switchboard.sync.options import Side
from switchboard.sync.records import Kind

__all__ = ["Pair", "PairIndex", "PairSide"]


class PairSide(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """One side of a pair."""

    id: str
    # The newest `modified_at` of this record the sync has taken into account; an older
    # version read later (a replay, a lagging listing) is ignored.
    seen_at: int = 0
    fields: Fingerprint = {}
    deleted: bool = False


class Pair(Struct, frozen=True, kw_only=True, rename="camel"):
    kind: Kind
    portal: PairSide
    mailbox: PairSide

    def side(self, side: Side) -> PairSide:
        return self.portal if side == "portal" else self.mailbox

    @property
    def key(self) -> str:
        """The pair's key where it is stored (both ids: a pair never changes partner)."""
        return f"{self.kind}:{self.portal.id}:{self.mailbox.id}"


class PairIndex:
    """Pairs by either side's id; `updated` returns a new index, `add` and `remove`
    change this one."""

    __slots__ = ("_by_mailbox", "_by_portal")

    def __init__(self, pairs: Iterable[Pair] = ()) -> None:
        self._by_portal: dict[tuple[str, str], Pair] = {}
        self._by_mailbox: dict[tuple[str, str], Pair] = {}
        for pair in pairs:
            self._put(pair)

    def _put(self, pair: Pair) -> None:
        # A pair replaces any older pair of either of its records.
        for old in (self._by_portal.get((pair.kind, pair.portal.id)),
                    self._by_mailbox.get((pair.kind, pair.mailbox.id))):
            if old is not None:
                self._drop(old)
        self._by_portal[(pair.kind, pair.portal.id)] = pair
        self._by_mailbox[(pair.kind, pair.mailbox.id)] = pair

    def _drop(self, pair: Pair) -> None:
        self._by_portal.pop((pair.kind, pair.portal.id), None)
        self._by_mailbox.pop((pair.kind, pair.mailbox.id), None)

    def find(self, kind: Kind, side: Side, record_id: str) -> Pair | None:
        """The pair holding `side`'s record `record_id`, if any."""
        table = self._by_portal if side == "portal" else self._by_mailbox
        return table.get((kind, record_id))

    def __iter__(self) -> Iterator[Pair]:
        return iter(list(self._by_portal.values()))

    def __len__(self) -> int:
        return len(self._by_portal)

    def add(self, pair: Pair) -> None:
        """Put `pair` in place (for an index one run owns; `updated` otherwise)."""
        self._put(pair)

    def remove(self, pair: Pair) -> None:
        """Drop `pair` in place (for an index one run owns)."""
        self._drop(pair)

    def updated(self, upserts: Iterable[Pair] = (), removals: Iterable[Pair] = ()
                ) -> PairIndex:
        """A new index with `removals` dropped, then `upserts` put."""
        out = PairIndex()
        out._by_portal = dict(self._by_portal)
        out._by_mailbox = dict(self._by_mailbox)
        for pair in removals:
            out._drop(pair)
        for pair in upserts:
            out._put(pair)
        return out
