"""Syncro's Notification Center webhooks → event activities. Pure, no I/O.

Syncro signs nothing: a webhook is authenticated by the secret in its URL
(``/ingress/{integrationId}/{secret}``, checked by the plugin in constant time). The
body is ``{"text": "A Ticket was created\\n…", "link": "<record URL>", "attributes":
{<the record>}}``. What happened is read from the record's URL (``/tickets/123``) and
the headline, and becomes one of `SYNCRO_EVENTS`: ``syncro:ticket.updated`` and so on,
with the record as ``event.data.record``. The activity id derives from (type, record
id, the record's updated time), so Syncro sending the same change twice is one activity,
and each real change (a new comment updates the ticket) a new one.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from switchboard import jsonsafe
from switchboard.channels import SYNCRO_EVENTS
from switchboard.errors import BadRequest
from switchboard.ids import activity_id, stable_id
from switchboard.model import Activity, Event, Sender

__all__ = ["SyncroWebhook", "event_type", "normalize", "parse_webhook"]


class SyncroWebhook(Struct, forbid_unknown_fields=False):
    attributes: dict[str, Any]
    text: Annotated[str, Meta(max_length=65536)] = ""
    link: Annotated[str, Meta(max_length=4096)] = ""


_decoder = msgspec.json.Decoder(SyncroWebhook)


def parse_webhook(body: bytes) -> SyncroWebhook:
    """The webhook's body (BadRequest if it is not JSON of that shape, or too deep)."""
    return jsonsafe.decode(body, _decoder, invalid="invalid_webhook")


# Record kinds by the path segment of their URL (https://acme.syncromsp.com/tickets/12).
_LINK_KINDS = {
    "customers": "customer", "tickets": "ticket", "invoices": "invoice",
    "payments": "payment", "rmm_alerts": "rmm_alert", "alerts": "rmm_alert",
}
# By the headline's words when the link says nothing; the order matters ("a payment was
# added to invoice 12", "a comment was added to a ticket of customer Ada").
_WORD_KINDS = (
    (("rmm", "alert"), "rmm_alert"), (("payment",), "payment"),
    (("invoice",), "invoice"), (("ticket", "comment"), "ticket"),
    (("customer",), "customer"),
)


def _kind(hook: SyncroWebhook, headline: str) -> str | None:
    try:
        segments = [s for s in urlsplit(hook.link).path.split("/") if s]
    except ValueError:
        segments = []
    for segment in reversed(segments):
        kind = _LINK_KINDS.get(segment.lower())
        if kind is not None:
            return kind
    for words, kind in _WORD_KINDS:
        if any(w in headline for w in words):
            return kind
    return None


def _ticket_action(headline: str, record: dict[str, Any]) -> str:
    status = record.get("status")
    if "resolved" in headline or "closed" in headline or (
            isinstance(status, str) and status.casefold() in ("resolved", "closed")
            and "created" not in headline):
        return "resolved"
    if "created" in headline and "comment" not in headline:
        return "created"
    return "updated"  # changed, a new comment, anything else


def event_type(hook: SyncroWebhook) -> str | None:
    """The activity type of a webhook (`SYNCRO_EVENTS`), or None if it is none of them."""
    headline = hook.text.split("\n", 1)[0].casefold()
    kind = _kind(hook, headline)
    if kind is None:
        return None
    action = _ticket_action(headline, hook.attributes) if kind == "ticket" else "created"
    name = f"syncro:{kind}.{action}"
    return name if name in SYNCRO_EVENTS else None


def _record_id(record: dict[str, Any]) -> str:
    rid = record.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int | str) or rid == "":
        raise BadRequest("invalid_webhook", "the record has no id", "attributes.id")
    text = str(rid)
    if len(text) > 64:
        raise BadRequest("invalid_webhook", "the record id is too long", "attributes.id")
    return text


def _version(record: dict[str, Any]) -> str:
    for key in ("updated_at", "created_at"):
        value = record.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)[:64]
    return ""


def conversation_of(integration_id: str, kind: str, record_id: str) -> str:
    """One conversation per Syncro record, so one record's events stay in order."""
    return stable_id("syncro", integration_id, kind, record_id)


def normalize(hook: SyncroWebhook, *, hub_id: str, integration_id: str, subdomain: str,
              now_ms: int) -> Activity | None:
    """The event activity of a webhook, or None for a webhook of no known trigger."""
    kind_type = event_type(hook)
    if kind_type is None:
        return None
    record = hook.attributes
    rid = _record_id(record)
    kind = kind_type.split(":", 1)[1].split(".", 1)[0]
    return Activity(
        activity_id=activity_id(integration_id, f"syncro\x1f{kind_type}\x1f{rid}\x1f"
                                + _version(record)),
        hub_id=hub_id,
        integration_id=integration_id,
        channel_id="Syncro",
        type=kind_type,
        conversation_id=conversation_of(integration_id, kind, rid),
        sender=Sender(id=f"syncro:{subdomain}", name="Syncro"),
        timestamp=now_ms,
        event=Event(name=kind_type.split(":", 1)[1], data={
            "kind": kind, "id": rid, "text": hook.text, "link": hook.link, "record": record,
        }),
        metadata={"syncroId": rid},
    )
