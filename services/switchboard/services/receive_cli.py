"""`switchboard receive`: a local webhook receiver that prints every delivery (path,
webhook id, verdict, headers, body) and checks its signature with the right key for the
path it arrived at (see switchboard.receiver_keys)."""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

import httpx

from switchboard.receiver_keys import KeyRing, keys_by_webhook_path, ring_from, verdict
from switchboard.services.cli_errors import RUNTIME, USAGE, CliError

# Transport noise a reader of a delivery does not need.
_QUIET_HEADERS = frozenset({"host", "content-length", "connection", "accept", "accept-encoding"})


def add_parser(sub: Any) -> None:
    """Register `receive` on the CLI's subparsers."""
    p = sub.add_parser(
        "receive", help="print (and verify) the webhooks the hub delivers to this port",
        description="Serve POST on every path; print each delivery's path, webhook-id, "
                    "signature verdict, headers and body. Keys: --public-key (any path), "
                    "--key PATH=PUBLICKEY (one path), or --url/--token to look each "
                    "integration's publicSigningKey up by the path of its webhookUrl.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=9000, help="port to listen on")
    p.add_argument("--public-key", action="append", default=[], metavar="WHPK",
                   help="a publicSigningKey to verify deliveries at any path with "
                        "(repeatable)")
    p.add_argument("--key", action="append", default=[], metavar="PATH=WHPK",
                   help="verify deliveries at PATH with this publicSigningKey (repeatable), "
                        "e.g. --key /agent=whpk_…")
    p.add_argument("--url", help="the hub's URL: look each integration's publicSigningKey "
                                 "up by its webhookUrl path (with --token)")
    p.add_argument("--token", default="",
                   help="hub access token or admin token for --url (default: "
                        "$SWITCHBOARD_TOKEN, then $SWITCHBOARD_ADMIN_TOKEN)")
    p.set_defaults(func=cmd_receive)


class HubKeys:
    """publicSigningKeys by webhook path, read from the hub's API; read again when a
    delivery has no key or fails (an integration made, or its keys regenerated, after the
    last read), unless a read began after that delivery arrived."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._lock = threading.Lock()
        self._read_at = 0.0
        self.by_path: dict[str, list[str]] = {}

    def fetch(self) -> dict[str, list[str]]:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10,
                          params={"compat": "none"}) as client:
            hubs = client.get("/api/v1/hubs")
            if hubs.status_code in (401, 403):
                raise CliError("the hub refused --token (a hub access token or the admin "
                               "token is needed)", USAGE)
            hubs.raise_for_status()
            integrations: list[dict[str, Any]] = []
            for hub in hubs.json():
                listed = client.get(f"/api/v1/integrations/hubs/{hub['hubId']}")
                listed.raise_for_status()
                integrations.extend(listed.json())
        return keys_by_webhook_path(integrations)

    def refresh(self, arrived: float | None = None) -> None:
        """Read the keys again, unless a read began after `arrived` (monotonic)."""
        with self._lock:
            if arrived is not None and self._read_at >= arrived:
                return
            self._read_at = time.monotonic()
            self.by_path = self.fetch()


def cmd_receive(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C, printing each delivery."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    try:
        ring_from(args.public_key, args.key)  # refuse bad keys before listening
    except ValueError as exc:
        raise CliError(str(exc), USAGE) from None
    hub: HubKeys | None = None
    if args.url:
        token = (args.token or os.environ.get("SWITCHBOARD_TOKEN")
                 or os.environ.get("SWITCHBOARD_ADMIN_TOKEN", ""))
        if not token:
            raise CliError("--url needs --token (or SWITCHBOARD_TOKEN): a hub access token "
                           "or the admin token", USAGE)
        hub = HubKeys(args.url, token)
        hub.refresh()

    def ring() -> KeyRing:
        return ring_from(args.public_key, args.key, hub.by_path if hub else None)

    async def hook(request: Request) -> Response:
        arrived = time.monotonic()
        raw = await request.body()
        path = request.url.path
        said = verdict(ring(), path, request.headers, raw, int(time.time()))
        if hub is not None and (said.startswith("signature REJECTED") or "no key" in said):
            try:
                await run_in_threadpool(hub.refresh, arrived)
            except (httpx.HTTPError, CliError) as exc:
                print(f"(could not read keys from {hub.url}: {exc})", flush=True)
            said = verdict(ring(), path, request.headers, raw, int(time.time()))
        headers = "\n".join(f"  {k}: {v}" for k, v in request.headers.items()
                            if k not in _QUIET_HEADERS)
        print(f"POST {path}  webhook-id={request.headers.get('webhook-id')}  [{said}]\n"
              f"{headers}\n{raw.decode(errors='replace')}\n", flush=True)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="warning"))

    def say_when_listening() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            print(f"receiving webhooks on http://{args.host}:{args.port}/ (Ctrl-C stops)",
                  flush=True)

    threading.Thread(target=say_when_listening, daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C is how a receiver is meant to stop
        return 0
    if not server.started:
        raise CliError(f"cannot listen on {args.host}:{args.port} (in use? pick --port)",
                       RUNTIME)
    return 0
