"""The stream's wire protocol: cursors, frames, close codes and where the token comes from.

See `switchboard.services.stream` for the gateway that speaks it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import msgspec
from msgspec import Struct
from starlette.websockets import WebSocket

from switchboard.model import DirectEnvelope

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409
CLOSE_TOO_MANY = 4429

HEARTBEAT_S = 20.0
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
MAX_CLIENT_FRAME_CHARS = 4096
# Browsers cannot set headers on a websocket: the token may come as a subprotocol.
SUBPROTOCOL = "switchboard.stream"
BEARER_SUBPROTOCOL_PREFIX = "switchboard.bearer."

_CURSOR_RE = re.compile(r"^(0|[1-9][0-9]{0,8}):(-1|0|[1-9][0-9]{0,18})$")


class Cursor(NamedTuple):
    """A position in the deliveries topic; offset -1 means "before the first record"."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_cursor(text: str) -> Cursor | None:
    """``"P:O"`` → Cursor, or None if malformed."""
    m = _CURSOR_RE.match(text)
    return Cursor(int(m.group(1)), int(m.group(2))) if m else None


class StoredCursor(Struct, rename="camel"):
    """A value of the `stream-cursors` topic (key: the integration id)."""

    cursor: str
    acked_at: int


class ReadyFrame(Struct, tag="ready", tag_field="type"):
    cursor: str


class PingFrame(Struct, tag="ping", tag_field="type"):
    pass


class DeliveryFrame(Struct, tag="delivery", tag_field="type", rename="camel"):
    cursor: str
    webhook_id: str
    payload: DirectEnvelope


class ClientFrame(Struct):
    type: str
    cursor: str | None = None


encoder = msgspec.json.Encoder()
client_decoder = msgspec.json.Decoder(ClientFrame)
stored_decoder = msgspec.json.Decoder(StoredCursor)
PING = encoder.encode(PingFrame()).decode()


def token_of(ws: WebSocket, *, allow_query: bool) -> tuple[str | None, bool]:
    """The access token, and whether it came in the (deprecated) query string: from the
    Authorization header, else the ``switchboard.bearer.<token>`` subprotocol, else
    ``?access_token=`` if allowed."""
    header = ws.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), False
    for proto in ws.scope.get("subprotocols") or ():
        if proto.startswith(BEARER_SUBPROTOCOL_PREFIX) and len(proto) > len(
                BEARER_SUBPROTOCOL_PREFIX):
            return proto[len(BEARER_SUBPROTOCOL_PREFIX):], False
    if allow_query:
        token = ws.query_params.get("access_token")
        if token:
            return token, True
    return None, False


def subprotocol_of(ws: WebSocket) -> str | None:
    """The subprotocol to select: ours if offered (never echo the token-bearing one)."""
    return SUBPROTOCOL if SUBPROTOCOL in (ws.scope.get("subprotocols") or ()) else None
