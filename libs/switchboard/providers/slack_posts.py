"""Slack outbound, ``chat.postMessage``: Block Kit and fallback text for hub messages, the
request bodies that open a conversation's thread and post in it, and what Slack's answer
means. Slack answers HTTP 200 with ``{"ok": false, "error": "..."}`` for most failures, so
the body, not only the status, decides whether a send is retried, failed for good or done.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.model import (
    Activity,
    Button,
    CardMessage,
    CarouselMessage,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
)
from switchboard.retry import Outcome

__all__ = [
    "PERMANENT_ERRORS",
    "RETRY_ERRORS",
    "PostResult",
    "blocks_for",
    "fallback_text",
    "parent_request",
    "parse_post_response",
    "thread_request",
    "to_mrkdwn",
]

DEFAULT_CHANNEL = "general"

# Slack's limits: a section's text is at most 3000 characters, a message at most 50 blocks.
SECTION_CHARS = 3000
MAX_BLOCKS = 50
FALLBACK_CHARS = 4000

# `{"ok": false, "error": ...}` codes worth another attempt; the rest never succeed.
RETRY_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org",
})
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "token_expired", "no_permission", "missing_scope",
    "msg_too_long", "no_text", "invalid_blocks", "restricted_action", "thread_not_found",
})


def to_mrkdwn(text: str) -> str:
    """Text shown literally in Slack: only ``& < >`` are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    safe_url = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    return f"<{safe_url}|{to_mrkdwn(label).replace('|', '¦')}>"


def _chunks(escaped: str, size: int = SECTION_CHARS) -> list[str]:
    """Split mrkdwn into pieces of at most `size`, never inside an ``&amp;``-style entity."""
    out: list[str] = []
    rest = escaped
    while len(rest) > size:
        cut = size
        amp = rest.rfind("&", cut - 5, cut)
        if amp != -1 and ";" not in rest[amp:cut]:
            cut = amp
        out.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        out.append(rest)
    return out


def _sections(mrkdwn: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in _chunks(mrkdwn)]


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:SECTION_CHARS]}]}


def _card_lines(title: str, subtitle: str | None, image_url: str | None,
                buttons: list[Button]) -> str:
    lines = [f"*{to_mrkdwn(title)}*"]
    if subtitle:
        lines.append(to_mrkdwn(subtitle))
    if image_url:
        lines.append(_link(image_url, "image"))
    for b in buttons:
        if b.type == "url" and b.url:
            lines.append("• " + _link(b.url, b.title))
        else:
            lines.append("• " + to_mrkdwn(b.title))
    return "\n".join(lines)


def blocks_for(message: Message) -> list[dict[str, Any]]:
    """Block Kit for a hub message. Media are links (Slack previews what it can fetch;
    an image block whose URL Slack cannot fetch would fail the whole post)."""
    blocks: list[dict[str, Any]]
    if isinstance(message, TextMessage):
        blocks = _sections(to_mrkdwn(message.text)) if message.text.strip() else []
        if message.quick_replies:
            choices = " · ".join(to_mrkdwn(q.title) for q in message.quick_replies)
            blocks.append(_context(f"Quick replies: {choices}"))
    elif isinstance(message, ImageMessage):
        blocks = _sections(":frame_with_picture: " + _link(message.url,
                                                           message.caption or "Image"))
    elif isinstance(message, FileMessage):
        label = message.name or "File"
        kind = f" ({to_mrkdwn(message.mime_type)})" if message.mime_type else ""
        blocks = _sections(":paperclip: " + _link(message.url, label) + kind)
    elif isinstance(message, CardMessage):
        blocks = _sections(_card_lines(message.title, message.subtitle, message.image_url,
                                       message.buttons))
    else:
        assert isinstance(message, CarouselMessage)
        blocks = []
        for i, card in enumerate(message.cards):
            if i:
                blocks.append({"type": "divider"})
            blocks.extend(_sections(_card_lines(card.title, card.subtitle, card.image_url,
                                                card.buttons)))
    return blocks


def fallback_text(message: Message) -> str:
    """A plain one-line form of `message` (notifications, screen readers, old clients)."""
    if isinstance(message, TextMessage):
        text = message.text
        if message.quick_replies:
            text += " [" + " | ".join(q.title for q in message.quick_replies) + "]"
    elif isinstance(message, ImageMessage):
        text = f"Image: {message.caption + ' ' if message.caption else ''}{message.url}"
    elif isinstance(message, FileMessage):
        text = f"File: {message.name + ' ' if message.name else ''}{message.url}"
    elif isinstance(message, CardMessage):
        text = f"Card: {message.title}" + (f" — {message.subtitle}" if message.subtitle else "")
    else:
        assert isinstance(message, CarouselMessage)
        text = "Cards: " + ", ".join(c.title for c in message.cards)
    return to_mrkdwn(text)[:FALLBACK_CHARS]


def _who(sender: Sender) -> str:
    if sender.name and sender.name != sender.id:
        return f"*{to_mrkdwn(sender.name)}* ({to_mrkdwn(sender.id)})"
    return f"*{to_mrkdwn(sender.id)}*"


def _role(activity: Activity) -> str:
    return activity.type.split(":", 1)[1] if ":" in activity.type else activity.type


def _body(activity: Activity) -> tuple[list[dict[str, Any]], str]:
    assert activity.message is not None
    return blocks_for(activity.message), fallback_text(activity.message)


def parent_request(
    channel: str,
    activity: Activity,
    *,
    source_channel: str,
    source_name: str | None,
) -> dict[str, Any]:
    """The message that opens a conversation's thread in `channel`: who wrote, through
    which channel (integration), and the first message itself."""
    blocks, text = _body(activity)
    where = to_mrkdwn(source_channel) + (f" · _{to_mrkdwn(source_name)}_" if source_name
                                         else "")
    header = f"{_who(activity.sender)} · {where}"
    if _role(activity) != "customer":
        header += f" · {to_mrkdwn(_role(activity))}"
    context = {"type": "context", "elements": [
        {"type": "mrkdwn", "text": header[:SECTION_CHARS]},
        {"type": "mrkdwn", "text": f"conversation `{to_mrkdwn(activity.conversation_id)}`"},
    ]}
    plain_who = activity.sender.name or activity.sender.id
    return {
        "channel": channel,
        "text": to_mrkdwn(f"{plain_who} via {source_channel}: ")[:200] + text,
        "blocks": [context, *blocks][:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": True,
    }


def thread_request(channel: str, thread_ts: str, activity: Activity) -> dict[str, Any]:
    """A later message of the conversation, posted in its thread."""
    blocks, text = _body(activity)
    if _role(activity) != "customer":
        who = activity.sender.name or activity.sender.id
        blocks = [_context(f"*{to_mrkdwn(who)}* · {to_mrkdwn(_role(activity))}"), *blocks]
    return {
        "channel": channel,
        "thread_ts": thread_ts,
        "text": text,
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": True,
    }


class PostResult(Struct, frozen=True, kw_only=True):
    """What one ``chat.postMessage`` call came to."""

    outcome: Outcome
    reason: str
    status: int
    retry_after: float | None = None
    channel: str | None = None
    ts: str | None = None


class _PostAnswer(Struct):
    ok: bool = False
    error: str | None = None
    channel: str | None = None
    ts: str | None = None


_post_decoder = msgspec.json.Decoder(_PostAnswer)


def _error_outcome(error: str) -> Outcome:
    if error in RETRY_ERRORS:
        return Outcome.RETRY
    # Unknown codes are treated as permanent too: Slack documents its transient
    # failures (ratelimited, internal_error, …), everything else is a request problem.
    return Outcome.PERMANENT


def parse_post_response(status: int, body: bytes, retry_after: float | None) -> PostResult:
    """Classify a Web API answer. 429 and 5xx retry (honouring Retry-After); a 200 with
    ``ok: false`` retries for Slack's transient errors and fails for good otherwise."""
    if status == 429 or status >= 500 or status in (408, 425):
        return PostResult(outcome=Outcome.RETRY, reason="slack_ratelimited" if status == 429
                          else f"http_{status}", status=status, retry_after=retry_after)
    if not 200 <= status < 300:
        return PostResult(outcome=Outcome.PERMANENT, reason=f"http_{status}", status=status)
    try:
        answer = jsonsafe.decode(body, _post_decoder)
    except BadRequest:
        return PostResult(outcome=Outcome.RETRY, reason="slack_invalid_response", status=status)
    if not answer.ok:
        error = (answer.error or "unknown_error")[:64]
        return PostResult(outcome=_error_outcome(error), reason=f"slack_{error}", status=status,
                          retry_after=retry_after)
    if not answer.ts or not answer.channel:
        return PostResult(outcome=Outcome.RETRY, reason="slack_invalid_response", status=status)
    return PostResult(outcome=Outcome.DELIVERED, reason="sent", status=status,
                      channel=answer.channel, ts=answer.ts)
