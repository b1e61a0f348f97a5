"""Messenger (Meta Graph API), the pure half: webhook checks and parsing, Send API bodies.

Inbound is app-level: Meta posts every subscribed Page's events to one URL, batched as
``entry[]`` (one per Page) of ``messaging[]`` events, signed with the app secret in
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``. The verify token
handshake (``hub.mode=subscribe``) proves the URL to Meta when the webhook is configured.

Outbound is the Send API: ``POST /{version}/me/messages?access_token=PAGE_TOKEN`` with a
JSON body naming the recipient's page-scoped id (PSID).

Nothing here does I/O; the plugin (`switchboard.services.channels.messenger`) wires these
functions to HTTP and Kafka.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from msgspec import Struct, field

from switchboard import jsonsafe
from switchboard.errors import Forbidden, Unauthorized
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import (
    Activity,
    Button,
    Card,
    CardMessage,
    CarouselMessage,
    ChannelId,
    Event,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
)
from switchboard.outbound import Attempt
from switchboard.retry import Outcome

__all__ = [
    "SIGNATURE_HEADER",
    "SUBSCRIBED_FIELDS",
    "GraphError",
    "InboundEvent",
    "Skipped",
    "appsecret_proof",
    "classify_send",
    "graph_error",
    "graph_error_message",
    "graph_url",
    "handshake",
    "page_ids",
    "parse_webhook",
    "send_bodies",
    "sign",
    "split_text",
    "to_activity",
    "verify_signature",
]

SIGNATURE_HEADER = "x-hub-signature-256"
# What the hub subscribes the app to on each Page it is given.
SUBSCRIBED_FIELDS = ("messages", "messaging_postbacks", "message_reads")

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

# A challenge is an int per Meta; anything much longer is not one of theirs.
_CHALLENGE_MAX = 256
# At most this many distinct app secrets are tried on one body (bounds the HMAC work).
MAX_CANDIDATE_SECRETS = 16
_URL = re.compile(r"^https?://")
_URL_MAX = 2048
_TEXT_MAX = 16384
_SENDER_MAX = 256


# ---- the verify-token handshake ---------------------------------------------------------


def handshake(params: Mapping[str, str], verify_token: str) -> str:
    """The ``hub.challenge`` to echo when Meta's subscription handshake names our token.

    Raises Forbidden otherwise (also when no verify token is configured: an empty token
    must not verify anything).
    """
    mode = params.get("hub.mode", "")
    given = params.get("hub.verify_token", "")
    challenge = params.get("hub.challenge", "")
    # surrogatepass: a lone surrogate in a query value is a mismatch, not a crash.
    ok = hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                             verify_token.encode("utf-8", "surrogatepass"))
    if (not verify_token or not ok or mode != "subscribe" or not challenge
            or len(challenge) > _CHALLENGE_MAX):
        raise Forbidden("invalid_verify_token", "the verify token does not match")
    return challenge


# ---- signatures ---------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for `body` under app secret `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(header: str | None, body: bytes, secrets: Sequence[str]) -> str:
    """Check ``X-Hub-Signature-256`` over the raw `body`; return the secret that signed it.

    Every candidate is compared (constant time each, and all of them every time) so the
    timing says nothing about which secret, if any, matched. Raises Unauthorized for a
    missing, malformed or non-matching signature (as the core ingress does).
    """
    if not header:
        raise Unauthorized("missing_signature", "X-Hub-Signature-256 is required")
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        raise Unauthorized("invalid_signature", "X-Hub-Signature-256 must be sha256=<hex>")
    given_bytes = given.strip().lower().encode("utf-8", "replace")
    matched: str | None = None
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given_bytes) and matched is None:
            matched = secret
    if matched is None:
        raise Unauthorized("invalid_signature", "X-Hub-Signature-256 does not match the body")
    return matched


def appsecret_proof(secret: str, access_token: str) -> str:
    """Graph's ``appsecret_proof``: hex HMAC-SHA256 of the token keyed by the app secret."""
    return hmac.new(secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


# ---- structure before verification ---------------------------------------------------------


class _ShapeEntry(Struct):
    id: str | int = ""


class _Shape(Struct):
    entry: list[_ShapeEntry] = field(default_factory=list)


_shape_decoder = msgspec.json.Decoder(_Shape)


def page_ids(body: bytes) -> list[str]:
    """The Page ids a webhook body names (``entry[].id``), read before it is verified.

    Only used to choose which app secrets may have signed it: nothing else of an
    unverified body is looked at. Unparseable (or too deeply nested) bodies name no pages.
    """
    if jsonsafe.depth_exceeds(body):
        return []
    try:
        shape = _shape_decoder.decode(body)
    except msgspec.DecodeError:
        return []
    seen: dict[str, None] = {}
    for entry in shape.entry:
        if entry.id != "":
            seen[str(entry.id)] = None
    return list(seen)


# ---- parsing a verified body ---------------------------------------------------------------


class _Party(Struct):
    id: str = ""


class _QuickReplyIn(Struct):
    payload: str | None = None


class _Coordinates(Struct):
    lat: float | None = None
    long: float | None = None


class _AttachmentPayload(Struct):
    url: str | None = None
    title: str | None = None
    sticker_id: int | None = None
    coordinates: _Coordinates | None = None


class _Attachment(Struct):
    type: str = ""
    payload: _AttachmentPayload | None = None
    # "fallback" attachments (shared links) carry these at the top level.
    url: str | None = None
    title: str | None = None


class _MessageIn(Struct):
    mid: str = ""
    text: str | None = None
    is_echo: bool = False
    quick_reply: _QuickReplyIn | None = None
    attachments: list[_Attachment] = field(default_factory=list)


class _Postback(Struct):
    payload: str | None = None
    title: str | None = None
    mid: str | None = None


class _Read(Struct):
    watermark: int = 0


class _Messaging(Struct):
    sender: _Party = field(default_factory=_Party)
    recipient: _Party = field(default_factory=_Party)
    timestamp: int = 0
    message: _MessageIn | None = None
    postback: _Postback | None = None
    read: _Read | None = None


class _Entry(Struct):
    id: str | int = ""
    messaging: list[msgspec.Raw] = field(default_factory=list)


class _Body(Struct):
    object: str = ""
    entry: list[_Entry] = field(default_factory=list)


_body_decoder = msgspec.json.Decoder(_Body)
_messaging_decoder = msgspec.json.Decoder(_Messaging)


class InboundEvent(Struct, frozen=True, kw_only=True):
    """One messaging event for one Page, normalized; becomes one Activity once routed.

    `provider_id` is derived from Meta's own ids (message ``mid``, postback ``mid`` or
    payload + timestamp, read watermark), so a redelivery maps to the same activity id.
    """

    page_id: str
    psid: str
    provider_id: str
    type: str
    message: Message | None = None
    event: Event | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Skipped(Struct, frozen=True):
    """An event that is acknowledged but not ingested, and why (echo, unsupported, …)."""

    page_id: str
    reason: str


def parse_webhook(body: bytes) -> tuple[list[InboundEvent], list[Skipped]]:
    """Split a verified webhook body into normalized events (batch order kept).

    A body that is not JSON of the expected shape is a BadRequest; a single event of an
    unknown or malformed kind is skipped, so one odd event never blocks its batch.
    """
    doc = jsonsafe.decode(body, _body_decoder, invalid="invalid_webhook")
    events: list[InboundEvent] = []
    skipped: list[Skipped] = []
    if doc.object != "page":
        return events, [Skipped("", f"object:{doc.object or 'missing'}")]
    for entry in doc.entry:
        entry_page = str(entry.id)
        for raw in entry.messaging:
            try:
                item = _messaging_decoder.decode(raw)
            except msgspec.DecodeError:
                skipped.append(Skipped(entry_page, "malformed"))
                continue
            page = entry_page or item.recipient.id
            out, why = _normalize(page, item)
            events.extend(out)
            if why:
                skipped.append(Skipped(page, why))
    return events, skipped


def _normalize(page: str, item: _Messaging) -> tuple[list[InboundEvent], str]:
    psid = item.sender.id
    if item.message is not None and item.message.is_echo:
        # Our own sends (and the Page's other outgoing messages) come back as echoes.
        return [], "echo"
    if not psid or len(psid) > _SENDER_MAX:
        return [], "no_sender"
    if item.message is not None:
        return _messages(page, psid, item.message)
    if item.postback is not None:
        pb = item.postback
        pid = (f"postback:{pb.mid}" if pb.mid
               else f"postback:{psid}:{item.timestamp}:{pb.payload or ''}")
        return [InboundEvent(
            page_id=page, psid=psid, provider_id=pid, type="event:postback",
            event=Event(name="postback", ref=None,
                        data={"payload": pb.payload, "title": pb.title}),
        )], ""
    if item.read is not None:
        mark = item.read.watermark
        return [InboundEvent(
            page_id=page, psid=psid, provider_id=f"read:{psid}:{mark}", type="event:seen",
            event=Event(name="seen", data={"watermark": mark}),
        )], ""
    return [], "unsupported"


def _messages(page: str, psid: str, msg: _MessageIn) -> tuple[list[InboundEvent], str]:
    if not msg.mid:
        return [], "no_mid"
    base = {"mid": msg.mid}
    out: list[InboundEvent] = []

    def add(suffix: str, message: Message, extra: dict[str, str] | None = None) -> None:
        out.append(InboundEvent(
            page_id=page, psid=psid, provider_id=f"mid:{msg.mid}{suffix}",
            type="message:customer", message=message, metadata={**base, **(extra or {})},
        ))

    if msg.text is not None and msg.text != "":
        extra = {}
        if msg.quick_reply is not None and msg.quick_reply.payload is not None:
            extra["quickReplyPayload"] = msg.quick_reply.payload
        add("", TextMessage(text=msg.text[:_TEXT_MAX]), extra)
    for i, att in enumerate(msg.attachments):
        converted = _attachment(att)
        if converted is not None:
            # The first part of a message keeps the bare mid; later parts are numbered.
            add("" if not out else f"#{i}", converted)
    if not out:
        return [], "unsupported_message"
    return out, ""


def _attachment(att: _Attachment) -> Message | None:
    payload = att.payload or _AttachmentPayload()
    url = payload.url or att.url
    kind = att.type
    if kind == "location" and payload.coordinates is not None:
        c = payload.coordinates
        return TextMessage(text=f"Location: {c.lat}, {c.long}")
    if kind == "fallback":
        text = " ".join(p for p in (att.title or payload.title, url) if p)
        return TextMessage(text=text[:_TEXT_MAX]) if text else None
    if not _valid_url(url):
        return None
    assert url is not None
    if kind == "image":
        return ImageMessage(url=url)
    mime = {"video": "video/*", "audio": "audio/*"}.get(kind)
    name = payload.title
    return FileMessage(url=url, name=name, mime_type=mime)


def _valid_url(url: str | None) -> bool:
    return url is not None and len(url) <= _URL_MAX and bool(_URL.match(url))


def to_activity(ev: InboundEvent, *, integration_id: str, hub_id: str, now_ms: int
                ) -> Activity:
    """The canonical Activity of a routed event (ids stable across redeliveries)."""
    return Activity(
        activity_id=activity_id(integration_id, ev.provider_id),
        hub_id=hub_id,
        integration_id=integration_id,
        channel_id=ChannelId.MESSENGER.value,
        type=ev.type,
        conversation_id=customer_conversation_id(integration_id, ev.psid),
        sender=Sender(id=ev.psid),
        timestamp=now_ms,
        message=ev.message,
        event=ev.event,
        metadata={**ev.metadata, "pageId": ev.page_id},
    )


# ---- outbound: Send API bodies -------------------------------------------------------------


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
