"""What a provider channel plugs into: provisioning, inbound webhooks, outbound sends.

A channel is one class. The API calls `provision` when an integration is created; the
ingress mounts `routes()` (app-level provider endpoints such as ``/ingress/slack``) and
hands ``POST /ingress/{integrationId}`` for the channel's integrations to `inbound`; the
deliverer calls `sender` for deliveries to them. Verification, normalization and
provider wire formats stay pure functions in `switchboard.providers.*`.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from switchboard.channels import ChannelConfig
from switchboard.errors import NotFound
from switchboard.model import ChannelId
from switchboard.outbound import Sender
from switchboard.registry import IntegrationRecord
from switchboard.services.runtime import Runtime


class ChannelPlugin:
    """Defaults: nothing to provision, no own routes, no inbound, no sender."""

    channel: ClassVar[ChannelId]

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def sender(self) -> Sender | None:
        """Sends deliveries to this channel's integrations (None: not deliverable)."""
        return None

    def routes(self) -> list[BaseRoute]:
        """App-level provider endpoints, mounted by the ingress service."""
        return []

    async def inbound(self, request: Request, rec: IntegrationRecord) -> Response:
        """Handle ``POST /ingress/{integrationId}`` for one of this channel's integrations."""
        raise NotFound("not_ingestible",
                       f"{self.channel.value} integrations do not accept webhooks here")

    async def provision(self, integration_id: str, config: ChannelConfig) -> ChannelConfig:
        """Complete a new integration's configuration with the provider (BadRequest if the
        provider refuses the credentials); runs before anything is stored."""
        return config

    async def deprovision(self, rec: IntegrationRecord) -> None:
        """Undo the provider-side wiring of a deleted integration (best effort: the API
        deletes anyway and logs a failure here)."""

    async def start(self) -> None:
        """Start background work (gateways); called by the ingress service."""

    async def stop(self) -> None:
        """Stop what `start` started."""
