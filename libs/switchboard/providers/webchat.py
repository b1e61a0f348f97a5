"""WebChat, the pure half: origin rules, visitor session tokens, the widget's frame protocol.

The hub serves the widget itself and talks to it over a websocket, so there is no provider
wire format here; instead this module defines what the browser and the gateway say to each
other, and every decision about a socket that can be made from bytes alone:

- `origin_allowed`: does a websocket's ``Origin`` header match ``allowedOrigins``;
- `issue_session` / `open_session`: the visitor's session token, sealed under the key
  derived for sessions, carrying (integration id, visitor id, issued at), expiring;
- `parse_client_frame`: the frames a browser may send (``hello``, ``message``, ``ping``);
- `normalize_message`: a typed message → the canonical ``message:customer`` Activity, with a
  stable id from (visitor, client message id) so a resend is recognised;
- `delivery_frame` & co: what the browser is sent (only what a visitor may see).

Frames are JSON text objects tagged by ``type``; the README's WebChat section documents
them for anyone writing their own client.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import Activity, Delivery, Message, Sender, TextMessage
from switchboard.sealer import Sealer, UnsealError

__all__ = [
    "MAX_CLIENT_FRAME_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "AckFrame",
    "ClientFrame",
    "DeliveryFrame",
    "ErrorFrame",
    "FrameError",
    "HelloFrame",
    "MessageFrame",
    "PingFrame",
    "ReadyFrame",
    "Session",
    "SessionFrame",
    "WidgetActivity",
    "delivery_frame",
    "encode_frame",
    "issue_session",
    "new_visitor_id",
    "normalize_message",
    "open_session",
    "origin_allowed",
    "origin_host",
    "parse_client_frame",
    "public_origin",
    "widget_activity",
]

CHANNEL = "WebChat"
MAX_TEXT_CHARS = 4096
MAX_NAME_CHARS = 64
MAX_PAYLOAD_CHARS = 1000
# Room for a maximal text even if every character arrives \u-escaped.
MAX_CLIENT_FRAME_CHARS = 6 * MAX_TEXT_CHARS + 2048
MAX_SESSION_CHARS = 1024
_SESSION_CONTEXT = b"switchboard.webchat.session\x00"
_SESSION_SKEW_MS = 60_000

# ---- origins ------------------------------------------------------------------------


def origin_host(origin: str | None) -> str | None:
    """The lower-case host of an ``Origin`` header value, or None if it has none.

    Only ``http``/``https`` origins have a host worth comparing; ``null`` (sandboxed frames,
    ``file:`` pages) and anything malformed give None.
    """
    if not origin or len(origin) > 2048:
        return None
    try:
        parts = urlsplit(origin.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None  # browsers send scheme://host[:port] only
    return host.rstrip(".").lower() or None


def origin_allowed(origin: str | None, allowed: Sequence[str],
                   also: Sequence[str] = ()) -> bool:
    """Whether a browser at `origin` may open the widget's socket.

    `allowed` holds the integration's ``allowedOrigins``: hostnames compared with the
    Origin's host, case-insensitively, on any scheme (http or https) and any port.
    ``example.com`` matches exactly ``example.com``, not ``www.example.com``;
    ``*.example.com`` matches every subdomain at any depth (``a.example.com``,
    ``a.b.example.com``) but not ``example.com`` itself — list both for both.

    `also` holds full origins (``scheme://host[:port]``) allowed besides, compared exactly:
    the hub passes its own public origin, so its try-it page always works.
    """
    host = origin_host(origin)
    if host is None or origin is None:
        return False
    normalized = origin.strip().rstrip("/").lower()
    if any(normalized == o.rstrip("/").lower() for o in also):
        return True
    for entry in allowed:
        pattern = entry.strip().rstrip(".").lower()
        if pattern.startswith("*."):
            suffix = pattern[1:]  # ".example.com"
            if len(host) > len(suffix) and host.endswith(suffix):
                return True
        elif pattern and host == pattern:
            return True
    return False


def public_origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a base URL such as SWITCHBOARD_PUBLIC_URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


# ---- sessions -----------------------------------------------------------------------


class Session(Struct, frozen=True, rename={"integration_id": "i", "visitor_id": "u",
                                          "issued_at": "t"}):
    """What a session token says: this browser is `visitor_id` of `integration_id`."""

    integration_id: str
    visitor_id: str
    issued_at: int  # ms since the epoch


_session_decoder = msgspec.json.Decoder(Session)
_session_encoder = msgspec.json.Encoder()


def new_visitor_id() -> str:
    """A fresh, unguessable visitor id (the conversation's external user)."""
    return "wv_" + secrets.token_urlsafe(18)


def _session_context(integration_id: str) -> str:
    return f"webchat-session:{integration_id}"


def issue_session(sealer: Sealer, integration_id: str, visitor_id: str, now_ms: int) -> str:
    """A token for the browser to keep: sealed (encrypted and authenticated) under the key
    derived for visitor sessions and bound to the integration, so it can be neither read
    nor forged nor moved to another integration."""
    session = Session(integration_id=integration_id, visitor_id=visitor_id, issued_at=now_ms)
    return sealer.seal(_SESSION_CONTEXT + _session_encoder.encode(session),
                       _session_context(integration_id))


def open_session(sealer: Sealer, token: str, integration_id: str, *, now_ms: int,
                 max_age_ms: int) -> Session | None:
    """The session a token carries, or None if it is malformed, tampered with, sealed under
    another deployment secret, not a session token, for another integration, or issued
    more than `max_age_ms` ago (or in the future, beyond a minute of clock skew)."""
    if not isinstance(token, str) or len(token) > MAX_SESSION_CHARS:
        return None
    try:
        plain = sealer.open(token, _session_context(integration_id))
    except UnsealError:
        return None
    # Domain separation (legacy v1 tokens share one key with provider secrets): no other
    # sealed value passes as a session.
    if not plain.startswith(_SESSION_CONTEXT):
        return None
    try:
        session = _session_decoder.decode(plain[len(_SESSION_CONTEXT):])
    except msgspec.DecodeError:
        return None
    if session.integration_id != integration_id or not session.visitor_id:
        return None
    if not now_ms - max_age_ms <= session.issued_at <= now_ms + _SESSION_SKEW_MS:
        return None
    return session


# ---- browser → hub ------------------------------------------------------------------

ClientMessageId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class HelloFrame(Struct, tag="hello", tag_field="type", rename="camel",
                 forbid_unknown_fields=False):
    """First frame of every socket: resume `session` (else a new visitor) and stream
    strictly after `cursor` (else the whole conversation)."""

    session: str | None = None
    cursor: str | None = None
    name: Annotated[str, Meta(max_length=MAX_NAME_CHARS)] | None = None


class MessageFrame(Struct, tag="message", tag_field="type", rename="camel",
                   forbid_unknown_fields=False):
    """The visitor typed `text` (or tapped a quick reply / button carrying `payload`).

    `id` is generated by the browser once per message and reused for any resend.
    """

    id: ClientMessageId
    text: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_CHARS)]
    payload: Annotated[str, Meta(max_length=MAX_PAYLOAD_CHARS)] | None = None


class PingFrame(Struct, tag="ping", tag_field="type"):
    """Either side may send it; it is never answered (keeps idle proxies from closing)."""


ClientFrame = HelloFrame | MessageFrame | PingFrame


class FrameError(BadRequest, ValueError):
    """A client frame that breaks the protocol (the socket is closed with 4400).

    A BadRequest (``invalid_frame``) like every refusal of outside input, so one invariant
    covers every parser: our error or a result, nothing else.
    """

    def __init__(self, description: str) -> None:
        super().__init__("invalid_frame", description)


class _Typed(Struct, forbid_unknown_fields=False):
    type: str = ""


_typed_decoder = msgspec.json.Decoder(_Typed)
_client_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_KNOWN_TYPES = frozenset({"hello", "message", "ping"})


def parse_client_frame(raw: str | bytes) -> ClientFrame | None:
    """Decode one frame from the browser; None for a well-formed frame of an unknown type
    (room for newer widgets), FrameError for anything else."""
    if len(raw) > MAX_CLIENT_FRAME_CHARS:
        raise FrameError("frame too large")
    try:
        # Depth-limited, and a str that is not valid Unicode refused: past this, `raw`
        # is safe for msgspec.
        kind = jsonsafe.decode(raw, _typed_decoder).type
    except BadRequest as exc:
        raise FrameError(f"frame is not a JSON object: {exc.description}") from None
    if kind not in _KNOWN_TYPES:
        return None
    try:
        return _client_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise FrameError(f"invalid {kind} frame: {exc}") from None


def normalize_message(*, hub_id: str, integration_id: str, visitor_id: str,
                      name: str | None, frame: MessageFrame, now_ms: int) -> Activity:
    """A visitor's message as the canonical ``message:customer`` Activity.

    Its id derives from (visitor, client message id): a resend after a reconnect is the
    same activity, and the router delivers it once.
    """
    metadata = {"clientMessageId": frame.id}
    if frame.payload is not None:
        metadata["payload"] = frame.payload
    return Activity(
        activity_id=activity_id(integration_id, f"webchat:{visitor_id}:{frame.id}"),
        hub_id=hub_id,
        integration_id=integration_id,
        channel_id=CHANNEL,
        type="message:customer",
        conversation_id=customer_conversation_id(integration_id, visitor_id),
        sender=Sender(id=visitor_id, name=name or None),
        timestamp=now_ms,
        message=TextMessage(text=frame.text),
        metadata=metadata,
    )


# ---- hub → browser ------------------------------------------------------------------

Role = Literal["visitor", "agent", "bot"]
_ROLES: dict[str, Role] = {"message:customer": "visitor", "message:agent": "agent",
                           "message:bot": "bot"}


class WidgetActivity(Struct, rename="camel", omit_defaults=True):
    """The part of an Activity a visitor may see (no hub, integration or provider ids)."""

    activity_id: str
    role: Role
    message: Message
    timestamp: int
    sender_name: str | None = None
    client_message_id: str | None = None


class SessionFrame(Struct, tag="session", tag_field="type", rename="camel"):
    """Answer to ``hello``: keep `session`; `resumed` is False for a new visitor."""

    session: str
    visitor_id: str
    conversation_id: str
    resumed: bool


class DeliveryFrame(Struct, tag="delivery", tag_field="type", rename="camel"):
    """One message of the conversation; `cursor` (``"P:O"``) is its stream position."""

    cursor: str
    activity: WidgetActivity


class ReadyFrame(Struct, tag="ready", tag_field="type", rename="camel", omit_defaults=True):
    """History is replayed; live messages follow. `truncated`: older history was left out."""

    cursor: str | None = None
    truncated: bool = False


class AckFrame(Struct, tag="ack", tag_field="type", rename="camel"):
    """The message with client id `id` is durably accepted as `activity_id`."""

    id: str
    activity_id: str


class ErrorFrame(Struct, tag="error", tag_field="type", rename="camel", omit_defaults=True):
    """A message was not accepted (`id` names it); the socket stays open."""

    code: str
    description: str
    id: str | None = None


ServerFrame = SessionFrame | DeliveryFrame | ReadyFrame | AckFrame | ErrorFrame | PingFrame
_frame_encoder = msgspec.json.Encoder()


def encode_frame(frame: ServerFrame) -> str:
    return _frame_encoder.encode(frame).decode()


def widget_activity(activity: Activity) -> WidgetActivity | None:
    """What the visitor sees of `activity`; None for anything that is not a message."""
    role = _ROLES.get(activity.type)
    if role is None or activity.message is None:
        return None
    return WidgetActivity(
        activity_id=activity.activity_id,
        role=role,
        message=activity.message,
        timestamp=activity.timestamp,
        sender_name=activity.sender.name if role != "visitor" else None,
        client_message_id=(activity.metadata.get("clientMessageId")
                           if role == "visitor" else None),
    )


def delivery_frame(delivery: Delivery, cursor: str) -> DeliveryFrame | None:
    view = widget_activity(delivery.activity)
    return DeliveryFrame(cursor=cursor, activity=view) if view is not None else None
