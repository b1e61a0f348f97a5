"""The delivery log: every delivery's status and recent attempts, folded from the
`deliveries.attempts` records (pure: no I/O).

Per integration, deliveries are kept in lists ordered by (updatedAt, deliveryId), one for
all and one per status, maintained incrementally with bisect: a page is a slice found in
O(log n), never a sort of the integration's deliveries.
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Iterator

from msgspec import Struct

from switchboard.model import AttemptRecord, DeliveryRef, DeliveryStatus

HISTORY = 20  # attempt entries kept per delivery
PAGE_DEFAULT = 50
PAGE_MAX = 500
RESPONSE_MAX = 1024  # characters of an answer kept per attempt
# Ties at the same instant and attempt: a final outcome outranks "will retry".
_RANK: dict[str, int] = {"pending": 0, "failed": 1, "delivered": 2}

_Key = tuple[int, str]  # (updated_at, delivery_id)


class CursorError(ValueError):
    """A cursor that this log did not make."""


class AttemptEntry(Struct, rename="camel"):
    """One attempt (or status change) as the delivery log shows it."""

    attempt: int
    at: int
    status: int | None  # the HTTP status answered
    error: str | None
    latency_ms: int | None
    response: str | None


class DeliverySummary(Struct, rename="camel"):
    """Where one delivery stands, and its last `HISTORY` attempts (oldest first)."""

    delivery_id: str
    activity_id: str
    hub_id: str
    integration_id: str  # the destination
    conversation_id: str
    status: DeliveryStatus
    attempts: int  # attempts made, redeliveries included
    last_status: int | None
    last_error: str | None
    created_at: int
    updated_at: int
    next_attempt_at: int | None
    source: DeliveryRef | None
    history: list[AttemptEntry]
    # (at, attempt, rank) of the record that set `status`, and `at` of `last_status`.
    mark: tuple[int, int, int]
    code_at: int
    # Attempt records seen: with the highest attempt number, gives `attempts` even when
    # a redelivery numbers its attempts from 1 again.
    counted: int = 0

    @property
    def key(self) -> _Key:
        return (self.updated_at, self.delivery_id)


def encode_cursor(key: _Key) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, delivery_id = raw.partition(":")
        if not sep or not delivery_id:
            raise ValueError(cursor)
        return (int(at), delivery_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CursorError("not a cursor of this listing") from None


def _entry(rec: AttemptRecord) -> AttemptEntry:
    response = rec.response[:RESPONSE_MAX] if rec.response is not None else None
    return AttemptEntry(attempt=rec.attempt, at=rec.at, status=rec.code, error=rec.error,
                        latency_ms=rec.latency_ms, response=response)


class DeliveryLog:
    """At most `max_entries` deliveries; the one updated longest ago is forgotten first."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._by_id: dict[str, DeliverySummary] = {}
        # Delivery ids in the order their updatedAt last advanced: the eviction order.
        self._recency: OrderedDict[str, None] = OrderedDict()
        # (integration, None) → all its deliveries; (integration, status) → those in it.
        self._index: dict[tuple[str, str | None], list[_Key]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, delivery_id: str) -> DeliverySummary | None:
        return self._by_id.get(delivery_id)

    def apply(self, rec: AttemptRecord) -> None:
        """Fold one record in. A record older than what set the status only adds history."""
        s = self._by_id.get(rec.delivery_id)
        if s is None:
            self._create(rec)
            return
        entry = _entry(rec)
        if entry not in s.history:  # a producer retry may write a record twice
            insort(s.history, entry, key=lambda e: (e.at, e.attempt))
            if len(s.history) > HISTORY:
                del s.history[0]
            if rec.attempt > 0:
                s.counted += 1
                s.attempts = max(s.attempts, rec.attempt, s.counted)
        s.created_at = min(s.created_at, rec.at)
        if rec.code is not None and rec.at >= s.code_at:
            s.last_status, s.code_at = rec.code, rec.at
        mark = (rec.at, rec.attempt, _RANK[rec.status])
        if mark < s.mark:
            if s.source is None:
                s.source = rec.source
            return
        moved = rec.at != s.updated_at or rec.status != s.status
        if moved:
            self._unindex(s)
        s.mark = mark
        s.status = rec.status
        s.updated_at = rec.at
        s.next_attempt_at = rec.next_at if rec.status == "pending" else None
        if rec.error is not None:
            s.last_error = rec.error
        elif rec.status == "delivered":
            s.last_error = None
        if rec.source is not None:
            s.source = rec.source
        if moved:
            self._index_add(s)
            self._recency.move_to_end(s.delivery_id)

    def _create(self, rec: AttemptRecord) -> None:
        s = DeliverySummary(
            delivery_id=rec.delivery_id, activity_id=rec.activity_id, hub_id=rec.hub_id,
            integration_id=rec.destination_id, conversation_id=rec.conversation_id,
            status=rec.status, attempts=max(rec.attempt, 0), last_status=rec.code,
            last_error=rec.error if rec.status != "delivered" else None,
            created_at=rec.at, updated_at=rec.at,
            next_attempt_at=rec.next_at if rec.status == "pending" else None,
            source=rec.source, history=[_entry(rec)],
            mark=(rec.at, rec.attempt, _RANK[rec.status]),
            code_at=rec.at if rec.code is not None else -1,
            counted=int(rec.attempt > 0),
        )
        self._by_id[s.delivery_id] = s
        self._recency[s.delivery_id] = None
        self._index_add(s)
        while len(self._by_id) > self.max_entries:
            oldest, _ = self._recency.popitem(last=False)
            self._unindex(self._by_id.pop(oldest))

    def _index_add(self, s: DeliverySummary) -> None:
        key = s.key
        for name in ((s.integration_id, None), (s.integration_id, s.status)):
            keys = self._index.setdefault(name, [])
            # Records mostly arrive in time order: appending is the common case.
            if not keys or keys[-1] < key:
                keys.append(key)
            else:
                insort(keys, key)

    def _unindex(self, s: DeliverySummary) -> None:
        key = s.key
        for name in ((s.integration_id, None), (s.integration_id, s.status)):
            keys = self._index.get(name)
            if keys is None:
                continue
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                del keys[i]
            if not keys:
                del self._index[name]

    def query(self, integration_id: str, status: DeliveryStatus | None = None,
              since: int | None = None, limit: int = PAGE_DEFAULT, cursor: str | None = None
              ) -> tuple[list[DeliverySummary], str | None]:
        """One page of an integration's deliveries, newest updated first, and the cursor of
        the next page (None when this is the last). `since` keeps updatedAt ≥ since."""
        limit = max(1, min(limit, PAGE_MAX))
        keys = self._index.get((integration_id, status), [])
        hi = bisect_left(keys, decode_cursor(cursor)) if cursor is not None else len(keys)
        lo = bisect_left(keys, (since, "")) if since is not None else 0
        start = max(lo, hi - limit)
        page = keys[start:hi]
        page.reverse()
        items = [self._by_id[d] for _, d in page]
        more = start > lo and bool(page)
        return items, (encode_cursor(page[-1]) if more else None)

    def newest(self, integration_id: str, status: DeliveryStatus | None = None,
               since: int | None = None) -> Iterator[DeliverySummary]:
        """Every matching delivery, newest first (consume it before the log changes)."""
        keys = self._index.get((integration_id, status), [])
        lo = bisect_left(keys, (since, "")) if since is not None else 0
        for i in range(len(keys) - 1, lo - 1, -1):
            yield self._by_id[keys[i][1]]
