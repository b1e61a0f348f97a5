"""Ingress: verify a signed webhook, normalize it, write it to Kafka, then acknowledge.

Acked means durable: the 202 is sent only after the activity is on the `activities` topic
with acks=all; if the broker cannot take it in time the caller gets 503 + Retry-After.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from switchboard import inbound
from switchboard.errors import NotFound, SwitchboardError
from switchboard.model import ChannelId
from switchboard.ratelimit import RateLimiter
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.http import JSON, error_response, limit, read_body
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)


class Ingress:
    """`POST /ingress/{integrationId}`: Direct integrations' signed activities here, other
    channels' webhooks handed to their plugin; plus the plugins' app-level routes."""

    def __init__(self, runtime: Runtime, plugins: Mapping[ChannelId, ChannelPlugin]) -> None:
        self.runtime = runtime
        self.plugins = plugins
        s = runtime.settings
        # Per integration: one noisy or hostile sender cannot starve the others.
        self._limiter = RateLimiter(s.ingress_rate_per_s, s.ingress_burst)

    def routes(self) -> list[BaseRoute]:
        # Provider app-level routes (/ingress/slack, /ingress/meta) first: they would
        # otherwise match /ingress/{integrationId}.
        own: list[BaseRoute] = [
            Route("/ingress/{integrationId}", self.receive, methods=["POST"])]
        return [r for p in self.plugins.values() for r in p.routes()] + own

    async def receive(self, request: Request) -> Response:
        return await self.handle(request, request.path_params["integrationId"])

    def fast_path(self) -> FastPath:
        """`POST /ingress/{integrationId}` straight to `handle`, past Starlette's router
        and middleware stack (about a sixth of the ingress's CPU per request); every other
        request, and the provider app-level routes, go through the app as before."""
        literal = frozenset(getattr(r, "path", "") for r in self.routes()
                            if "{" not in getattr(r, "path", "{"))
        return FastPath(self, literal)

    async def handle(self, request: Request, integration_id: str) -> Response:
        settings = self.runtime.settings
        inbound.check_content_length(request.headers.get("content-length"),
                                     settings.max_body_bytes)
        rec = inbound.check_active(
            await self.runtime.registry.lookup_integration(integration_id), integration_id
        )
        limit(self._limiter, rec.integration_id, "integration")
        if rec.channel_id is not ChannelId.DIRECT:
            plugin = self.plugins.get(rec.channel_id)
            if plugin is None:
                raise NotFound("not_ingestible",
                               f"{rec.channel_id.value} integrations do not accept webhooks")
            return await plugin.inbound(request, rec)
        inbound.check_json_content_type(request.headers.get("content-type"))
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
        await self.runtime.publish(activity)
        return JSON({"activityId": activity.activity_id}, status_code=202)


class FastPath:
    """Matches the ingress's hottest request; `handle` answers it or says no."""

    def __init__(self, ingress: Ingress, literal_paths: frozenset[str]) -> None:
        self._ingress = ingress
        self._literal = literal_paths

    def integration_id(self, scope: Scope) -> str | None:
        """The integration id if `scope` is `POST /ingress/{id}` and nothing else."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX) or path in self._literal:
            return None
        ident = path[len(PREFIX):]
        return ident if ident and "/" not in ident else None

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     integration_id: str) -> None:
        request = Request(scope, receive)
        try:
            response = await self._ingress.handle(request, integration_id)
        except SwitchboardError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = JSON({"status": 500, "errors": [
                {"code": "internal_error", "description": "internal error"}]}, status_code=500)
        await response(scope, receive, send)


PREFIX = "/ingress/"
