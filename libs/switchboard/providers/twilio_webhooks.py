"""TwilioSMS webhooks → activities: an incoming SMS/MMS becomes ``message:customer``
activities, a status callback an ``event:message_status``, each with a stable id
(`normalize`), after the account it names was checked (`check_account`). Also the empty
TwiML answer Twilio expects back.

Everything here is a function of strings and Structs; the plugin in
``switchboard.services.channels.twilio`` wires it to HTTP and Kafka.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import msgspec

from switchboard.errors import BadRequest, Forbidden
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import (
    Activity,
    Event,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
    activity_decoder,
    activity_encoder,
)
from switchboard.providers.twilio_api import MAX_MEDIA

CHANNEL = "TwilioSMS"

_MAX_REF_CHARS = 128

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
TWIML_MEDIA_TYPE = "text/xml"
TWILIO_SENDER = Sender(id="twilio", name="Twilio")

# MessageStatus values of an incoming message; everything else is a status callback.
_INBOUND_STATUSES = frozenset({"received", "receiving"})


def is_status_callback(params: Sequence[tuple[str, str]]) -> bool:
    """A status callback carries the MessageStatus of a message we sent."""
    status = _get(params, "MessageStatus")
    return status is not None and status.lower() not in _INBOUND_STATUSES


def _get(params: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value
    return None


def _required(params: Sequence[tuple[str, str]], name: str) -> str:
    value = _get(params, name)
    if not value:
        raise BadRequest("invalid_webhook", f"{name} is required", name)
    if len(value) > 256:
        raise BadRequest("invalid_webhook", f"{name} is too long", name)
    return value


def check_account(params: Sequence[tuple[str, str]], account_sid: str) -> None:
    """A webhook about another account is not for this integration."""
    sent = _get(params, "AccountSid")
    if sent is not None and not hmac.compare_digest(sent.encode(), account_sid.encode()):
        raise Forbidden("wrong_account", "AccountSid does not match the integration")


def normalize(params: Sequence[tuple[str, str]], *, hub_id: str, integration_id: str,
              query: Sequence[tuple[str, str]] = (), now_ms: int) -> list[Activity]:
    """The activities a verified webhook stands for, in order, each with a stable id.

    An incoming SMS/MMS is one ``message:customer`` per part: the Body as text (id from
    the MessageSid), then each media item (image/* as an image, anything else as a file,
    id from the MessageSid and its index). A status callback is one
    ``event:message_status`` (id from the MessageSid and the status).
    """
    if is_status_callback(params):
        activities = [_status_event(params, hub_id, integration_id, query, now_ms)]
    else:
        activities = _incoming(params, hub_id, integration_id, now_ms)
    # Everything published must decode downstream: check the Structs' constraints here,
    # where a bad webhook can still be refused, not at the router where it would be lost.
    for activity in activities:
        try:
            activity_decoder.decode(activity_encoder.encode(activity))
        except msgspec.ValidationError as exc:
            raise BadRequest("invalid_webhook", f"unusable webhook: {exc}") from None
    return activities


def _incoming(params: Sequence[tuple[str, str]], hub_id: str, integration_id: str,
              now_ms: int) -> list[Activity]:
    sid = _required(params, "MessageSid")
    customer = _required(params, "From")
    body = _get(params, "Body") or ""
    try:
        num_media = int(_get(params, "NumMedia") or "0")
    except ValueError:
        raise BadRequest("invalid_webhook", "NumMedia must be a number", "NumMedia") from None
    num_media = max(0, min(num_media, MAX_MEDIA))
    messages: list[tuple[str, Message]] = []
    if body or num_media == 0:
        messages.append((sid, TextMessage(text=body)))
    for i in range(num_media):
        url = _get(params, f"MediaUrl{i}")
        if not url:
            raise BadRequest("invalid_webhook", f"MediaUrl{i} is missing", f"MediaUrl{i}")
        mime = (_get(params, f"MediaContentType{i}") or "").strip().lower() or None
        media: Message = (ImageMessage(url=url) if mime and mime.startswith("image/")
                          else FileMessage(url=url, mime_type=mime))
        messages.append((f"{sid}:media:{i}", media))
    conversation = customer_conversation_id(integration_id, customer)
    metadata = {"messageSid": sid}
    to = _get(params, "To")
    if to:
        metadata["to"] = to
    return [
        Activity(
            activity_id=activity_id(integration_id, provider_id),
            hub_id=hub_id,
            integration_id=integration_id,
            channel_id=CHANNEL,
            type="message:customer",
            conversation_id=conversation,
            sender=Sender(id=customer, name=customer),
            timestamp=now_ms,
            message=message,
            metadata=metadata,
        )
        for provider_id, message in messages
    ]


def _status_event(params: Sequence[tuple[str, str]], hub_id: str, integration_id: str,
                  query: Sequence[tuple[str, str]], now_ms: int) -> Activity:
    sid = _required(params, "MessageSid")
    status = _required(params, "MessageStatus").lower()
    customer = _required(params, "To")  # a status is about a message we sent them
    data: dict[str, str | int | bool | None] = {"messageSid": sid, "status": status,
                                                "to": customer}
    error = _get(params, "ErrorCode")
    if error:
        # A long run of digits stays text: int() refuses 4,300+ digits (a 500).
        data["errorCode"] = (int(error) if error.isascii() and error.isdigit()
                             and len(error) <= 18 else error[:32])
    ref = _get(query, "ref")
    if ref is not None and not (0 < len(ref) <= _MAX_REF_CHARS):
        ref = None
    part = _get(query, "part")
    if part is not None and part.isascii() and part.isdigit() and len(part) <= 9:
        data["part"] = int(part)
    return Activity(
        activity_id=activity_id(integration_id, f"{sid}:status:{status}"),
        hub_id=hub_id,
        integration_id=integration_id,
        channel_id=CHANNEL,
        type="event:message_status",
        conversation_id=customer_conversation_id(integration_id, customer),
        sender=TWILIO_SENDER,
        timestamp=now_ms,
        # `ref` names our activity whose SMS this is (set in the StatusCallback we gave
        # Twilio); data.messageSid is Twilio's id for it.
        event=Event(name="message_status", ref=ref, data=data),
    )
