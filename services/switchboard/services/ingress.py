"""Ingress: verify a signed webhook, normalize it, write it to Kafka, then acknowledge.

Acked means durable: the 202 is sent only after the activity is on the `activities` topic
with acks=all; if the broker cannot take it in time the caller gets 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import inbound
from switchboard.errors import Unavailable
from switchboard.kafka import ACTIVITIES
from switchboard.model import Activity, activity_encoder
from switchboard.services.http import JSON, read_body
from switchboard.services.runtime import Runtime


class Ingress:
    """`POST /ingress/{integrationId}`: signed activities from Direct integrations."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._topic = runtime.settings.topic(ACTIVITIES)

    def routes(self) -> list[Route]:
        return [Route("/ingress/{integrationId}", self.receive, methods=["POST"])]

    async def receive(self, request: Request) -> Response:
        settings = self.runtime.settings
        integration_id = request.path_params["integrationId"]
        inbound.check_content_length(request.headers.get("content-length"),
                                     settings.max_body_bytes)
        inbound.check_json_content_type(request.headers.get("content-type"))
        rec = inbound.check_ingestible(
            await self.runtime.registry.lookup_integration(integration_id), integration_id
        )
        body = await read_body(request, settings.max_body_bytes)
        now = time.time()
        verified = inbound.verify_direct(
            rec,
            request.headers,
            body,
            now_s=int(now),
            grace_s=settings.key_grace_s,
            tolerance_s=settings.timestamp_tolerance_s,
        )
        activity = inbound.normalize_direct(rec, verified.id, body, int(now * 1000))
        await self.publish(activity)
        return JSON({"activityId": activity.activity_id}, status_code=202)

    async def publish(self, activity: Activity) -> None:
        """Write `activity` keyed by conversation; return only once it is durable."""
        try:
            async with asyncio.timeout(self.runtime.settings.produce_timeout_s):
                await self.runtime.producer.send_and_wait(
                    self._topic,
                    activity_encoder.encode(activity),
                    key=activity.conversation_id.encode(),
                )
        except Exception as exc:  # KafkaError, TimeoutError: either way not durable
            raise Unavailable("broker_unavailable", "could not store the activity; retry") from exc
