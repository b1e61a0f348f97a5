"""Syncro tickets ⇄ conversations: the decisions, as plain functions. Pure, no I/O.

A customer's conversation (SMS, Messenger, WebChat, Direct) is one Syncro ticket: the
first message finds or creates the Syncro customer and opens the ticket with the message
as its first comment, each later message is a comment on it. A technician's public
comment on the ticket comes back as a ``message:agent`` activity of that conversation;
the ticket resolved closes the conversation (``event:conversation_closed``).

Loops are cut by the marker every comment the hub writes ends with (``[sb:<16 hex>]``,
`syncro_idempotency`): a comment carrying one is the hub's own and never comes back.
Which comments were already relayed is a cursor, the highest comment id seen, kept on
the conversation: Syncro numbers comments in order, and each ticket webhook carries the
whole ticket, so a webhook arriving late (or twice) has nothing above the cursor.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any

from msgspec import Struct

from switchboard.conversations import CONVERSATION_CLOSED
from switchboard.ids import activity_id
from switchboard.model import (
    Activity,
    CardMessage,
    CarouselMessage,
    Event,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
)

__all__ = [
    "Comment",
    "CustomerLookup",
    "Step",
    "agent_activities",
    "closed_activity",
    "comment_body",
    "comment_subject",
    "cursor_after",
    "customer_lookup",
    "hub_ticket",
    "is_hub_text",
    "is_resolution",
    "latest_comment_id",
    "match_customer",
    "needs_reopening",
    "new_customer",
    "new_technician_comments",
    "parse_cursor",
    "pick_reopen",
    "plan_customer_message",
    "search_params",
    "ticket_fields",
    "ticket_subject",
]

SUBJECT_MAX = 80
_HUB_MARK = re.compile(r"\[sb:[0-9a-f]{16}\]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RESOLVED = ("resolved", "closed")
# How the channel a message came through is named in a comment's subject.
_CHANNEL_LABELS = {"TwilioSMS": "SMS", "Messenger": "Messenger", "WebChat": "Web chat",
                   "Direct": "Message"}


# ---- a customer's message → Syncro ------------------------------------------------------


class Step(enum.Enum):
    SKIP = "skip"  # nothing to write (not a customer's message)
    OPEN = "open"  # the first message: find the customer, open (or reopen) a ticket
    COMMENT = "comment"  # a later message: a comment on the conversation's ticket


def plan_customer_message(activity: Activity, ticket_id: str | None) -> Step:
    """What a delivery to a Syncro integration does, given the conversation's ticket."""
    if activity.type != "message:customer" or activity.message is None:
        return Step.SKIP
    return Step.COMMENT if ticket_id else Step.OPEN


class CustomerLookup(Struct, frozen=True):
    """Who wrote, as far as the channel tells: how to find them among Syncro's customers."""

    phone: str | None = None
    email: str | None = None
    name: str | None = None


def customer_lookup(activity: Activity) -> CustomerLookup:
    """The phone (SMS: the sender is the number), e-mail (a sender id or ``email``
    metadata that is one) and name the channel gives for the message's sender."""
    sender = activity.sender
    phone = email = None
    if activity.channel_id == "TwilioSMS":
        phone = sender.id
    elif _EMAIL.match(sender.id):
        email = sender.id
    given = activity.metadata.get("email")
    if email is None and given and _EMAIL.match(given):
        email = given
    if phone is None and activity.metadata.get("phone"):
        phone = activity.metadata["phone"]
    name = (sender.name or "").strip() or None
    return CustomerLookup(phone=phone, email=email.casefold() if email else None, name=name)


def _digits(value: Any) -> str:
    return "".join(c for c in value if c.isdigit()) if isinstance(value, str) else ""


def _same_phone(a: str, b: str) -> bool:
    # Syncro keeps numbers as typed ("(416) 555-0100"): compare the last 10 digits.
    return len(a) >= 7 and len(b) >= 7 and a[-10:] == b[-10:]


def search_params(lookup: CustomerLookup) -> dict[str, str] | None:
    """The ``GET /customers`` filter that finds the customer (None: nothing to search by).

    Syncro's ``query`` searches names, e-mails and phone numbers; its ``email`` filter
    is exact."""
    if lookup.email:
        return {"email": lookup.email}
    if lookup.phone:
        digits = _digits(lookup.phone)
        return {"query": digits[-10:]} if digits else None
    if lookup.name:
        return {"query": lookup.name}
    return None


def _full_name(record: Mapping[str, Any]) -> str:
    parts = [record.get("firstname"), record.get("lastname")]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip()).casefold()


def match_customer(records: Iterable[Mapping[str, Any]], lookup: CustomerLookup
                   ) -> Mapping[str, Any] | None:
    """The first of `records` that is the customer: same phone (or mobile), same e-mail,
    else same full or business name (only when the channel gives nothing better)."""
    records = [r for r in records if not r.get("disabled")]
    if lookup.phone:
        want = _digits(lookup.phone)
        for r in records:
            if any(_same_phone(want, _digits(r.get(f))) for f in ("mobile", "phone")):
                return r
        return None
    if lookup.email:
        for r in records:
            email = r.get("email")
            if isinstance(email, str) and email.strip().casefold() == lookup.email:
                return r
        return None
    if lookup.name:
        want_name = lookup.name.casefold()
        for r in records:
            business = r.get("business_name")
            if _full_name(r) == want_name or (
                    isinstance(business, str) and business.strip().casefold() == want_name):
                return r
    return None


def new_customer(lookup: CustomerLookup, fallback: str, note: str) -> dict[str, Any]:
    """The body of ``POST /customers`` for someone Syncro does not know yet. Syncro wants
    a name: the sender's, else the phone, e-mail or `fallback` as the business name."""
    body: dict[str, Any] = {"notes": note}
    if lookup.name:
        first, _, last = lookup.name.partition(" ")
        body["firstname"] = first[:100]
        body["lastname"] = (last.strip() or "-")[:100]
    else:
        body["business_name"] = (lookup.phone or lookup.email or fallback)[:100]
    if lookup.phone:
        body["mobile"] = lookup.phone
        body["phone"] = lookup.phone
    if lookup.email:
        body["email"] = lookup.email
    return body


def comment_body(message: Message) -> str:
    """A message as the text of a ticket comment (attachments as their URLs)."""
    if isinstance(message, TextMessage):
        return message.text
    if isinstance(message, ImageMessage):
        return "\n".join(p for p in (message.caption, message.url) if p)
    if isinstance(message, FileMessage):
        return "\n".join(p for p in (message.name, message.url) if p)
    if isinstance(message, CardMessage):
        return "\n".join(p for p in (message.title, message.subtitle) if p)
    if isinstance(message, CarouselMessage):
        return "\n".join(card.title for card in message.cards)
    return ""


def ticket_subject(message: Message, sender: Sender) -> str:
    """The ticket's subject: the first line of the first message (at most 80
    characters), or what was sent when it has no text."""
    text = comment_body(message).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if isinstance(message, ImageMessage | FileMessage) and not (
            isinstance(message, ImageMessage) and message.caption):
        first = ""
    if not first:
        kind = type(message).__struct_config__.tag
        first = f"{str(kind).capitalize()} from {sender.name or sender.id}"
    if len(first) > SUBJECT_MAX:
        first = first[:SUBJECT_MAX - 1].rstrip() + "…"
    return first


def comment_subject(channel_id: str, sender: Sender) -> str:
    """A comment's subject (Syncro requires one): the channel and who wrote."""
    label = _CHANNEL_LABELS.get(channel_id, channel_id)
    return f"{label} from {sender.name or sender.id}"[:200]


def ticket_fields(customer_id: Any, subject: str, status: str | None,
                  problem_type: str | None) -> dict[str, Any]:
    """The body of ``POST /tickets`` (without its comment)."""
    fields: dict[str, Any] = {"customer_id": customer_id, "subject": subject}
    if status:
        fields["status"] = status
    if problem_type:
        fields["problem_type"] = problem_type
    return fields


def _status_resolved(ticket: Mapping[str, Any]) -> bool:
    status = ticket.get("status")
    return isinstance(status, str) and status.strip().casefold() in _RESOLVED


def _comments(ticket: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    comments = ticket.get("comments")
    if not isinstance(comments, list):
        return []
    return [c for c in comments if isinstance(c, Mapping)]


def is_hub_text(value: Any) -> bool:
    """Whether a comment's text carries the hub's marker (the hub wrote it)."""
    return isinstance(value, str) and _HUB_MARK.search(value) is not None


def _id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def parse_cursor(text: str | None) -> int:
    """A conversation's cursor (the last comment id relayed; 0 when none or unreadable)."""
    value = _id(text)
    return value if value is not None else 0


def latest_comment_id(ticket: Mapping[str, Any]) -> int:
    """The highest comment id on `ticket` (0: none): where relaying starts when the hub
    links a ticket to a conversation, so nothing written before comes back."""
    ids = [i for c in _comments(ticket) if (i := _id(c.get("id"))) is not None]
    return max(ids, default=0)


def pick_reopen(tickets: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """With ``reopen``: the customer's latest ticket the hub wrote on (a comment carries
    its marker), resolved or not."""
    best: Mapping[str, Any] | None = None
    best_id = -1
    for t in tickets:
        tid = _id(t.get("id"))
        if tid is None or tid <= best_id:
            continue
        if hub_ticket(t):
            best, best_id = t, tid
    return best


def hub_ticket(ticket: Mapping[str, Any]) -> bool:
    """Whether the hub wrote on `ticket` (one of its comments carries the marker): only
    such a ticket can belong to a conversation, so webhooks of others cost nothing."""
    return any(is_hub_text(c.get("body")) for c in _comments(ticket))


def needs_reopening(ticket: Mapping[str, Any]) -> bool:
    return _status_resolved(ticket)


# ---- Syncro → the conversation -----------------------------------------------------------


class Comment(Struct, frozen=True):
    """A technician's public comment, to be sent to the customer."""

    id: int
    body: str
    tech: str | None = None
    user_id: str | None = None


def new_technician_comments(ticket: Mapping[str, Any], cursor: int) -> list[Comment]:
    """The ticket's comments to relay, oldest first: public (not ``hidden``), not the
    hub's own (no marker), not empty, and newer than `cursor` (already relayed)."""
    out: list[Comment] = []
    for c in _comments(ticket):
        cid = _id(c.get("id"))
        if cid is None or cid <= cursor or c.get("hidden") is True:
            continue
        body = c.get("body")
        if not isinstance(body, str) or not body.strip() or is_hub_text(body) \
                or is_hub_text(c.get("subject")):
            continue
        tech = c.get("tech")
        user = c.get("user_id")
        out.append(Comment(id=cid, body=body.strip()[:16384],
                           tech=tech[:256] if isinstance(tech, str) and tech else None,
                           user_id=str(user)[:64] if _id(user) is not None else None))
    out.sort(key=lambda c: c.id)
    return out


def cursor_after(ticket: Mapping[str, Any], cursor: int) -> int:
    """The cursor once `ticket`'s webhook is handled: every comment in it was seen."""
    return max(cursor, latest_comment_id(ticket))


def agent_activities(comments: Iterable[Comment], *, hub_id: str, integration_id: str,
                     conversation_id: str, ticket_id: str, now_ms: int) -> list[Activity]:
    """One ``message:agent`` per comment, its id stable from the comment id (a webhook
    sent twice, or two webhooks carrying one comment, are one activity)."""
    return [Activity(
        activity_id=activity_id(integration_id, f"syncro-comment\x1f{ticket_id}\x1f{c.id}"),
        hub_id=hub_id,
        integration_id=integration_id,
        channel_id="Syncro",
        type="message:agent",
        conversation_id=conversation_id,
        sender=Sender(id=f"syncro-user:{c.user_id or c.tech or 'tech'}"[:256],
                      name=c.tech),
        timestamp=now_ms,
        message=TextMessage(text=c.body),
        metadata={"syncroTicketId": ticket_id, "syncroCommentId": str(c.id)},
    ) for c in comments]


def is_resolution(event_type: str | None, ticket: Mapping[str, Any]) -> bool:
    """Whether a ticket webhook says the ticket is resolved (its trigger, or its status)."""
    return event_type == "syncro:ticket.resolved" or _status_resolved(ticket)


def closed_activity(*, hub_id: str, integration_id: str, conversation_id: str,
                    opened_at: int, ticket: Mapping[str, Any], ticket_id: str,
                    now_ms: int) -> Activity:
    """``event:conversation_closed`` for a resolved ticket; its id is stable per ticket
    and conversation opening, so a resolution webhook sent twice closes once."""
    data: dict[str, Any] = {"reason": "syncro_ticket_resolved", "ticketId": ticket_id}
    number = ticket.get("number")
    if isinstance(number, int | str) and not isinstance(number, bool):
        data["ticketNumber"] = str(number)
    status = ticket.get("status")
    if isinstance(status, str):
        data["status"] = status[:100]
    return Activity(
        activity_id=activity_id(integration_id,
                                f"syncro-resolved\x1f{ticket_id}\x1f{opened_at}"),
        hub_id=hub_id,
        integration_id=integration_id,
        channel_id="Syncro",
        type=CONVERSATION_CLOSED,
        conversation_id=conversation_id,
        sender=Sender(id=f"syncro-ticket:{ticket_id}", name="Syncro"),
        timestamp=now_ms,
        event=Event(name=CONVERSATION_CLOSED.split(":", 1)[1], data=data),
        metadata={"syncroTicketId": ticket_id},
    )
