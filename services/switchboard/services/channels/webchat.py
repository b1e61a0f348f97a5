"""WebChat channel: the hub serves the widget and is its websocket gateway.

Routes (mounted with the ingress, which also runs the gateway):

- ``GET /webchat/{integrationId}``: a page to try the widget;
- ``GET /webchat/{integrationId}/widget.js``: the script a site embeds;
- ``GET /webchat/{integrationId}/ws``: the widget's websocket (`webchat_gateway`; frames:
  `switchboard.providers.webchat`).
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import logging
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from switchboard.errors import NotFound
from switchboard.model import ChannelId, Delivery
from switchboard.outbound import SKIPPED, Attempt
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.channels.webchat_gateway import WebChatGateway
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

_ASSETS = importlib.resources.files(__package__) / "webchat_assets"
_PLACEHOLDER = re.compile(r"\{\{(title|integrationId|widgetUrl)\}\}")


@functools.cache
def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


class _GatewayServed:
    """The deliverer's sender for WebChat: the gateway serves these, nothing to send."""

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)


class WebChatPlugin(ChannelPlugin):
    channel = ChannelId.WEBCHAT

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.gateway = WebChatGateway(runtime)
        self._sender = _GatewayServed()

    @property
    def sender(self) -> _GatewayServed:
        return self._sender

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/webchat/{integrationId}", self.page, methods=["GET"]),
            Route("/webchat/{integrationId}/widget.js", self.widget, methods=["GET"]),
            WebSocketRoute("/webchat/{integrationId}/ws", self.gateway.endpoint),
        ]

    async def start(self) -> None:
        await self.gateway.start()

    async def stop(self) -> None:
        await self.gateway.stop()

    async def _webchat(self, request: Request) -> IntegrationRecord:
        iid = request.path_params["integrationId"]
        rec = await self.runtime.registry.lookup_integration(iid)
        if rec is None or rec.channel_id is not ChannelId.WEBCHAT:
            raise NotFound("integration_not_found", f"no web chat {iid}")
        return rec

    async def page(self, request: Request) -> Response:
        """A page that runs the widget full-window: to try an integration out."""
        rec = await self._webchat(request)
        values = {
            "title": rec.name,
            "integrationId": rec.integration_id,
            "widgetUrl": (f"{self.runtime.settings.public_url.rstrip('/')}"
                          f"/webchat/{rec.integration_id}/widget.js"),
        }
        body = _PLACEHOLDER.sub(lambda m: html.escape(values[m.group(1)]), _asset("page.html"))
        return Response(body, media_type="text/html; charset=utf-8", headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                "default-src 'none'; script-src 'self'; connect-src 'self'; "
                "style-src 'unsafe-inline'; img-src https: http: data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })

    async def widget(self, request: Request) -> Response:
        """The embeddable script; it finds the hub and the integration from its own URL."""
        await self._webchat(request)
        return Response(_asset("widget.js"), media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=300",
                                 "X-Content-Type-Options": "nosniff",
                                 "Cross-Origin-Resource-Policy": "cross-origin"})
