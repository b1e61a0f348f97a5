"""Writing to Syncro at most once: its POSTs are not idempotent (one POST, one record).

Every record the hub writes (a ticket's first comment, a comment) carries a marker, a
short token derived from what the hub is writing (the activity or delivery id), at the
end of its body: ``[sb:3f9c0e21a7b4d5c6]``. A POST that failed ambiguously (a timeout, a
dropped connection, a 5xx: Syncro may have written it) is never simply sent again: the
client first looks for a record carrying the marker, and only when none exists is the
POST repeated. A refused POST (4xx) or one that never left (refused connection, 429) is
not ambiguous. Pure decisions; the client in ``services/channels/syncro_client.py``
does the I/O.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from msgspec import Struct

__all__ = [
    "Decision",
    "PostResult",
    "PostState",
    "classify",
    "decide",
    "find_marked",
    "mark",
    "marker",
    "token_for",
]

_TOKEN_HEX = 16


def token_for(key: str) -> str:
    """The short hub token for a write identified by `key` (stable everywhere)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                           digest_size=_TOKEN_HEX // 2).hexdigest()


def marker(token: str) -> str:
    return f"[sb:{token}]"


def mark(text: str, token: str) -> str:
    """`text` with the marker at its end (once)."""
    tag = marker(token)
    if text.endswith(tag):
        return text
    return f"{text}\n\n{tag}" if text else tag


def _carries(value: Any, tag: str) -> bool:
    return isinstance(value, str) and tag in value


def find_marked(records: Iterable[Mapping[str, Any]], token: str,
                fields: tuple[str, ...] = ("body", "subject")) -> Mapping[str, Any] | None:
    """The first record one of whose `fields` carries the marker; for tickets, also a
    ticket one of whose ``comments`` does."""
    tag = marker(token)
    for record in records:
        if any(_carries(record.get(f), tag) for f in fields):
            return record
        comments = record.get("comments")
        if isinstance(comments, list) and any(
                isinstance(c, Mapping) and any(_carries(c.get(f), tag) for f in fields)
                for c in comments):
            return record
    return None


class PostResult(enum.Enum):
    """What one POST came to."""

    CREATED = "created"  # 2xx: the record exists
    AMBIGUOUS = "ambiguous"  # timeout, dropped connection, 5xx: it may exist
    NOT_SENT = "not_sent"  # refused connection, 429: it does not exist
    REFUSED = "refused"  # another 4xx: Syncro will not take it


def classify(status: int | None, *, sent: bool) -> PostResult:
    """A POST's result from its HTTP status (None: no answer; `sent`: the request may
    have reached Syncro, as after a timeout or a reset, not a refused connection)."""
    if status is None:
        return PostResult.AMBIGUOUS if sent else PostResult.NOT_SENT
    if 200 <= status < 300:
        return PostResult.CREATED
    if status == 429:
        return PostResult.NOT_SENT
    if status >= 500:
        return PostResult.AMBIGUOUS
    return PostResult.REFUSED


class Decision(enum.Enum):
    POST = "post"  # write it (nothing written yet, or proven not written)
    LOOK = "look"  # an earlier POST may have written it: look for the marker first
    DONE = "done"  # it exists: written now, or found
    FAIL = "fail"  # refused, or out of tries


class PostState(Struct):
    """Where one idempotent write stands."""

    max_posts: int = 3
    posts: int = 0
    last: PostResult | None = None
    # After an ambiguous POST: None = not looked yet, else whether the marker was found.
    found: bool | None = None


def decide(state: PostState) -> Decision:
    """The next step of an idempotent write."""
    if state.last is PostResult.CREATED or state.found:
        return Decision.DONE
    if state.last is PostResult.REFUSED:
        return Decision.FAIL
    if state.last is PostResult.AMBIGUOUS and state.found is None:
        return Decision.LOOK
    return Decision.POST if state.posts < state.max_posts else Decision.FAIL


def after_post(state: PostState, result: PostResult) -> PostState:
    return PostState(max_posts=state.max_posts, posts=state.posts + 1, last=result, found=None)


def after_look(state: PostState, found: bool) -> PostState:
    return PostState(max_posts=state.max_posts, posts=state.posts, last=state.last,
                     found=found)
