"""Ingress: verify a signed webhook, normalize it, write it to Kafka, then acknowledge.

Acked means durable: the 202 is sent only after the activity is on the `activities` topic
with acks=all; if the broker cannot take it in time the caller gets 503 + Retry-After.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from switchboard import inbound
from switchboard.errors import (
    Conflict,
    NotFound,
    RequestTimeout,
    SwitchboardError,
    TooManyRequests,
    Unauthorized,
)
from switchboard.logfmt import LOG_CONTEXT
from switchboard.model import Activity, ChannelId
from switchboard.ratelimit import RateLimiter
from switchboard.registry import IntegrationRecord
from switchboard.routing import answerable
from switchboard.services.channels.base import ChannelPlugin, authenticated
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
        # Per integration, authenticated requests only: one noisy sender cannot starve the
        # others, and nobody can spend an integration's budget without its secret.
        self._limiter = RateLimiter(s.ingress_rate_per_s, s.ingress_burst)
        # Per client address, requests that fail authentication.
        self._unverified = RateLimiter(s.ingress_unverified_rate_per_s,
                                       s.ingress_unverified_burst)
        self._tracing = runtime.tracing  # None: tracing off

    def routes(self) -> list[BaseRoute]:
        # Provider app-level routes (/ingress/slack, /ingress/meta) first: they would
        # otherwise match /ingress/{integrationId}.
        own: list[BaseRoute] = [
            Route("/ingress/{integrationId}", self.receive, methods=["POST"]),
            # Channels whose webhooks carry no signature (Syncro): a secret in the URL.
            Route("/ingress/{integrationId}/{secret}", self.receive, methods=["POST"])]
        return [self._guarded(r, p.channel.value)
                for p in self.plugins.values() for r in p.routes()] + own

    def _guarded(self, route: BaseRoute, channel: str) -> BaseRoute:
        """A provider app-level route (/ingress/slack, /ingress/meta) under the same
        per-address budget as `handle`: an address over it gets 429 before any work, and a
        request refused before its signature is verified (`verified`) is charged to it."""
        if not isinstance(route, Route):
            return route
        endpoint = route.endpoint

        async def guarded(request: Request) -> Response:
            request.state.channel = channel
            try:
                client = self._admit(request)
            except SwitchboardError as exc:
                self._count(request, exc.status)
                raise
            request.state.authenticated = False
            try:
                response: Response = await endpoint(request)
            except SwitchboardError as exc:
                self._count(request, exc.status)
                if not request.state.authenticated and exc.status < 500:
                    self._unverified.take(client, time.monotonic())
                    self.runtime.metrics.signature_failures.labels(exc.code).inc()
                raise
            self._count(request, response.status_code)
            return response

        return Route(route.path, guarded, methods=list(route.methods or ()), name=route.name)

    def _admit(self, request: Request) -> str:
        """The client address, unless it is over its budget of unauthenticated requests
        (429 before any work)."""
        client = request.client.host if request.client else ""
        wait = self._unverified.peek(client, time.monotonic())
        if wait is not None:
            self.runtime.metrics.rate_limited.labels("address").inc()
            raise TooManyRequests("rate_limited", "too many unauthenticated requests from "
                                  "this address; slow down", retry_after=max(1, math.ceil(wait)))
        return client

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
        """Authenticate, then rate-limit, then accept.

        Before the request is authenticated (its signature checked against the
        integration's own secret) every refusal is the same 401: an unknown, paused or
        System/WebChat integration, the wrong channel's format, a bad header or signature
        all look alike, and each is charged to the client address's bucket, not to the
        integration's. Only an authenticated request spends the integration's budget (429)
        or learns that the integration is paused (409).
        """
        if self._tracing is not None:
            return await self._traced(request, integration_id)
        try:
            response = await self._handle(request, integration_id)
        except SwitchboardError as exc:
            self._count(request, exc.status)
            raise
        self._count(request, response.status_code)
        return response

    async def _traced(self, request: Request, integration_id: str) -> Response:
        """`handle` with a server span, started once the request is authenticated."""
        assert self._tracing is not None
        route = ROUTE_WITH_CAPABILITY if "secret" in request.path_params else ROUTE
        trace = request.state.trace = self._tracing.ingress(
            route, request.headers.get("traceparent"))
        status = 500
        try:
            response = await self._handle(request, integration_id)
            status = response.status_code
        except SwitchboardError as exc:
            status = exc.status
            self._count(request, status)
            raise
        finally:
            trace.finish(status)
        self._count(request, status)
        return response

    def _count(self, request: Request, status: int) -> None:
        channel = getattr(request.state, "channel", "unknown")
        self.runtime.metrics.ingress_requests.labels(channel, str(status)).inc()

    async def _handle(self, request: Request, integration_id: str) -> Response:
        settings = self.runtime.settings
        inbound.check_content_length(request.headers.get("content-length"),
                                     settings.max_body_bytes)
        client = self._admit(request)
        rec = await self.runtime.registry.lookup_integration(integration_id)
        if rec is not None:
            request.state.channel = rec.channel_id.value
            LOG_CONTEXT.set({"hubId": rec.hub_id, "integrationId": rec.integration_id})
        request.state.authenticated = False
        request.state.on_authenticated = self._on_authenticated(request)
        try:
            if rec is None:
                raise NotFound("integration_not_found", "no such integration")
            if rec.channel_id is ChannelId.DIRECT:
                if "secret" in request.path_params:
                    raise NotFound("not_ingestible", "no secret URL for this integration")
                return await self._direct(request, rec)
            plugin = self.plugins.get(rec.channel_id)
            if plugin is None:
                raise NotFound("not_ingestible",
                               f"{rec.channel_id.value} integrations do not accept webhooks")
            if "secret" in request.path_params and not plugin.path_secret:
                raise NotFound("not_ingestible", "no secret URL for this integration")
            return await plugin.inbound(request, rec)
        except SwitchboardError as exc:
            if request.state.authenticated:
                raise
            self._unverified.take(client, time.monotonic())
            self.runtime.metrics.signature_failures.labels(exc.code).inc()
            # Ours to fix (a stored secret that does not open: tampered with, moved from
            # another record, or sealed under a key no longer configured): say so.
            log.log(logging.ERROR if exc.status >= 500 else logging.DEBUG,
                    "ingress: %s refused before authentication: %s", integration_id, exc.code)
            if isinstance(exc, RequestTimeout):
                # The client's own slowness, not a verdict on the integration (its timing
                # shows a body was awaited either way): 408, and the connection closed.
                raise
            raise Unauthorized("unauthenticated", UNAUTHENTICATED) from None

    def _on_authenticated(self, request: Request) -> Callable[[IntegrationRecord], None]:
        def hook(rec: IntegrationRecord) -> None:
            request.state.authenticated = True
            if self._tracing is not None:
                request.state.trace.authenticated(rec)
            if not rec.active:
                raise Conflict("integration_paused", "the integration is paused")
            limit(self._limiter, rec.integration_id, "integration", self.runtime.metrics)
        return hook

    async def _direct(self, request: Request, rec: IntegrationRecord) -> Response:
        settings = self.runtime.settings
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
        authenticated(request, rec)
        activity = inbound.normalize_direct(rec, verified.id, body, int(now * 1000))
        await self._check_conversation(activity)
        await self.runtime.publish(activity)
        return JSON({"activityId": activity.activity_id}, status_code=202)


    async def _check_conversation(self, activity: Activity) -> None:
        """An agent's or bot's answer must name an existing conversation of its hub: else
        404 `conversation_not_found` (the router would route it to no customer).

        The router writes a conversation durably before any delivery of it, so a
        conversation id an agent has seen is on the topic. This process's view may lag
        that write (another process's router, a moment ago): a miss waits for the view
        to reach the topic's end, then looks again (503 if the broker cannot say).
        """
        store = self.runtime.conversations
        if answerable(activity, store.get(activity.conversation_id)):
            return
        await store.sync()
        if not answerable(activity, store.get(activity.conversation_id)):
            # Another hub's conversation is indistinguishable from a missing one.
            raise NotFound("conversation_not_found",
                           "no such conversation in this hub (it may have ended)",
                           "conversationId")


UNAUTHENTICATED = ("no active integration here accepts this request: the integration is "
                   "unknown, paused or of another channel, or the request is not signed by it")


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
# The routes a server span names (the template: never the secret in a Syncro URL).
ROUTE = "/ingress/{integrationId}"
ROUTE_WITH_CAPABILITY = "/ingress/{integrationId}/{secret}"
