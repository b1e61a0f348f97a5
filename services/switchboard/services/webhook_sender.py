"""Signed webhook deliveries to Direct and System integrations (Standard Webhooks)."""

from __future__ import annotations

import logging
import time

import msgspec

from switchboard import hubster_signature
from switchboard.errors import SwitchboardError
from switchboard.hubster_signature import HubsterKeyPair
from switchboard.model import ChannelId, Delivery, DirectEnvelope, SystemEnvelope
from switchboard.outbound import SKIPPED, Attempt
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome, classify_status, parse_retry_after
from switchboard.sealer import Sealer
from switchboard.sealing import open_hmac_secret, open_hubster_secret, open_outbound_secret
from switchboard.services.http_client import HttpClient, HttpError
from switchboard.webhooks import Signer

__all__ = ["USER_AGENT", "WebhookSender", "envelope"]

log = logging.getLogger(__name__)

USER_AGENT = "Switchboard/0.1"
# Read this much of an answer so the connection is kept alive for the next delivery; a
# longer (maybe endless, hostile) body just closes that connection.
RESPONSE_DRAIN_BYTES = 64 * 1024
# Parsed signers kept per set of sealed secrets; a key rotation simply makes a new entry.
SIGNER_CACHE_SIZE = 1024

# Built once: msgspec encoders are reusable and cheap to call, not to build.
_json = msgspec.json.Encoder()


class WebhookSender:
    """POSTs Standard Webhooks signed JSON to a Direct or System integration's webhookUrl."""

    def __init__(self, http: HttpClient, sealer: Sealer, *, key_grace_s: float) -> None:
        self._http = http
        self._sealer = sealer
        self._grace_ms = int(key_grace_s * 1000)
        self._signers: dict[tuple[tuple[str, str | None, str | None], ...],
                            tuple[Signer, HubsterKeyPair | None]] = {}

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        url = destination.webhook_url
        if url is None:
            # A Direct integration without a webhook is served over its websocket by the
            # stream gateway; nothing for us to do.
            return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)
        body = envelope(delivery, destination)
        now = time.time()
        try:
            signer, hubster = self._signer(destination, int(now * 1000))
        except (SwitchboardError, ValueError) as exc:
            # Unseal or key parse failure. Log the type only: nothing about the key.
            log.error("delivery %s: signing key of %s unusable (%s)",
                      delivery.delivery_id, destination.integration_id, type(exc).__name__)
            return Attempt(outcome=Outcome.RETRY, reason="signing_key_invalid")
        if signer is None:
            return Attempt(outcome=Outcome.RETRY, reason="no_signing_key")
        timestamp = int(now)
        try:
            signature = signer.sign(delivery.delivery_id, timestamp, body)
        except ValueError:  # a delivery id no receiver could accept as webhook-id
            return Attempt(outcome=Outcome.PERMANENT, reason="invalid_delivery_id")
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        if hubster is not None:
            # Hubster's receivers verify these; they sign no timestamp (no replay window),
            # the Standard Webhooks headers above do.
            headers.update(hubster_signature.headers(hubster, body))
        try:
            answer = await self._http.request("POST", url, content=body, headers=headers,
                                              read_cap=RESPONSE_DRAIN_BYTES)
        except HttpError as exc:
            # A forbidden address or an unusable URL will not get better by retrying.
            permanent = exc.reason in ("destination_forbidden", "invalid_url")
            return Attempt(outcome=Outcome.PERMANENT if permanent else Outcome.RETRY,
                           reason=exc.reason)
        status = answer.status_code
        return Attempt(
            outcome=classify_status(status), status=status,
            retry_after=parse_retry_after(answer.headers.get("retry-after"), time.time()),
            reason="gone" if status == 410 else f"http_{status}",
            response=answer.content[:1024])

    def _signer(self, destination: IntegrationRecord, now_ms: int
                ) -> tuple[Signer | None, HubsterKeyPair | None]:
        # Every valid key signs: during the rotation grace window a delivery carries the
        # old and the new signature, so receivers can switch keys at their own pace.
        # Hubster's headers hold one signature: the current key's, named by its public key.
        keys = destination.valid_keys(now_ms, self._grace_ms)
        if not keys:
            return None, None
        cache_key = tuple((k.outbound_secret_sealed, k.hmac_secret_sealed,
                           k.hubster_secret_sealed) for k in keys)
        cached = self._signers.get(cache_key)
        if cached is None:
            iid = destination.integration_id
            secrets = [open_outbound_secret(self._sealer, iid, k) for k in keys]
            hmacs = [h for k in keys if (h := open_hmac_secret(self._sealer, iid, k))]
            cached = (Signer(ed25519=secrets, hmac=hmacs),
                      open_hubster_secret(self._sealer, iid, keys[0]))
            if len(self._signers) >= SIGNER_CACHE_SIZE:
                self._signers.pop(next(iter(self._signers)))
            self._signers[cache_key] = cached
        return cached


def envelope(delivery: Delivery, destination: IntegrationRecord) -> bytes:
    """The JSON body a webhook destination receives."""
    if destination.channel_id is ChannelId.SYSTEM:
        return _json.encode(SystemEnvelope(
            hub_id=delivery.hub_id,
            integration_id=destination.integration_id,
            conversation_id=delivery.conversation_id,
            activities=[delivery.activity],
        ))
    return _json.encode(DirectEnvelope(
        hub_id=delivery.hub_id,
        integration_id=destination.integration_id,
        conversation_id=delivery.conversation_id,
        activity=delivery.activity,
    ))
