"""What `switchboard tail` makes of a record: one readable line, and whether it is wanted.

Pure: record bytes in, a `TailLine` (or None for a record that is not one of ours) out;
the CLI (switchboard.services.tail_cli) reads the topics and prints.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from msgspec import Struct

from switchboard.kafka import ACTIVITIES, DEAD, DELIVERIES
from switchboard.model import (
    Activity,
    CardMessage,
    CarouselMessage,
    DeadLetter,
    Delivery,
    FileMessage,
    ImageMessage,
    TextMessage,
)

# `switchboard tail <what>` → the topic it follows (unprefixed).
TOPICS: Final = {"activities": ACTIVITIES, "deliveries": DELIVERIES, "dead": DEAD}
PREVIEW_CHARS: Final = 60

_activity = msgspec.json.Decoder(Activity)
_delivery = msgspec.json.Decoder(Delivery)
_dead = msgspec.json.Decoder(DeadLetter)


class TailLine(Struct, frozen=True, kw_only=True):
    """One record as `tail` shows it."""

    at_ms: int
    hub_id: str
    # The integration it came from (activities) or goes to (deliveries, dead letters).
    integration_id: str
    what: str  # the activity type, or `dead:<reason>` with the attempts
    ident: str  # activity id, or delivery id (the receiver's webhook-id)
    preview: str
    outbound: bool = False  # integration_id is the destination


def printable(text: str) -> str:
    """`text` on one line with no control characters: a customer's message must not be
    able to move the cursor or recolour the operator's terminal."""
    return "".join(
        " " if ch in "\r\n\t" else (ch if unicodedata.category(ch)[0] != "C" else "?")
        for ch in text)


def _clip(text: str, width: int = PREVIEW_CHARS) -> str:
    text = printable(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def preview(activity: Activity) -> str:
    """A short, one-line summary of what an activity says."""
    m = activity.message
    if isinstance(m, TextMessage):
        return json.dumps(_clip(m.text), ensure_ascii=False)
    if isinstance(m, ImageMessage):
        return _clip(f"[image] {m.caption or m.url}")
    if isinstance(m, FileMessage):
        return _clip(f"[file] {m.name or m.url}")
    if isinstance(m, CardMessage):
        return _clip(f"[card] {m.title}")
    if isinstance(m, CarouselMessage):
        return f"[carousel of {len(m.cards)}]"
    if activity.event is not None:
        e = activity.event
        data = json.dumps(e.data, ensure_ascii=False, separators=(",", ":")) if e.data else ""
        return _clip(" ".join(p for p in (e.ref and f"ref={e.ref}", data) if p))
    return ""


def describe(what: str, value: bytes | None) -> TailLine | None:
    """The line of one record of `what` (a key of TOPICS); None if it does not decode as
    that topic's record (a tombstone, a marker, another program's bytes)."""
    if not value:
        return None
    try:
        if what == "activities":
            a = _activity.decode(value)
            return TailLine(at_ms=a.timestamp, hub_id=a.hub_id, integration_id=a.integration_id,
                            what=a.type, ident=a.activity_id, preview=preview(a))
        if what == "deliveries":
            d = _delivery.decode(value)
            return TailLine(at_ms=d.created_at, hub_id=d.hub_id,
                            integration_id=d.destination_id, what=d.activity.type,
                            ident=d.delivery_id, preview=preview(d.activity), outbound=True)
        if what == "dead":
            x = _dead.decode(value)
            d = x.delivery
            last = f", last {x.last_status}" if x.last_status is not None else ""
            return TailLine(at_ms=x.dead_at or d.created_at, hub_id=d.hub_id,
                            integration_id=d.destination_id,
                            what=f"dead:{x.reason} ({x.attempts} attempts{last})",
                            ident=d.delivery_id, preview=preview(d.activity), outbound=True)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    raise ValueError(f"tail follows {', '.join(TOPICS)}, not {what!r}")


def wanted(line: TailLine, hubs: Collection[str] | None,
           integrations: Collection[str] | None) -> bool:
    """Whether `line` passes the filters (None: no filter)."""
    return ((hubs is None or line.hub_id in hubs)
            and (integrations is None or line.integration_id in integrations))


def when(ms: int) -> str:
    """UTC, to the millisecond: ``2025-05-02 10:14:07.123``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_line(line: TailLine, hub_names: Mapping[str, str] | None = None,
                integration_names: Mapping[str, str] | None = None, note: str = "") -> str:
    """``time  hub  [→ ]integration  type  id  preview``; names where they are known
    (printable only: a name is tenant input too), ids otherwise."""
    hub = printable((hub_names or {}).get(line.hub_id, line.hub_id))
    integration = printable((integration_names or {}).get(line.integration_id,
                                                          line.integration_id))
    parts = [when(line.at_ms), hub, ("→ " if line.outbound else "") + integration, line.what,
             line.ident]
    if line.preview:
        parts.append(line.preview)
    if note:
        parts.append(f"[{note}]")
    return "  ".join(parts)


def as_json(value: bytes) -> str:
    """A record's value as one line of JSON (ASCII only, so nothing in it reaches the
    terminal as a control sequence); a value that is not JSON as a JSON string."""
    try:
        decoded: Any = msgspec.json.decode(value)
    except msgspec.DecodeError:
        decoded = value.decode("utf-8", "replace")
    return json.dumps(decoded, separators=(",", ":"))
