"""Syncro channel (Agent): the I/O shell around `switchboard.providers.syncro*`.

- `provision`: checks the API token with Syncro (``GET /me``; 400 with Syncro's words,
  503 when unreachable) and makes the secret of the integration's inbound URL.
- `inbound`: ``POST /ingress/{integrationId}/{secret}`` from Syncro's Notification
  Center: the secret compared in constant time (Syncro signs nothing), then the webhook
  becomes an event activity (``syncro:ticket.updated``, …), durable before the answer.
- `regenerate`: ``regenerateKeys`` makes a new inbound secret; `rotate_credentials`
  checks a new API token with Syncro.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchboard import clock
from switchboard import inbound as inbound_checks
from switchboard.channels import ChannelConfig, SyncroConfig
from switchboard.errors import Unauthorized
from switchboard.keys import tokens_equal
from switchboard.model import ChannelId
from switchboard.providers import syncro_webhooks
from switchboard.registry import IntegrationRecord
from switchboard.routing import matches_filter
from switchboard.sealing import open_config_secret
from switchboard.services.channels.base import ChannelPlugin, authenticated
from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.channels.syncro_sync import SyncroSender, TicketSync
from switchboard.services.http import JSON, read_body
from switchboard.services.runtime import Runtime
from switchboard.services.sync_webhooks import on_syncro_customer

TOKEN_FIELD = "configuration.apiToken"  # noqa: S105 (a field name)


def new_inbound_secret() -> str:
    """256 random bits, URL-safe: the last segment of the inbound URL."""
    return secrets.token_urlsafe(32)


def inbound_url(public_url: str, integration_id: str, secret: str) -> str:
    return f"{public_url.rstrip('/')}/ingress/{integration_id}/{secret}"


class SyncroPlugin(ChannelPlugin):
    channel = ChannelId.SYNCRO
    path_secret = True
    rotatable = ("api_token",)

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.client = SyncroClient(runtime)
        # Tickets ⇄ conversations (syncro_sync): customer messages out, comments back.
        self.tickets = TicketSync(runtime)
        self._sender = SyncroSender(runtime, self.client, self.tickets)

    @property
    def sender(self) -> SyncroSender:
        return self._sender

    # ---- provisioning ------------------------------------------------------------

    async def provision(self, integration_id: str, config: ChannelConfig) -> ChannelConfig:
        assert isinstance(config, SyncroConfig)
        user = await self.client.me(config.subdomain, config.api_token, field=TOKEN_FIELD)
        return msgspec.structs.replace(config, user_name=user or None,
                                       inbound_secret=new_inbound_secret())

    def reveal(self, integration_id: str, config: ChannelConfig) -> dict[str, str]:
        if not isinstance(config, SyncroConfig) or config.inbound_secret is None:
            return {}
        return {"inboundSecret": config.inbound_secret,
                "inboundUrl": inbound_url(self.runtime.settings.public_url, integration_id,
                                          config.inbound_secret)}

    def regenerate(self, rec: IntegrationRecord) -> dict[str, str]:
        return {"inbound_secret": new_inbound_secret()}

    async def rotate_credentials(self, rec: IntegrationRecord, given: dict[str, str]
                                 ) -> dict[str, str]:
        """A new API token must work on the integration's own account (its subdomain)."""
        config = rec.configuration
        assert isinstance(config, SyncroConfig)
        if "api_token" in given:
            await self.client.me(config.subdomain, given["api_token"], field=TOKEN_FIELD)
        return given

    # ---- inbound -------------------------------------------------------------------

    async def inbound(self, request: Request, rec: IntegrationRecord) -> Response:
        cfg = rec.configuration
        assert isinstance(cfg, SyncroConfig)
        given = request.path_params.get("secret")
        stored = open_config_secret(self.runtime.sealer, rec, "inbound_secret")
        if not isinstance(given, str) or stored is None or not tokens_equal(given, stored):
            # Missing or wrong: the ingress answers its one pre-authentication 401.
            raise Unauthorized("unauthenticated", "wrong inbound secret")
        authenticated(request, rec)
        inbound_checks.check_json_content_type(request.headers.get("content-type"))
        body = await read_body(request, self.runtime.settings.max_body_bytes)
        hook = syncro_webhooks.parse_webhook(body)
        now_ms = clock.now_ms()
        activity = syncro_webhooks.normalize(
            hook, hub_id=rec.hub_id, integration_id=rec.integration_id,
            subdomain=cfg.subdomain, now_ms=now_ms)
        # Whatever `events` lets through: a technician's comment reaches the customer.
        await self.tickets.on_webhook(rec, hook, now_ms)
        if syncro_webhooks.event_type(hook) == "syncro:customer.created":
            # A new customer: an incremental run of the sync profiles on this account.
            await on_syncro_customer(self.runtime, rec.hub_id, rec.integration_id,
                                     cfg.subdomain)
        if activity is None or not matches_filter(activity.type, cfg.events):
            # Acknowledged, so Syncro does not retry what the integration does not take.
            out: dict[str, Any] = {"activityId": None, "accepted": False}
            return JSON(out)
        await self.runtime.publish(activity)
        return JSON({"activityId": activity.activity_id, "accepted": True})
