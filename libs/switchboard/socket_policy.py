"""Pure decisions for the websocket gateways (WebChat, stream): who may open a socket, who
may become a new visitor, and where a history replay may start.

Nothing here trusts what a client says about itself: the Origin header and every frame
field can be forged, so limits are keyed by the client's network address (as the server
saw it, or as a trusted proxy named it), by integration and by hub. The clock is passed in.
"""

from __future__ import annotations

import ipaddress

from switchboard.ratelimit import RateLimiter

# An IPv6 client usually holds a whole /64: count it as one address.
IPV6_PREFIX = 64


def address_key(host: str | None) -> str:
    """The key a client address is counted under: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]  # a unix socket path or a name: count it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class SocketCounter:
    """Open sockets per key, at most `limit` each; a key at zero is forgotten."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Count one more socket for `key`, unless it already holds `limit`."""
        n = self._open.get(key, 0)
        if n >= self.limit:
            return False
        self._open[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    def __len__(self) -> int:
        """Keys holding at least one socket (bounded by the sockets themselves)."""
        return len(self._open)


class VisitorLimits:
    """New WebChat visitors per client address and per integration: token buckets.

    A visitor is "new" when its hello carries no session: that is what creates a
    conversation, so it is what an attacker would repeat. The address is charged first;
    an address over its own budget does not spend the integration's.
    """

    def __init__(self, *, per_address_rate: float, per_address_burst: int,
                 per_integration_rate: float, per_integration_burst: int) -> None:
        self._by_address = RateLimiter(per_address_rate, per_address_burst)
        self._by_integration = RateLimiter(per_integration_rate, per_integration_burst)

    def new_visitor(self, address: str, integration_id: str, now: float) -> float | None:
        """None if a new visitor may start now, else seconds until one may."""
        wait = self._by_address.take(address, now)
        if wait is not None:
            return wait
        return self._by_integration.take(integration_id, now)


def replay_start(*, stop: int, cursor: int | None, cursor_is_ours: bool,
                 conversation_start: int | None) -> int:
    """The first offset a visitor's history replay reads; it reads up to `stop`.

    `cursor` is the offset the browser says it saw last; it counts only if the record
    there is a delivery of the visitor's own conversation (`cursor_is_ours`), otherwise
    it could aim the replay anywhere in a partition that other tenants share.
    `conversation_start` is the first offset that can hold the conversation (from its
    creation time, at most the history window back; None: no conversation yet). The
    replay never starts below it, so it reads at most the conversation's own range.
    """
    if conversation_start is None:
        return stop  # no message yet, so no delivery either
    floor = min(max(conversation_start, 0), stop)
    if cursor is not None and cursor_is_ours:
        return min(max(cursor + 1, floor), stop)
    return floor
