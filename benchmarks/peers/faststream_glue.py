"""The Switchboard pipeline as the glue a user would otherwise write: FastStream + aiohttp.

A peer for ``benchmarks/peer_compare.py``: the same path as Switchboard's Direct
integrations (verify → Kafka → route → signed POST), written the straightforward,
idiomatic way with off-the-shelf parts, in one process:

- **ingress**: a Starlette app (served by uvicorn) with ``POST /ingress/{integration_id}``.
  It checks a Standard Webhooks ``v1a`` signature (Ed25519 with PyNaCl, over
  ``"{webhook-id}.{webhook-timestamp}.{raw body}"``, timestamp within 5 minutes), parses the
  JSON into a pydantic model, publishes a canonical activity to the ``activities`` topic
  with FastStream's ``KafkaBroker`` (``acks="all"``, the publish awaits the broker's
  confirmation) and answers ``202 {"activityId"}``;
- **router**: a FastStream subscriber on ``activities`` (consumer group ``router``) that
  looks up the agent destinations of the sending customer integration in an in-memory dict
  and publishes one delivery per destination to ``deliveries``;
- **deliverer**: a FastStream subscriber on ``deliveries`` (consumer group ``deliverer``)
  that signs the body (Ed25519, Standard Webhooks headers) and POSTs it to the destination
  URL with one shared aiohttp ``ClientSession``, retrying a failed attempt a few times with
  a short backoff, then giving up with an error log.

Ids are stable as in Switchboard (activity id from integration + webhook-id, delivery id
from activity + destination, a customer's conversation id from integration + sender), keys
are the conversation (``activities``) and destination + conversation (``deliveries``), so a
conversation stays in order per partition.

What it does not do, compared with Switchboard (it is glue, not a product): no registry
(integrations come from a JSON file read at start), no rate limits, no delivery log, no
per-destination lanes, circuit breakers or parking (a failing endpoint holds up its
partition while it is retried), no dead-letter topic, and FastStream's default
acknowledgement (offsets auto-committed when a message is taken, so a crash can drop what
was in hand). Per-message access logs are at DEBUG (not emitted), as a service under load
would run; uvicorn runs as for the hub (one worker, uvloop, httptools, no access log).

    python benchmarks/peers/faststream_glue.py --config peer.json --port 8090 \\
        --bootstrap 127.0.0.1:9092 [--fetch-max-wait-ms 20] [--max-workers 1]

``peer.json``: ``{"topicPrefix": "", "partitions": 4, "integrations": [{"integrationId",
"hubId", "type": "Customer" | "Agent", "publicKey": "whpk_…" (verifies what it sends),
"signingKey": "whsk_…" (signs what it receives), "webhookUrl"}]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nacl.exceptions
import nacl.signing
import uvicorn
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.schemas import Topic
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("glue")

TOLERANCE_S = 300
MAX_BODY_BYTES = 256 * 1024
PUBLISH_TIMEOUT_S = 5.0
RETRY_BACKOFF_S = (0.5, 2.0, 5.0)  # waits before the 2nd, 3rd and 4th attempt
NAMESPACE = uuid.UUID("6f1c8a52-3c0e-4d8e-9a61-0b8f2f4b7d10")


# ---------------------------------------------------------------- messages


class Sender(BaseModel):
    id: str
    name: str | None = None


class Message(BaseModel):
    type: str = "text"
    text: str | None = None


class Inbound(BaseModel):
    """What a Direct integration posts."""

    type: str = "message"
    conversationId: str | None = None
    sender: Sender
    message: Message
    metadata: dict[str, str] = Field(default_factory=dict)


class Activity(BaseModel):
    """The canonical activity on the ``activities`` topic."""

    activityId: str
    hubId: str
    integrationId: str
    type: str
    conversationId: str
    sender: Sender
    message: Message
    metadata: dict[str, str] = Field(default_factory=dict)
    timestamp: int


class Delivery(BaseModel):
    """One activity for one destination, on the ``deliveries`` topic."""

    deliveryId: str
    destinationId: str
    activity: Activity


class Envelope(BaseModel):
    """The body a destination receives."""

    hubId: str
    integrationId: str
    conversationId: str
    activity: Activity


# ---------------------------------------------------------------- integrations


def _key_bytes(text: str, prefix: str) -> bytes:
    return base64.b64decode(text.removeprefix(prefix), validate=True)


@dataclass(frozen=True)
class Integration:
    integration_id: str
    hub_id: str
    type: str  # "Customer" | "Agent"
    verify_key: nacl.signing.VerifyKey  # checks what the integration sends us
    signing_key: nacl.signing.SigningKey  # signs what we deliver to it
    url: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Integration:
        return cls(d["integrationId"], d["hubId"], d["type"],
                   nacl.signing.VerifyKey(_key_bytes(d["publicKey"], "whpk_")),
                   nacl.signing.SigningKey(_key_bytes(d["signingKey"], "whsk_")[:32]),
                   d["webhookUrl"])


def verify_signature(integ: Integration, msg_id: str, timestamp: str, signature: str,
                     body: bytes) -> bool:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in signature.split():
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            integ.verify_key.verify(signed, base64.b64decode(value))
        except (nacl.exceptions.BadSignatureError, ValueError):
            continue
        return True
    return False


def sign_headers(integ: Integration, msg_id: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = integ.signing_key.sign(f"{msg_id}.{timestamp}.".encode() + body).signature
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp,
            "webhook-signature": "v1a," + base64.b64encode(signature).decode(),
            "content-type": "application/json"}


# ---------------------------------------------------------------- the app


def build(config: dict[str, Any], bootstrap: str, fetch_max_wait_ms: int,
          max_workers: int) -> Starlette:
    integrations = {d["integrationId"]: Integration.from_json(d)
                    for d in config["integrations"]}
    # Routing table: a customer integration's messages go to its hub's agent integrations.
    routes: dict[str, list[Integration]] = {
        i.integration_id: [a for a in integrations.values()
                           if a.type == "Agent" and a.hub_id == i.hub_id]
        for i in integrations.values() if i.type == "Customer"}
    prefix = config.get("topicPrefix", "")
    partitions = int(config.get("partitions", 4))
    activities_topic = prefix + "activities"
    deliveries_topic = prefix + "deliveries"

    broker = KafkaBroker(bootstrap, acks="all", log_level=logging.DEBUG)
    deliveries = broker.publisher(deliveries_topic)
    consumer_options: dict[str, Any] = {
        "auto_offset_reset": "earliest", "fetch_max_wait_ms": fetch_max_wait_ms,
        "max_workers": max_workers}
    session: aiohttp.ClientSession | None = None

    # ---- ingress
    async def ingress(request: Request) -> Response:
        integ = integrations.get(request.path_params["integration_id"])
        if integ is None:
            return JSONResponse({"error": "unknown integration"}, 404)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large"}, 413)
        msg_id = request.headers.get("webhook-id")
        timestamp = request.headers.get("webhook-timestamp")
        signature = request.headers.get("webhook-signature")
        if not msg_id or not timestamp or not signature:
            return JSONResponse({"error": "missing signature headers"}, 401)
        try:
            stale = abs(time.time() - int(timestamp)) > TOLERANCE_S
        except ValueError:
            stale = True
        if stale or not verify_signature(integ, msg_id, timestamp, signature, body):
            return JSONResponse({"error": "invalid signature"}, 401)
        try:
            inbound = Inbound.model_validate_json(body)
        except ValidationError as exc:
            return JSONResponse({"error": "invalid activity", "detail": str(exc)}, 400)
        conversation = inbound.conversationId
        if conversation is None:
            if integ.type != "Customer":
                return JSONResponse({"error": "conversationId required"}, 400)
            conversation = str(uuid.uuid5(NAMESPACE, f"{integ.integration_id}/{inbound.sender.id}"))
        activity = Activity(
            activityId=str(uuid.uuid5(NAMESPACE, f"{integ.integration_id}/{msg_id}")),
            hubId=integ.hub_id, integrationId=integ.integration_id,
            type=f"message:{integ.type.lower()}", conversationId=conversation,
            sender=inbound.sender, message=inbound.message, metadata=inbound.metadata,
            timestamp=int(time.time() * 1000))
        try:
            await asyncio.wait_for(
                broker.publish(activity, topic=activities_topic, key=conversation.encode()),
                PUBLISH_TIMEOUT_S)
        except (KafkaError, TimeoutError):
            log.exception("publish failed")
            return JSONResponse({"error": "broker unavailable"}, 503, {"Retry-After": "1"})
        return JSONResponse({"activityId": activity.activityId}, 202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # ---- router
    @broker.subscriber(Topic(activities_topic, num_partitions=partitions), group_id="router",
                       **consumer_options)
    async def route(activity: Activity) -> None:
        for dest in routes.get(activity.integrationId, ()):
            delivery_id = uuid.uuid5(NAMESPACE, f"{activity.activityId}/{dest.integration_id}")
            delivery = Delivery(deliveryId=str(delivery_id), destinationId=dest.integration_id,
                                activity=activity)
            await deliveries.publish(
                delivery, key=f"{dest.integration_id}/{activity.conversationId}".encode())

    # ---- deliverer
    @broker.subscriber(Topic(deliveries_topic, num_partitions=partitions), group_id="deliverer",
                       **consumer_options)
    async def deliver(delivery: Delivery) -> None:
        dest = integrations.get(delivery.destinationId)
        if dest is None:
            log.warning("delivery %s: unknown destination", delivery.deliveryId)
            return
        assert session is not None
        activity = delivery.activity
        body = Envelope(hubId=activity.hubId, integrationId=dest.integration_id,
                        conversationId=activity.conversationId,
                        activity=activity).model_dump_json().encode()
        for attempt in range(len(RETRY_BACKOFF_S) + 1):
            if attempt:
                await asyncio.sleep(RETRY_BACKOFF_S[attempt - 1])
            try:
                async with session.post(dest.url, data=body,
                                        headers=sign_headers(dest, delivery.deliveryId, body)
                                        ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return
                    if resp.status == 410:
                        log.warning("delivery %s: 410 Gone, dropped", delivery.deliveryId)
                        return
                    log.info("delivery %s: HTTP %s", delivery.deliveryId, resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("delivery %s: %r", delivery.deliveryId, exc)
        log.error("delivery %s: giving up after %d attempts", delivery.deliveryId,
                  len(RETRY_BACKOFF_S) + 1)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            session = s
            await broker.start()
            try:
                yield
            finally:
                await broker.stop()

    return Starlette(routes=[Route("/ingress/{integration_id}", ingress, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=500,
                        help="consumer fetch wait (FastStream's default 500; Tansu always "
                             "waits it out, so use what Switchboard uses there: 20)")
    parser.add_argument("--max-workers", type=int, default=1,
                        help="FastStream max_workers per subscriber (default 1: in order)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build(json.loads(args.config.read_text()), args.bootstrap, args.fetch_max_wait_ms,
                args.max_workers)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
