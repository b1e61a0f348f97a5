"""How every Switchboard process serves HTTP and websockets: one uvicorn configuration.

`switchboard dev`, `switchboard serve` and the test hub all build their server here, so the
websocket bounds hold on every socket endpoint (WebChat, stream): at most
`ws_max_message_bytes` per message (a larger one closes the socket with 1009 before it is
buffered whole) and no per-message compression unless `ws_per_message_deflate` (then the
client's compressed frames are refused with a protocol error, never inflated). uvicorn's
own defaults are 16 MiB and compression on. Log records are scrubbed of query strings and
credentials (`switchboard.logscrub`) from here on.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from switchboard import logscrub
from switchboard.settings import Settings


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int,
                   **options: Any) -> uvicorn.Config:
    """A uvicorn configuration for `app` with the deployment's websocket bounds."""
    logscrub.install()
    return uvicorn.Config(
        app, host=host, port=port,
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        **options,
    )
