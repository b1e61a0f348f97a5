"""Messenger (Meta Graph API) inbound events: a verified webhook body, batched as
``entry[]`` (one per Page) of ``messaging[]`` events, split into normalized events
(`parse_webhook`) and the canonical Activity of each once routed (`to_activity`).

Inbound is app-level: Meta posts every subscribed Page's events to one URL. Nothing here
does I/O; the plugin (`switchboard.services.channels.messenger`) wires these functions to
HTTP and Kafka.
"""

from __future__ import annotations

import re

import msgspec
from msgspec import Struct, field

from switchboard import jsonsafe
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import (
    Activity,
    ChannelId,
    Event,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
)

__all__ = [
    "SUBSCRIBED_FIELDS",
    "InboundEvent",
    "Skipped",
    "parse_webhook",
    "to_activity",
]

# What the hub subscribes the app to on each Page it is given.
SUBSCRIBED_FIELDS = ("messages", "messaging_postbacks", "message_reads")

_URL = re.compile(r"^https?://")
_URL_MAX = 2048
_TEXT_MAX = 16384
_SENDER_MAX = 256


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
