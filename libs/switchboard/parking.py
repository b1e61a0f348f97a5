"""Parked lanes: deliveries waiting for a retry on Kafka instead of in memory, pure.

A lane is one (destination, conversation). When its head fails and the next attempt is
far off, the head is written to `deliveries.parked` (partition p, like the `deliveries`
record it came from) and so is every later record of that lane until the lane drains, so
order holds while the main partition's commit point moves on.

The parked partition is a log read by the deliverer that owns partition p. Folding it
with `ParkedPartition.apply` gives, per lane, its waiting deliveries in order with their
attempt counts and due times: the same fold on a restart or a rebalance rebuilds exactly
what the previous owner had. A later record for the same delivery (a failed retry,
parked again) updates it in place; a `Resolved` marker removes it. Memory per parked
delivery is one small entry: payloads stay on Kafka and are fetched when due.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec
from msgspec import Struct

from switchboard.model import Delivery, DeliveryRef
from switchboard.offsets import PartitionOffsets

__all__ = ["Entry", "LaneKey", "ParkedDelivery", "ParkedLane", "ParkedPartition",
           "ParkedRecord", "Resolved", "parked_decoder", "parked_encoder"]

LaneKey = tuple[str, str]  # (destination id, conversation id)


class ParkedDelivery(Struct, tag="park", tag_field="kind", rename="camel", omit_defaults=True):
    """A delivery waiting in a parked lane."""

    delivery: Delivery
    attempts: int  # attempts already made
    due_at: int  # ms since the epoch; 0 = as soon as it is its lane's head
    source: DeliveryRef
    first_failed_at: int | None = None  # ms: the destination's first failure in this run


class Resolved(Struct, tag="done", tag_field="kind", rename="camel"):
    """A parked delivery is final (delivered or dead-lettered)."""

    delivery_id: str
    destination_id: str
    conversation_id: str


ParkedRecord = ParkedDelivery | Resolved
parked_decoder = msgspec.json.Decoder(ParkedRecord)
parked_encoder = msgspec.json.Encoder()


class Entry(Struct, kw_only=True):
    """What memory holds for one parked delivery: where it is and when it is due."""

    delivery_id: str
    offset: int
    attempts: int
    due_at: int
    first_failed_at: int | None = None


class ParkedLane:
    """One parked lane: its deliveries in order, and writes not folded back yet."""

    __slots__ = ("busy", "entries", "expected", "key")

    def __init__(self, key: LaneKey) -> None:
        self.key = key
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        # Delivery ids written to the partition but not read back yet: the lane is not
        # drained while any is on its way.
        self.expected: set[str] = set()
        self.busy = False  # a drain is running

    @property
    def head(self) -> Entry | None:
        return next(iter(self.entries.values()), None)

    @property
    def drained(self) -> bool:
        return not self.entries and not self.expected and not self.busy


class ParkedPartition:
    """The fold of one `deliveries.parked` partition, with its commit tracking."""

    __slots__ = ("lanes", "offsets")

    def __init__(self) -> None:
        self.lanes: dict[LaneKey, ParkedLane] = {}
        self.offsets = PartitionOffsets()

    def lane(self, key: LaneKey) -> ParkedLane:
        """The parked lane of `key`, created empty (a lane about to be parked)."""
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = ParkedLane(key)
        return lane

    def apply(self, offset: int, record: ParkedRecord | None) -> ParkedLane | None:
        """Fold the record read at `offset` (None: unreadable); return the lane it touched."""
        self.offsets.add(offset)
        if record is None:
            self.offsets.done(offset)
            return None
        if isinstance(record, Resolved):
            self.offsets.done(offset)
            lane = self.lanes.get((record.destination_id, record.conversation_id))
            if lane is not None:
                self.resolve(lane, record.delivery_id)
            return lane
        d = record.delivery
        lane = self.lane((d.destination_id, d.conversation_id))
        lane.expected.discard(d.delivery_id)
        old = lane.entries.get(d.delivery_id)
        if old is not None:
            # A retry parked again: the new record supersedes the old one, in place.
            self.offsets.done(old.offset)
            old.offset = offset
            old.attempts = max(old.attempts, record.attempts)
            old.due_at = record.due_at
            old.first_failed_at = record.first_failed_at or old.first_failed_at
        else:
            lane.entries[d.delivery_id] = Entry(
                delivery_id=d.delivery_id, offset=offset, attempts=record.attempts,
                due_at=record.due_at, first_failed_at=record.first_failed_at)
        return lane

    def resolve(self, lane: ParkedLane, delivery_id: str) -> None:
        """A parked delivery is final: forget it, let the commit point pass it."""
        entry = lane.entries.pop(delivery_id, None)
        if entry is not None:
            self.offsets.done(entry.offset)
        self.drop_if_drained(lane)

    def drop_if_drained(self, lane: ParkedLane) -> None:
        if lane.drained and self.lanes.get(lane.key) is lane:
            del self.lanes[lane.key]

    @property
    def parked(self) -> int:
        """Deliveries waiting in this partition."""
        return sum(len(lane.entries) for lane in self.lanes.values())
