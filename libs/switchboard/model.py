"""The canonical payloads: messages, activities and deliveries (msgspec Structs).

Field names are camelCase on the wire (Hubster's style) and snake_case in Python.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

NonEmpty = Annotated[str, Meta(min_length=1, max_length=4096)]
Url = Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^https?://")]
Text = Annotated[str, Meta(max_length=16384)]


class IntegrationType(enum.Enum):
    """Who an integration speaks for (Hubster's integrationTypeId)."""

    CUSTOMER = "Customer"
    AGENT = "Agent"
    BOT = "Bot"
    SYSTEM = "System"


class ChannelId(enum.Enum):
    """The channel an integration talks through (Hubster's channelId)."""

    DIRECT = "Direct"
    SYSTEM = "System"
    MESSENGER = "Messenger"
    TWILIO_SMS = "TwilioSMS"
    WEBCHAT = "WebChat"
    SLACK = "Slack"
    SYNCRO = "Syncro"


# Hubster's numeric codes; the API accepts either form and answers with names.
CHANNEL_CODES: dict[int, ChannelId] = {
    1: ChannelId.DIRECT,
    3: ChannelId.SYSTEM,
    101: ChannelId.MESSENGER,
    102: ChannelId.TWILIO_SMS,
    106: ChannelId.WEBCHAT,
    1001: ChannelId.SLACK,
    2001: ChannelId.SYNCRO,  # ours: Hubster has no code for Syncro
}
INTEGRATION_TYPE_CODES: dict[int, IntegrationType] = {
    2: IntegrationType.CUSTOMER,
    3: IntegrationType.AGENT,
    4: IntegrationType.BOT,
    5: IntegrationType.SYSTEM,
}


class StatusId(enum.IntEnum):
    ACTIVE = 3000
    PAUSED = 3002


# ---- messages (a tagged union on "type") ----------------------------------


class Button(Struct, rename="camel", omit_defaults=True):
    title: NonEmpty
    type: Literal["postback", "url"] = "postback"
    payload: str | None = None
    url: Url | None = None


class QuickReply(Struct, rename="camel", omit_defaults=True):
    title: NonEmpty
    payload: str | None = None


class TextMessage(Struct, tag="text", tag_field="type", rename="camel", omit_defaults=True):
    text: Text
    quick_replies: list[QuickReply] = field(default_factory=list)


class ImageMessage(Struct, tag="image", tag_field="type", rename="camel", omit_defaults=True):
    url: Url
    caption: Text | None = None


class FileMessage(Struct, tag="file", tag_field="type", rename="camel", omit_defaults=True):
    url: Url
    name: str | None = None
    mime_type: str | None = None


class Card(Struct, rename="camel", omit_defaults=True):
    title: NonEmpty
    subtitle: str | None = None
    image_url: Url | None = None
    buttons: list[Button] = field(default_factory=list)


class CardMessage(Struct, tag="card", tag_field="type", rename="camel", omit_defaults=True):
    title: NonEmpty
    subtitle: str | None = None
    image_url: Url | None = None
    buttons: list[Button] = field(default_factory=list)


class CarouselMessage(Struct, tag="carousel", tag_field="type", rename="camel", omit_defaults=True):
    cards: Annotated[list[Card], Meta(min_length=1, max_length=10)]


Message = TextMessage | ImageMessage | FileMessage | CardMessage | CarouselMessage


class Sender(Struct, rename="camel", omit_defaults=True):
    id: Annotated[str, Meta(min_length=1, max_length=256)]
    name: Annotated[str, Meta(max_length=256)] | None = None


# ---- what a Direct integration posts to the ingress -----------------------


class InboundActivity(Struct, rename="camel", forbid_unknown_fields=False, omit_defaults=True):
    """The body a Direct integration signs and posts to ``/ingress/{integrationId}``."""

    type: Literal["message"]
    sender: Sender
    message: Message
    conversation_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


# ---- the canonical activity on the `activities` topic ---------------------


class Event(Struct, rename="camel", omit_defaults=True):
    """What a non-message activity says happened (``event:<name>``).

    `ref` names the activity it is about (the message that was seen, failed, …). `data`
    is JSON: flat for the hub's own events, a provider's whole record (nested objects and
    lists) for provider events such as ``syncro:ticket.updated``.
    """

    name: str
    ref: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Activity(Struct, rename="camel", omit_defaults=True):
    """One thing that happened in a conversation, as every stage after the ingress sees it.

    `type` is the name System filters match: ``message:customer``, ``message:agent``,
    ``message:bot``, or ``event:<name>`` (``event:delivery_failed``, ``event:seen``,
    ``event:postback``, ``event:message_status``, ``event:conversation_closed``) with
    `event` set, or a provider's own event (``syncro:ticket.updated``, …) with `event` set
    and its record in `event.data`.
    """

    activity_id: str
    hub_id: str
    integration_id: str
    channel_id: str
    type: str
    conversation_id: str
    sender: Sender
    timestamp: int  # ms since the epoch, when the hub accepted it
    message: Message | None = None
    event: Event | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Delivery(Struct, rename="camel", omit_defaults=True):
    """One activity bound for one destination integration (the `deliveries` topic).

    `delivery_id` is the stable `webhook-id`: the same activity to the same destination
    always carries the same id, so receivers can deduplicate our retries.
    """

    delivery_id: str
    hub_id: str
    destination_id: str
    conversation_id: str
    activity: Activity
    created_at: int


class DeadLetter(Struct, rename="camel", omit_defaults=True):
    """A delivery that exhausted its retries or failed permanently (`deliveries.dead`)."""

    delivery: Delivery
    reason: str
    attempts: int
    last_status: int | None = None
    dead_at: int = 0


class DeadActivity(Struct, rename="camel", omit_defaults=True):
    """An activity the router could not route (`activities.dead`): undecodable, or its
    routing kept failing inside the hub. `value` is the record as it was, base64."""

    value: str
    reason: str
    partition: int
    offset: int
    dead_at: int = 0


# ---- delivery bodies (what destinations receive) --------------------------


class DirectEnvelope(Struct, rename="camel"):
    """Body POSTed to a Direct integration's webhookUrl (and pushed on its websocket)."""

    hub_id: str
    integration_id: str
    conversation_id: str
    activity: Activity


class SystemEnvelope(Struct, rename="camel"):
    """Body POSTed to a System integration's webhookUrl."""

    hub_id: str
    integration_id: str
    conversation_id: str
    activities: list[Activity]


activity_encoder = msgspec.json.Encoder()
activity_decoder = msgspec.json.Decoder(Activity)
delivery_decoder = msgspec.json.Decoder(Delivery)
inbound_decoder = msgspec.json.Decoder(InboundActivity)


# ---- the delivery log (`deliveries.attempts`) ------------------------------

DeliveryStatus = Literal["delivered", "pending", "failed"]


class DeliveryRef(Struct, rename="camel", frozen=True):
    """Where a delivery's record sits on the `deliveries` topic (for redelivery)."""

    partition: int
    offset: int


class AttemptRecord(Struct, rename="camel", omit_defaults=True):
    """One delivery attempt, or a change of a delivery's status without one.

    Written by the deliverer to `deliveries.attempts` (key: destination id). `status` is
    the delivery's status after this record: ``pending`` (will be retried; `next_at` says
    when), ``delivered`` or ``failed`` (dead-lettered; `error` says why). `attempt` is the
    1-based attempt number, 0 for a record that made no request (parked behind a failing
    head, held by an open circuit, redelivery queued).
    """

    delivery_id: str
    activity_id: str
    hub_id: str
    destination_id: str
    conversation_id: str
    status: DeliveryStatus
    attempt: int
    at: int  # ms since the epoch
    code: int | None = None  # the HTTP status answered, if any
    error: str | None = None  # a short reason code, never a secret
    latency_ms: int | None = None
    response: str | None = None  # the first 1 KB of the answer
    next_at: int | None = None
    source: DeliveryRef | None = None


attempt_decoder = msgspec.json.Decoder(AttemptRecord)
