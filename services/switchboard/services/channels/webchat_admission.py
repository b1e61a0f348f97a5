"""Who may hold a WebChat socket: `refusal` says whether an integration, as the registry
has it now, refuses a socket (checked at admission and again while the socket lives), and
`SocketLimits` counts the sockets a gateway holds per integration and per client address
and rate-limits new visitors (see `webchat_gateway` for the limits and close codes).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from starlette.websockets import WebSocket

from switchboard.channels import WebChatConfig
from switchboard.model import ChannelId
from switchboard.providers import webchat as wc
from switchboard.registry import IntegrationRecord
from switchboard.services.channels.webchat_feed import Visitor
from switchboard.services.stream_protocol import CLOSE_NOT_FOUND, CLOSE_TOO_MANY
from switchboard.settings import Settings
from switchboard.socket_policy import SocketCounter, VisitorLimits, address_key

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_PAUSED", "Refusal", "SocketLimits", "refusal"]

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_PAUSED = 4409


class Refusal(NamedTuple):
    code: int
    reason: str


def refusal(rec: IntegrationRecord | None, origin: str | None,
            own_origins: list[str]) -> Refusal | None:
    """Whether the integration as the registry says now refuses this socket."""
    if rec is None or rec.channel_id is not ChannelId.WEBCHAT or not isinstance(
            rec.configuration, WebChatConfig):
        return Refusal(CLOSE_NOT_FOUND, "unknown web chat")
    if not wc.origin_allowed(origin, rec.configuration.allowed_origins, own_origins):
        return Refusal(CLOSE_FORBIDDEN, "origin not allowed")
    if not rec.active:
        return Refusal(CLOSE_PAUSED, "web chat paused")
    return None


class SocketLimits:
    """The visitor sockets of one gateway (`live`, by integration) and their limits.

    Keyed by what a client cannot choose (its address, the integration), never by what
    it sends: anyone may open a socket.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.live: dict[str, set[Visitor]] = {}
        self._per_address = SocketCounter(settings.webchat_max_sockets_per_address)
        self._visitors = VisitorLimits(
            per_address_rate=settings.webchat_visitor_rate_per_address_per_s,
            per_address_burst=settings.webchat_visitor_burst_per_address,
            per_integration_rate=settings.webchat_visitor_rate_per_integration_per_s,
            per_integration_burst=settings.webchat_visitor_burst_per_integration)

    def connection_count(self, integration_id: str) -> int:
        return len(self.live.get(integration_id, ()))

    def address_connection_count(self, host: str) -> int:
        return self._per_address.count(address_key(host))

    def total(self) -> int:
        return sum(map(len, self.live.values()))

    def admit(self, ws: WebSocket, integration_id: str, hub_id: str,
              origin: str) -> Visitor | Refusal:
        """A socket of an integration that accepts it: counted, unless one limit is full."""
        live = self.live.get(integration_id, set())
        if len(live) >= self._settings.webchat_max_sockets_per_integration:
            return Refusal(CLOSE_TOO_MANY, "too many visitors connected")
        address = address_key(ws.client.host if ws.client else None)
        if not self._per_address.acquire(address):
            log.info("webchat %s: too many sockets from one address", integration_id)
            return Refusal(CLOSE_TOO_MANY, "too many sockets from this address")
        v = Visitor(ws, integration_id, hub_id, origin, address)
        self.live.setdefault(integration_id, set()).add(v)
        return v

    def release(self, v: Visitor) -> None:
        live = self.live.get(v.integration_id)
        if live is not None:
            live.discard(v)
            if not live:
                del self.live[v.integration_id]
        self._per_address.release(v.address)

    def new_visitor(self, v: Visitor, now: float) -> float | None:
        """Charge a new visitor (what creates a conversation) to its address and
        integration: None if allowed, else the seconds to wait."""
        return self._visitors.new_visitor(v.address, v.integration_id, now)
