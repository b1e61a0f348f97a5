"""Messenger (Meta Graph API) outbound: Send API bodies and Graph's answers.

The Send API is ``POST /{version}/me/messages?access_token=PAGE_TOKEN`` with a JSON body
naming the recipient's page-scoped id (PSID); `send_bodies` builds those bodies within
Messenger's limits, `classify_send` says what an answer means, and `graph_url`,
`appsecret_proof` and `graph_error_message` serve every Graph call the plugin makes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec
from msgspec import Struct

from switchboard import jsonsafe
from switchboard.model import (
    Button,
    Card,
    CardMessage,
    CarouselMessage,
    FileMessage,
    ImageMessage,
    Message,
    TextMessage,
)
from switchboard.outbound import Attempt
from switchboard.retry import Outcome

__all__ = [
    "GraphError",
    "appsecret_proof",
    "classify_send",
    "graph_error",
    "graph_error_message",
    "graph_url",
    "send_bodies",
    "split_text",
]

# Send API limits (Messenger Platform reference).
TEXT_LIMIT = 2000
QUICK_REPLIES_MAX = 13
QUICK_REPLY_TITLE_MAX = 20
BUTTON_TITLE_MAX = 20
BUTTONS_MAX = 3
ELEMENTS_MAX = 10
ELEMENT_TITLE_MAX = 80
ELEMENT_SUBTITLE_MAX = 80
PAYLOAD_MAX = 1000
METADATA_MAX = 1000

# Graph error codes that mean "later": API/app/user rate limits, Page rate limit,
# unknown/temporary errors and the Send API's "temporary send message failure".
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
TRANSIENT_CODES = frozenset({1, 2, 1200})


def _fit(text: str, limit: int) -> int:
    """How many leading code points of `text` fit in `limit` UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split `text` into parts Messenger accepts (at most `limit` UTF-16 units each),
    at a line break or space where one is near the end of a part."""
    parts: list[str] = []
    rest = text
    while True:
        cut = _fit(rest, limit)
        if cut >= len(rest):
            break
        window = rest[:cut]
        brk = max(window.rfind("\n"), window.rfind(" "))
        if brk >= cut // 2:
            cut = brk + 1
        part = rest[:cut].rstrip()
        if part:
            parts.append(part)
            rest = rest[cut:].lstrip()
        else:
            rest = rest[cut:]
    if rest.strip() or not parts:
        parts.append(rest)
    return parts


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _button(b: Button) -> dict[str, Any]:
    title = _clip(b.title, BUTTON_TITLE_MAX)
    if b.type == "url" and b.url:
        return {"type": "web_url", "url": b.url, "title": title}
    return {"type": "postback", "title": title,
            "payload": _clip(b.payload or b.title, PAYLOAD_MAX)}


def _element(card: Card | CardMessage) -> dict[str, Any] | None:
    """A generic template element, or None when the card has only a title (Messenger
    needs a subtitle, image or button besides it)."""
    element: dict[str, Any] = {"title": _clip(card.title, ELEMENT_TITLE_MAX)}
    if card.subtitle:
        element["subtitle"] = _clip(card.subtitle, ELEMENT_SUBTITLE_MAX)
    if card.image_url:
        element["image_url"] = card.image_url
    if card.buttons:
        element["buttons"] = [_button(b) for b in card.buttons[:BUTTONS_MAX]]
    return element if len(element) > 1 else None


def _card_text(card: Card | CardMessage) -> str:
    lines = [card.title]
    if card.subtitle:
        lines.append(card.subtitle)
    if card.image_url:
        lines.append(card.image_url)
    for b in card.buttons:
        lines.append(f"- {b.title}: {b.url}" if b.type == "url" and b.url else f"- {b.title}")
    return "\n".join(lines)


def _template(elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"attachment": {"type": "template", "payload": {
        "template_type": "generic", "elements": elements}}}


def _media(kind: str, url: str) -> dict[str, Any]:
    return {"attachment": {"type": kind, "payload": {"url": url, "is_reusable": True}}}


def _file_kind(mime: str | None) -> str:
    major = (mime or "").split("/", 1)[0].lower()
    return major if major in ("image", "video", "audio") else "file"


def _texts(text: str) -> list[dict[str, Any]]:
    return [{"text": part} for part in split_text(text) if part.strip()]


def send_bodies(message: Message, psid: str, *, metadata: str | None = None
                ) -> list[dict[str, Any]]:
    """The Send API request bodies that deliver `message` to `psid`, in order.

    Usually one; a text over Messenger's 2000 characters becomes several (split at word
    boundaries), an image with a caption is the image then the caption, and a card or
    carousel Messenger cannot show as a template becomes its readable text.
    """
    messages: list[dict[str, Any]]
    if isinstance(message, TextMessage):
        messages = _texts(message.text)
        if message.quick_replies and messages:
            messages[-1]["quick_replies"] = [
                {"content_type": "text", "title": _clip(q.title, QUICK_REPLY_TITLE_MAX),
                 "payload": _clip(q.payload or q.title, PAYLOAD_MAX)}
                for q in message.quick_replies[:QUICK_REPLIES_MAX]
            ]
    elif isinstance(message, ImageMessage):
        messages = [_media("image", message.url)]
        if message.caption:
            messages += _texts(message.caption)
    elif isinstance(message, FileMessage):
        messages = [_media(_file_kind(message.mime_type), message.url)]
    elif isinstance(message, CardMessage):
        element = _element(message)
        messages = [_template([element])] if element else _texts(_card_text(message))
    else:
        assert isinstance(message, CarouselMessage)
        elements = [_element(c) for c in message.cards[:ELEMENTS_MAX]]
        if all(e is not None for e in elements):
            messages = [_template([e for e in elements if e is not None])]
        else:
            messages = _texts("\n\n".join(_card_text(c) for c in message.cards))
    if metadata:
        for m in messages:
            m["metadata"] = metadata[:METADATA_MAX]
    return [{"recipient": {"id": psid}, "messaging_type": "RESPONSE", "message": m}
            for m in messages]


# ---- Graph answers ---------------------------------------------------------------------------


def appsecret_proof(secret: str, access_token: str) -> str:
    """Graph's ``appsecret_proof``: hex HMAC-SHA256 of the token keyed by the app secret."""
    return hmac.new(secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


class GraphError(Struct, frozen=True):
    """Graph's error object: ``{"error": {"message", "type", "code", "error_subcode"}}``."""

    message: str = ""
    type: str = ""
    code: int = 0
    error_subcode: int | None = None


class _ErrorBody(Struct):
    error: GraphError | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)


def graph_error(body: bytes) -> GraphError | None:
    """The error object of a Graph answer, if it carries one."""
    if jsonsafe.depth_exceeds(body):
        return None
    try:
        return _error_decoder.decode(body).error
    except msgspec.DecodeError:
        return None


def graph_error_message(status: int, body: bytes) -> str:
    """A Graph failure as one line for an API caller (Graph's own message if it gave one)."""
    err = graph_error(body)
    if err is not None and err.message:
        return err.message[:500]
    return f"the Graph API answered HTTP {status}"


def graph_url(base: str, version: str, path: str) -> str:
    return f"{base.rstrip('/')}/{version.strip('/')}/{path.lstrip('/')}"


def classify_send(status: int, body: bytes, retry_after: float | None = None) -> Attempt:
    """What a Send API answer means: 2xx sent; HTTP 429/5xx and Graph's rate-limit and
    temporary codes retried; anything else (bad recipient, user unavailable, revoked
    token, outside the 24-hour window) a permanent failure."""
    if 200 <= status < 300:
        return Attempt(outcome=Outcome.DELIVERED, status=status, reason="sent")
    err = graph_error(body)
    code = err.code if err is not None else 0
    if err is not None and err.code:
        reason = f"graph_{err.code}" + (f"_{err.error_subcode}" if err.error_subcode else "")
    else:
        reason = f"http_{status}"
    retry = (status in (408, 425, 429) or status >= 500 or code in RATE_LIMIT_CODES
             or code in TRANSIENT_CODES)
    return Attempt(outcome=Outcome.RETRY if retry else Outcome.PERMANENT, status=status,
                   retry_after=retry_after, reason=reason)
