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
from switchboard.errors import BadRequest, NotFound
from switchboard.model import ChannelId
from switchboard.outbound import Sender
from switchboard.registry import IntegrationRecord
from switchboard.services.runtime import Runtime


def authenticated(request: Request, rec: IntegrationRecord) -> None:
    """Say that `request` is proven to come from `rec`'s provider (signature checked).

    Call it in `ChannelPlugin.inbound` right after verification, before anything is
    written: the ingress then charges the integration's rate limit (429) and refuses a
    paused integration (409). Until then every refusal looks the same to the caller.
    """
    hook = getattr(request.state, "on_authenticated", None)
    if hook is not None:
        hook(rec)


def verified(request: Request) -> None:
    """Say that a request to an app-level route (`ChannelPlugin.routes`) carries a valid
    provider signature: refusals after this are not charged to the client address's budget
    of unauthenticated requests."""
    request.state.authenticated = True


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

    # Configuration fields (Python names) an update may replace: provider credentials.
    rotatable: ClassVar[tuple[str, ...]] = ()
    # Webhooks come to ``/ingress/{integrationId}/{secret}`` (the secret is the proof).
    path_secret: ClassVar[bool] = False

    def reveal(self, integration_id: str, config: ChannelConfig) -> dict[str, str]:
        """What a create (or `regenerate`) answer shows once of `config`, whose secrets
        are still plaintext here (an inbound URL with its secret): wire name → value."""
        return {}

    def regenerate(self, rec: IntegrationRecord) -> dict[str, str]:
        """Fresh plaintext secrets (Python field names) for ``regenerateKeys`` on an update;
        empty: the channel has none of its own."""
        return {}

    async def rotate_credentials(self, rec: IntegrationRecord, given: dict[str, str]
                                 ) -> dict[str, str]:
        """Check new plaintext credentials (`given`, a subset of `rotatable`) with the
        provider before they replace the stored ones; returns what to store (BadRequest if
        the provider refuses them or they belong to another account, page or workspace)."""
        raise BadRequest("not_rotatable",
                         f"{self.channel.value} credentials cannot be replaced",
                         "configuration")

    async def deprovision(self, rec: IntegrationRecord) -> None:
        """Undo the provider-side wiring of a deleted integration (best effort: the API
        deletes anyway and logs a failure here)."""

    async def start(self) -> None:
        """Start background work (gateways); called by the ingress service."""

    async def stop(self) -> None:
        """Stop what `start` started."""
