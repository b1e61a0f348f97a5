"""Review mode: a plan rendered as BrightSync's pre-sync report (what the run would
create, update, delete, match, and which conflicts it would resolve how), with counts
and a few samples, and nothing written. A profile in review plans as usual and shows
this instead of applying the plan.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from switchboard.sync.ops import Conflict, Create, Delete, Op, Plan, Update
from switchboard.sync.options import Side
from switchboard.sync.records import Kind, Value

__all__ = ["Report", "Sample", "SideCounts", "review"]

# The fields that name a record in a sample, first found wins.
_LABELS = ("email", "name", "title", "subject", "first_name", "last_name", "message_id")
_LABEL_CAP = 120


class SideCounts(Struct, kw_only=True, rename="camel"):
    portal: int = 0
    mailbox: int = 0


class Sample(Struct, kw_only=True, rename="camel", omit_defaults=True):
    action: Literal["create", "update", "delete"]
    side: Side
    # The record written (for a create: the other side's record it comes from).
    id: str
    label: str = ""
    fields: list[str] = []


class Report(Struct, kw_only=True, rename="camel"):
    kind: Kind
    would_create: SideCounts
    would_update: SideCounts
    would_delete: SideCounts
    would_match: int
    conflicts: int
    samples: list[Sample]
    conflict_samples: list[Conflict]


def _label(values: dict[str, Value]) -> str:
    for name in _LABELS:
        value = values.get(name)
        if isinstance(value, str) and value:
            return value[:_LABEL_CAP]
    return ""


def _sample(op: Op) -> Sample:
    if isinstance(op, Create):
        return Sample(action="create", side=op.side, id=op.source_id, label=_label(op.values),
                      fields=sorted(op.values))
    if isinstance(op, Update):
        return Sample(action="update", side=op.side, id=op.id, label=_label(op.values),
                      fields=sorted(op.values))
    return Sample(action="delete", side=op.side, id=op.id)


def review(plan: Plan, samples: int = 5) -> Report:
    """The pre-sync report of `plan`: counts per action and side, up to `samples`
    samples of each action and of the conflicts."""
    counts = {kind: SideCounts() for kind in (Create, Update, Delete)}
    shown: dict[tuple[type, Side], int] = {}
    out: list[Sample] = []
    for op in plan.ops:
        c = counts[type(op)]
        if op.side == "portal":
            c.portal += 1
        else:
            c.mailbox += 1
        n = shown.get((type(op), op.side), 0)
        if n < samples:
            out.append(_sample(op))
            shown[(type(op), op.side)] = n + 1
    return Report(kind=plan.kind, would_create=counts[Create], would_update=counts[Update],
                  would_delete=counts[Delete], would_match=len(plan.matched),
                  conflicts=len(plan.conflicts), samples=out,
                  conflict_samples=plan.conflicts[:samples])
