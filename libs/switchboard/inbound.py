"""The ingress's pure half: request checks and normalization to the canonical Activity.

The HTTP service calls these in order — size, content type, signature, then (once
authenticated) integration state and body — so that every rejection happens before
anything reaches Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping

from switchboard import names, webhooks
from switchboard.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import Activity, IntegrationType, inbound_decoder
from switchboard.registry import IntegrationRecord


def check_content_length(value: str | None, limit: int) -> int | None:
    """Reject an announced body over `limit` before reading a byte of it."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise BadRequest("invalid_content_length", "Content-Length must be a number")
    # int() refuses more than 4,300 digits (ValueError, a 500); 20 digits exceed any limit.
    length = int(value) if len(value.lstrip("0")) <= 20 else limit + 1
    if length > limit:
        raise PayloadTooLarge("payload_too_large", f"body exceeds {limit} bytes")
    return length


def check_json_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            "unsupported_media_type", "Content-Type must be application/json"
        )


def verify_direct(
    rec: IntegrationRecord,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: int,
    grace_s: int,
    tolerance_s: int,
) -> webhooks.VerifiedWebhook:
    """Check a Standard Webhooks `v1a` signature with every still-valid inbound key."""
    keys = [k.inbound_public for k in rec.valid_keys(now_s * 1000, grace_s * 1000)]
    return webhooks.verify(headers, body, public_keys=keys, now=now_s, tolerance=tolerance_s)


def scoped_conversation_id(integration_id: str, supplied: str) -> str:
    """A customer's own conversation id, scoped to the customer integration:
    ``<integrationId>:<id>`` (kept as is when it already is). Two tenants that both number
    their conversations from 1 never share one, and nobody can claim another's id."""
    prefix = f"{integration_id}:"
    return supplied if supplied.startswith(prefix) else prefix + supplied


def normalize_direct(
    rec: IntegrationRecord, webhook_id: str, body: bytes, now_ms: int
) -> Activity:
    """Turn a verified Direct body into the canonical Activity with a stable id."""
    # `type` and the message's `type` in any case, stored in the canonical lower case.
    inbound = names.decode_folding(body, inbound_decoder, names.INBOUND_NAMES,
                                   invalid="invalid_activity")
    itype = rec.integration_type
    conversation = inbound.conversation_id
    if conversation is None:
        if itype is not IntegrationType.CUSTOMER:
            raise BadRequest(
                "missing_conversation",
                f"{itype.value} integrations must name the conversationId they answer",
                "conversationId",
            )
        conversation = customer_conversation_id(rec.integration_id, inbound.sender.id)
    elif itype is IntegrationType.CUSTOMER:
        conversation = scoped_conversation_id(rec.integration_id, conversation)
    return Activity(
        activity_id=activity_id(rec.integration_id, webhook_id),
        hub_id=rec.hub_id,
        integration_id=rec.integration_id,
        channel_id=rec.channel_id.value,
        type=f"message:{itype.value.lower()}",
        conversation_id=conversation,
        sender=inbound.sender,
        timestamp=now_ms,
        message=inbound.message,
        metadata=inbound.metadata,
    )
