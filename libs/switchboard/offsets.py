"""Commit tracking: which offset may a consumer commit when records finish out of order.

A consumer that works on many records at once finishes them in any order, but a Kafka
commit says "everything below this offset is done". So the commit point is one past the
highest offset below which every record taken is final (invariant 3). Pure; no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["OffsetTracker", "PartitionOffsets"]

K = TypeVar("K", bound=Hashable)


class PartitionOffsets:
    """One partition: offsets added in increasing order, marked done in any order.

    Offsets need not be contiguous (compaction and transaction markers leave gaps): the
    commit point advances over the records actually added, never over a gap's guess.
    """

    __slots__ = ("_committed", "_open", "_order", "_position")

    def __init__(self, committed: int | None = None) -> None:
        self._order: deque[int] = deque()  # taken, not yet passed by the commit point
        self._open: set[int] = set()  # taken and not final
        self._position = committed  # the commit point reached so far
        self._committed = committed  # the commit point last confirmed by the broker

    def __repr__(self) -> str:
        return (
            f"PartitionOffsets(position={self._position}, committed={self._committed}, "
            f"pending={self.pending}, span={self.span})"
        )

    def add(self, offset: int) -> None:
        """Take a record; offsets must strictly increase."""
        if self._order:
            if offset <= self._order[-1]:
                raise ValueError(f"offset {offset} added out of order (after {self._order[-1]})")
        elif self._position is not None and offset < self._position:
            # `_position` is one past the last final offset, so a new offset may equal it.
            raise ValueError(f"offset {offset} is below the commit point {self._position}")
        self._order.append(offset)
        self._open.add(offset)

    def done(self, offset: int) -> None:
        """Mark a taken record final (delivered, dead-lettered or skipped). Idempotent.

        KeyError if `offset` was never taken.
        """
        if offset in self._open:
            self._open.remove(offset)
            order, still_open = self._order, self._open
            # Amortised O(1): every offset is popped once.
            while order and order[0] not in still_open:
                self._position = order.popleft() + 1
            return
        if self._position is not None and offset < self._position:
            return  # already passed by the commit point
        if offset in self._order:  # O(n), but only on a repeated call
            return
        raise KeyError(offset)

    @property
    def pending(self) -> int:
        """Records taken and not yet final."""
        return len(self._open)

    @property
    def span(self) -> int:
        """Records taken since the commit point: final ones stuck behind an open one count."""
        return len(self._order)

    @property
    def position(self) -> int | None:
        """One past the highest offset below which every taken record is final."""
        return self._position

    @property
    def committed(self) -> int | None:
        """The commit point last confirmed with `mark_committed`."""
        return self._committed

    def committable(self) -> int | None:
        """The offset to commit now, or None if it would not move the committed point.

        Keeps answering the same offset until `mark_committed` confirms it, so a failed
        commit is simply retried next time.
        """
        if self._position is None or self._position == self._committed:
            return None
        return self._position

    def mark_committed(self, offset: int) -> None:
        """Record that the broker accepted a commit of `offset`."""
        if self._committed is None or offset > self._committed:
            self._committed = offset


class OffsetTracker(Generic[K]):
    """`PartitionOffsets` for many partitions, keyed by anything hashable (a TopicPartition)."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[K, PartitionOffsets] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._parts

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._parts))

    def partition(self, key: K) -> PartitionOffsets:
        """The tracker of `key`, created empty on first use."""
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = PartitionOffsets()
        return part

    def add(self, key: K, offset: int) -> None:
        self.partition(key).add(offset)

    def done(self, key: K, offset: int) -> None:
        """Mark final; a partition already dropped (revoked) is ignored."""
        part = self._parts.get(key)
        if part is not None:
            part.done(offset)

    def pending(self, key: K) -> int:
        part = self._parts.get(key)
        return part.pending if part is not None else 0

    def committable(self) -> dict[K, int]:
        """Offsets to commit now, for every partition whose commit point moved."""
        out: dict[K, int] = {}
        for key, part in self._parts.items():
            offset = part.committable()
            if offset is not None:
                out[key] = offset
        return out

    def mark_committed(self, offsets: dict[K, int]) -> None:
        for key, offset in offsets.items():
            part = self._parts.get(key)
            if part is not None:
                part.mark_committed(offset)

    def drop(self, key: K) -> None:
        """Forget a partition (revoked: its new owner redoes it from the last commit)."""
        self._parts.pop(key, None)
