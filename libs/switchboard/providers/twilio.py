"""TwilioSMS, the pure half: signatures, webhook normalization, REST API payloads.

Everything here is a function of bytes, strings and Structs; the plugin in
``switchboard.services.channels.twilio`` wires it to HTTP and Kafka.

Wire formats (Twilio's Programmable Messaging, API version 2010-04-01):

- Webhooks (incoming messages and status callbacks) are form-encoded POSTs signed with
  ``X-Twilio-Signature`` = base64 HMAC-SHA1(auth token, full URL + every parameter name
  and value, sorted by name). When a Twilio *Webhook Rule* matches the URL, Twilio signs
  with a SharedKey secret instead and names the algorithm (HMAC_SHA1 or HMAC_SHA256) in
  ``X-Twilio-Webhooks-Signature-Settings``.
- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` sends a message (basic auth,
  form fields ``From``, ``To``, ``Body``, ``MediaUrl`` (repeatable), ``StatusCallback``).
- ``IncomingPhoneNumbers/{Sid}.json``: GET reads a number, POST updates its ``SmsUrl``.
- Errors are JSON ``{"code": 21211, "message": "...", "more_info": "...", "status": 400}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
from msgspec import Struct

from switchboard import jsonsafe
from switchboard.channels import Capabilities
from switchboard.errors import BadRequest, Forbidden, Unauthorized
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import (
    Activity,
    Button,
    Card,
    CardMessage,
    Event,
    FileMessage,
    ImageMessage,
    Message,
    Sender,
    TextMessage,
    activity_decoder,
    activity_encoder,
)

API_VERSION = "2010-04-01"
CHANNEL = "TwilioSMS"
SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES: dict[str, Callable[[], Any]] = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}

# Twilio concatenates a long text into one message of up to 1600 characters (it splits
# it into carrier segments and the handset reassembles them); longer bodies are refused
# with error 21617. We count UTF-16 code units, as GSM/UCS-2 segmentation does, so an
# emoji counts twice and a part is never over Twilio's limit.
MAX_BODY_CHARS = 1600
# At most 10 MediaUrl per message.
MAX_MEDIA = 10
# Bounds on what we read from a webhook, well above anything Twilio sends.
MAX_PARAMS = 200
_MAX_REF_CHARS = 128

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
TWIML_MEDIA_TYPE = "text/xml"
TWILIO_SENDER = Sender(id="twilio", name="Twilio")

# MessageStatus values of an incoming message; everything else is a status callback.
_INBOUND_STATUSES = frozenset({"received", "receiving"})

Params = list[tuple[str, str]]


# ---- URLs --------------------------------------------------------------------------


def number_url(api_url: str, account_sid: str, number_sid: str) -> str:
    """The IncomingPhoneNumber resource (GET reads it, POST updates it)."""
    return (f"{api_url.rstrip('/')}/{API_VERSION}/Accounts/{quote(account_sid, safe='')}"
            f"/IncomingPhoneNumbers/{quote(number_sid, safe='')}.json")


def messages_url(api_url: str, account_sid: str) -> str:
    account = quote(account_sid, safe="")
    return f"{api_url.rstrip('/')}/{API_VERSION}/Accounts/{account}/Messages.json"


def ingress_url(public_url: str, integration_id: str) -> str:
    """Where Twilio posts an integration's incoming messages (the number's SmsUrl)."""
    return f"{public_url.rstrip('/')}/ingress/{integration_id}"


def status_callback_url(public_url: str, integration_id: str, ref: str,
                        part: int | None = None) -> str:
    """The per-message StatusCallback: the ingress URL naming the activity it reports on.

    The query is covered by Twilio's signature, so the `ref` we read back is our own.
    """
    query: Params = [("ref", ref)]
    if part is not None:
        query.append(("part", str(part)))
    return f"{ingress_url(public_url, integration_id)}?{urlencode(query)}"


def full_url(public_url: str, path: str, query: str) -> str:
    """The URL Twilio requested, as it signed it: the public base (not the bind address,
    which differs behind a proxy), the request path, and the raw query string."""
    url = public_url.rstrip("/") + path
    return f"{url}?{query}" if query else url


# ---- signatures --------------------------------------------------------------------


def parse_form(body: bytes) -> Params:
    """The parameters of a form-encoded body, in order, repeated names kept."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid_form", "the body is not UTF-8") from None
    try:
        params = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                           max_num_fields=MAX_PARAMS)
    except ValueError:
        raise BadRequest("invalid_form", f"more than {MAX_PARAMS} form fields") from None
    return params


def compute_signature(secret: str, url: str, params: Sequence[tuple[str, str]],
                      algorithm: str = HMAC_SHA1) -> str:
    """Twilio's signature: URL, then for each distinct name in sorted order, name+value
    for each of its distinct values in sorted order; HMAC with `secret`, base64."""
    hash_function = _HASHES.get(algorithm.upper())
    if hash_function is None:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values)
                         for value in sorted(values[name]))
    mac = hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hash_function)
    return base64.b64encode(mac.digest()).decode("ascii")


def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm named by ``X-Twilio-Webhooks-Signature-Settings`` (absent: HMAC_SHA1)."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def _url_variants(url: str) -> list[str]:
    # Twilio is not consistent about the default port in what it signs: check both.
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc if port is None else parts.netloc.rsplit(":", 1)[0]
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    without = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    return list(dict.fromkeys([url, without, with_port]))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def verify_signature(headers: Mapping[str, str], url: str, params: Sequence[tuple[str, str]],
                     *, auth_token: str, shared_key: str | None = None) -> None:
    """Check ``X-Twilio-Signature`` over `url` and `params`, constant time.

    Missing signature → Unauthorized (401); wrong one → Forbidden (403). A request signed
    with a SharedKey (the settings header present) needs `shared_key`.
    """
    signature = (_header(headers, SIGNATURE_HEADER) or "").strip()
    if not signature:
        raise Unauthorized("missing_signature", "X-Twilio-Signature header is required")
    settings = _header(headers, SIGNATURE_SETTINGS_HEADER)
    if settings is not None and settings.strip():
        algorithm = signature_algorithm(settings)
        if shared_key is None:
            raise Forbidden("shared_key_not_configured",
                            "the request is signed with a Twilio SharedKey; set the "
                            "integration's sharedKeySecret")
        secret = shared_key
    else:
        algorithm, secret = HMAC_SHA1, auth_token
    if algorithm not in _HASHES:
        raise Forbidden("unsupported_signature_algorithm",
                        f"unsupported signature algorithm {algorithm[:32]!r}")
    given = signature.encode("utf-8", errors="replace")
    ok = False
    for candidate in _url_variants(url):
        expected = compute_signature(secret, candidate, params, algorithm).encode("ascii")
        ok |= hmac.compare_digest(expected, given)
    if not ok:
        raise Forbidden("invalid_signature", "X-Twilio-Signature does not match")


# ---- webhooks → activities -----------------------------------------------------------


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


# ---- messages → API requests --------------------------------------------------------


def _units(text: str) -> int:
    """Length in UTF-16 code units, as SMS encodings count characters."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    """`text` in order-preserving parts of at most `limit` UTF-16 units each.

    A text that fits is one part (Twilio concatenates it); a longer one is cut at the
    last line break or space of each window (or hard, if a window has none).
    """
    if _units(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while _units(rest) > limit:
        # The longest prefix within the limit (a character beyond the BMP counts twice).
        units = end = 0
        for ch in rest:
            units += 2 if ord(ch) > 0xFFFF else 1
            if units > limit:
                break
            end += 1
        window = rest[:end]
        cut = max(window.rfind("\n"), window.rfind(" "))
        if cut < end // 2:
            cut = end  # no sensible break: hard cut
        part = rest[:cut].rstrip()
        parts.append(part or rest[:end])
        rest = rest[cut:].lstrip() if part else rest[end:]
    if rest:
        parts.append(rest)
    return parts


def _button_line(button: Button) -> str:
    if button.type == "url" and button.url:
        return f"- {button.title}: {button.url}"
    return f"- {button.title}"


def _card_lines(card: Card | CardMessage, *, with_image: bool) -> list[str]:
    lines = [card.title]
    if card.subtitle:
        lines.append(card.subtitle)
    if with_image and card.image_url:
        lines.append(card.image_url)
    lines.extend(_button_line(b) for b in card.buttons)
    return lines


def text_form(message: Message, *, mms: bool) -> tuple[str, list[str]]:
    """A message as SMS can carry it: (body text, media URLs).

    SMS has no buttons: cards, carousels and quick replies become readable text (button
    titles as a list, URL buttons with their link). Images (and other files) travel as
    MMS media when the number can send MMS, else as links in the text.
    """
    if isinstance(message, TextMessage):
        text = message.text
        if message.quick_replies:
            options = "\n".join(f"- {q.title}" for q in message.quick_replies)
            text = f"{text}\n\nReply with one of:\n{options}" if text else \
                f"Reply with one of:\n{options}"
        return text, []
    if isinstance(message, ImageMessage):
        if mms:
            return message.caption or "", [message.url]
        return "\n".join(x for x in (message.caption, message.url) if x), []
    if isinstance(message, FileMessage):
        if mms:
            return message.name or "", [message.url]
        return "\n".join(x for x in (message.name, message.url) if x), []
    if isinstance(message, CardMessage):
        media = [message.image_url] if mms and message.image_url else []
        return "\n".join(_card_lines(message, with_image=not mms)), media
    cards = message.cards
    blocks = []
    for i, card in enumerate(cards, 1):
        lines = _card_lines(card, with_image=not mms)
        lines[0] = f"{i}) {lines[0]}"
        blocks.append("\n".join(lines))
    media = [c.image_url for c in cards if c.image_url][:MAX_MEDIA] if mms else []
    return "\n\n".join(blocks), media


def message_requests(message: Message, *, from_number: str, to: str, mms: bool,
                     status_callback: Callable[[int | None], str]) -> list[Params]:
    """The form bodies of the ``Messages.json`` POSTs that send `message`, in order.

    One request unless the text is over 1600 characters: then one per part, the media
    (if any) on the first. `status_callback(part)` gives each request's StatusCallback
    (part is None for a single request). Empty list: nothing to send.
    """
    text, media = text_form(message, mms=mms)
    if not text and not media:
        return []
    parts = split_text(text) if text else [""]
    single = len(parts) == 1
    requests: list[Params] = []
    for i, part in enumerate(parts):
        form: Params = [("To", to), ("From", from_number)]
        if part:
            form.append(("Body", part))
        if i == 0:
            form.extend(("MediaUrl", url) for url in media)
        form.append(("StatusCallback", status_callback(None if single else i + 1)))
        requests.append(form)
    return requests


# ---- API answers ---------------------------------------------------------------------


class TwilioError(Struct, frozen=True):
    """Twilio's error body; `code` 0 when the answer was not Twilio JSON."""

    status: int
    code: int = 0
    message: str = ""

    @property
    def reason(self) -> str:
        """A short code for logs and dead letters (never a secret)."""
        return f"twilio_{self.code}" if self.code else f"http_{self.status}"

    def describe(self) -> str:
        text = self.message or f"HTTP {self.status}"
        return f"Twilio: {text}" + (f" (code {self.code})" if self.code else "")


class _ErrorBody(Struct):
    code: int | None = None
    message: str | None = None


def parse_error(status: int, body: bytes) -> TwilioError:
    try:
        err = jsonsafe.decode(body[:16384], _error_decoder)
    except BadRequest:
        return TwilioError(status=status)
    return TwilioError(status=status, code=err.code or 0, message=(err.message or "")[:512])


class _NumberBody(Struct):
    phone_number: str | None = None
    capabilities: dict[str, bool] | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)
_number_decoder = msgspec.json.Decoder(_NumberBody)


def parse_number(body: bytes) -> tuple[str, Capabilities]:
    """(phoneNumber, capabilities) from an IncomingPhoneNumber resource."""
    try:
        number = jsonsafe.decode(body, _number_decoder)
    except BadRequest:
        raise BadRequest("provider_error", "Twilio answered with an unreadable number",
                         "configuration.numberSid") from None
    if not number.phone_number:
        raise BadRequest("provider_error", "Twilio's number has no phone_number",
                         "configuration.numberSid")
    caps = number.capabilities or {}
    return number.phone_number, Capabilities(
        mms=bool(caps.get("mms") or caps.get("MMS")),
        sms=bool(caps.get("sms") or caps.get("SMS")),
        voice=bool(caps.get("voice") or caps.get("Voice")),
    )


def sms_url_update(public_url: str, integration_id: str) -> Params:
    """The form that points a number's incoming messages at the integration."""
    return [("SmsUrl", ingress_url(public_url, integration_id)), ("SmsMethod", "POST")]
