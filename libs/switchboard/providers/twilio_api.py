"""TwilioSMS REST API (Programmable Messaging, API version 2010-04-01): URLs, the requests
that send a hub message, and Twilio's answers.

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` sends a message (basic auth,
  form fields ``From``, ``To``, ``Body``, ``MediaUrl`` (repeatable), ``StatusCallback``).
- ``IncomingPhoneNumbers/{Sid}.json``: GET reads a number, POST updates its ``SmsUrl``.
- Errors are JSON ``{"code": 21211, "message": "...", "more_info": "...", "status": 400}``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlencode

import msgspec
from msgspec import Struct

from switchboard import jsonsafe
from switchboard.channels import Capabilities
from switchboard.errors import BadRequest
from switchboard.model import (
    Button,
    Card,
    CardMessage,
    FileMessage,
    ImageMessage,
    Message,
    TextMessage,
)
from switchboard.providers.twilio_signature import Params

API_VERSION = "2010-04-01"

# Twilio concatenates a long text into one message of up to 1600 characters (it splits
# it into carrier segments and the handset reassembles them); longer bodies are refused
# with error 21617. We count UTF-16 code units, as GSM/UCS-2 segmentation does, so an
# emoji counts twice and a part is never over Twilio's limit.
MAX_BODY_CHARS = 1600
# At most 10 MediaUrl per message.
MAX_MEDIA = 10


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
