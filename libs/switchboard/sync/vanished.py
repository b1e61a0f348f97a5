"""Records deleted for good on a side that keeps no tombstone (Syncro), found by checking
the ids the pair index holds for that side. Pure: the paired ids, what the side listed
and answered in; deletions out. The I/O is `switchboard.services.sync_vanished`.

- **What is checked:** the side's ids of the kind's pairs, except tombstones (a record
  already known deleted there).
- **How:** a sweep of the side's listing (every record's id), then one GET per paired id
  the sweep did not list. The sweep goes on while the pages left cost less than a GET of
  each id still unlisted (`keep_sweeping`), so a run spends at most
  ``min(pages, paired + 1)`` requests plus one per deleted record.
- **What counts as deleted:** a paired id the sweep did not list *and* whose GET answered
  404. A listing that shrank while it was read (page N moving under a delete) leaves a
  live record unlisted, so absence alone is never taken as a delete; a 5xx or a 429 is
  no answer at all (`Answer.UNKNOWN`), and an id without a verdict is checked again.
- **The deletion** is the side's record with ``deleted: true``, added to that side's
  changes, so the planner treats it as any other delete: it propagates only where the
  direction and ``portalDeletes`` / ``mailboxDeletes`` allow, and the pair is dropped
  (or kept as a tombstone where it does not propagate). Its time is the last version
  the sync saw (`seen_at`): the delete happened later, when is unknown, so an edit made
  on the other side since that version wins over it rather than being lost.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from typing import Any, cast

from msgspec import Struct

from switchboard.sync.options import Side
from switchboard.sync.pairs import Pair
from switchboard.sync.records import KINDS, Kind, Record

__all__ = ["CHECKED_AT", "Answer", "Verdict", "due", "keep_sweeping", "paired_ids",
           "vanished"]

# The key of the check's time (epoch ms, as text) in the side's links kept with the
# module's watermark (`ops.Watermark`).
CHECKED_AT = "pairsCheckedAt"


class Answer(enum.Enum):
    """What a GET of one paired id said."""

    LIVE = "live"  # the record is there
    GONE = "gone"  # 404: deleted for good
    UNKNOWN = "unknown"  # no verdict (5xx, no answer): never a delete


class Verdict(Struct, frozen=True, kw_only=True):
    deleted: list[Record]
    # Every paired id has a verdict (listed, live or gone): the check is done until the
    # next one is due; otherwise the next run checks again.
    complete: bool


def due(links: Mapping[str, str], now_ms: int, every_s: float, initial: bool) -> bool:
    """Whether a run checks the paired ids: an initial run always; another when the last
    complete check (in `links`) is `every_s` old, or there was none (0: every run)."""
    if initial or every_s <= 0:
        return True
    last = links.get(CHECKED_AT, "")
    if not last.isdigit():
        return True
    return now_ms - int(last) >= every_s * 1000 or int(last) > now_ms


def paired_ids(pairs: Iterable[Pair], kind: Kind, side: Side) -> list[str]:
    """`side`'s ids of the pairs of `kind`, tombstones left out."""
    return sorted({p.side(side).id for p in pairs
                   if p.kind == kind and not p.side(side).deleted})


def keep_sweeping(unlisted: int, pages_left: int) -> bool:
    """Whether to read the listing's next page rather than GET each unlisted paired id:
    a page costs one request of the shared budget and may list any number of them."""
    return 0 < pages_left < unlisted


def vanished(pairs: Iterable[Pair], kind: Kind, side: Side, listed: Collection[str],
             answers: Mapping[str, Answer]) -> Verdict:
    """The deletions the check found: each paired id not `listed` that answered GONE, as
    `side`'s record deleted at the last version seen (see the module's docstring)."""
    deleted: list[Record] = []
    complete = True
    for pair in sorted(pairs, key=lambda p: p.key):
        mine = pair.side(side)
        if pair.kind != kind or mine.deleted or mine.id in listed:
            continue
        answer = answers.get(mine.id, Answer.UNKNOWN)
        if answer is Answer.GONE:
            cls = cast(Any, KINDS[kind])
            deleted.append(cls(id=mine.id, modified_at=mine.seen_at, deleted=True))
        elif answer is Answer.UNKNOWN:
            complete = False
    return Verdict(deleted=deleted, complete=complete)
