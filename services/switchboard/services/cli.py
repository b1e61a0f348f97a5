"""`switchboard dev | serve | apply | deliveries …`: the command line."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn

from switchboard import logscrub
from switchboard.brokers import start_broker
from switchboard.errors import ConfigError
from switchboard.logfmt import TEXT_FORMAT
from switchboard.settings import Settings

log = logging.getLogger("switchboard")


class DrainingServer(uvicorn.Server):
    """uvicorn, with readiness failing for `drain_s` after SIGTERM before intake stops,
    so the load balancer stops sending first (in-flight work then gets uvicorn's
    `timeout_graceful_shutdown`, and the services their own stop)."""

    def __init__(self, config: uvicorn.Config, drain_s: float) -> None:
        super().__init__(config)
        self.drain_s = drain_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        from switchboard.services.health import DRAINING

        if sig == signal.SIGTERM and self.drain_s > 0 and not DRAINING.is_set():
            DRAINING.set()
            log.info("SIGTERM: readiness fails now; stopping intake in %.1fs", self.drain_s)
            timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()
            return
        super().handle_exit(sig, frame)


def _serve(settings: Settings, services: list[str], host: str, port: int,
           on_ready: Any = None, drain_s: float = 0.0) -> None:
    from switchboard import logfmt
    from switchboard.services.app import build_app
    from switchboard.services.serving import uvicorn_config

    options: dict[str, Any] = {}
    if settings.log_format == "json":
        logfmt.configure("json", ",".join(services),
                         os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
        options["log_config"] = None  # uvicorn's own lines go through the JSON handler too
    # A factory, called by uvicorn inside its event loop, so everything the app builds
    # belongs to that loop.
    config = uvicorn_config(lambda: build_app(settings, services), settings, factory=True,
                            host=host, port=port, log_level="info", access_log=False,
                            lifespan="on",
                            timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s)),
                            **options)
    server = DrainingServer(config, drain_s)
    if on_ready is not None:
        def wait_then_call() -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                on_ready()
        threading.Thread(target=wait_then_call, daemon=True).start()
    server.run()


def _dev_state(data_dir: Path) -> dict[str, str]:
    """Secrets for dev, generated once and kept beside a persistent broker's data.

    Sealed secrets on a kept Kafka log are only readable with the key that sealed them.
    """
    path = data_dir / "dev-secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    state = {
        "secret_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "admin_token": "sbadm_" + secrets.token_urlsafe(24),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    path.chmod(0o600)
    return state


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_dev(args: argparse.Namespace) -> int:
    env = os.environ
    data_dir = Path(args.data_dir).resolve()
    overrides: dict[str, Any] = {}
    broker = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        if args.broker == "kafka":
            print("starting Apache Kafka (first run downloads its jars with Maven)...",
                  flush=True)
            ports_file = data_dir / "kafka" / "ports.json"
            port = json.loads(ports_file.read_text())["port"] if ports_file.exists() else None
            broker = start_broker("kafka", data_dir / "kafka", port=port)
            ports_file.write_text(json.dumps({"port": int(broker.bootstrap.split(":")[1])}))
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            broker = start_broker("tansu", data_dir)
        overrides["kafka_bootstrap_servers"] = broker.bootstrap
        overrides["broker_kind"] = broker.kind
    state = _dev_state(data_dir) if broker is not None and broker.kind == "kafka" else {
        "secret_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "admin_token": "sbadm_" + secrets.token_urlsafe(24),
    }
    if not env.get("SWITCHBOARD_SECRET_KEY") and not env.get("SWITCHBOARD_SECRET_KEYS"):
        overrides["secret_key"] = state["secret_key"]
    # Printed only if generated here: a token the operator supplied never reaches a log.
    generated_admin = not env.get("SWITCHBOARD_ADMIN_TOKEN")
    if generated_admin:
        overrides["admin_token"] = state["admin_token"]
    if not env.get("SWITCHBOARD_PUBLIC_URL"):
        overrides["public_url"] = f"http://{args.host}:{args.port}"
    if not env.get("SWITCHBOARD_ALLOW_PRIVATE_DESTINATIONS"):
        # Local development delivers to local receivers; `serve` keeps the SSRF guard on.
        overrides["allow_private_destinations"] = True
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    base = f"http://{args.host}:{args.port}"
    admin_shown = (settings.admin_token if generated_admin
                   else "(from SWITCHBOARD_ADMIN_TOKEN, not shown)")

    def banner() -> None:
        print(
            "\nSwitchboard is running (all services in one process)\n"
            f"  API            {base}/api/v1   (docs: {base}/docs, {base}/openapi.json)\n"
            f"  console        {base}/console  (sign in with the admin token below)\n"
            f"  ingress        {base}/ingress/{{integrationId}}\n"
            f"  stream         ws://{args.host}:{args.port}/v1/integrations/{{id}}/stream\n"
            f"  health         {base}/healthz  {base}/readyz\n"
            f"  broker         {settings.kafka_bootstrap_servers} ({settings.broker_kind})\n"
            f"  admin token    {admin_shown}\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        if args.config:
            from switchboard.services.hubfile import apply_file

            try:
                apply_file(Path(args.config), base, settings.admin_token)
            except Exception as exc:
                print(f"applying {args.config} failed: {exc}", file=sys.stderr, flush=True)

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; turning it into
    # SystemExit lets the `finally` below stop the broker instead of dying with it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve(settings, ["api", "ingress", "router", "deliverer", "stream", "sync"], args.host,
               args.port, on_ready=banner)
    except KeyboardInterrupt:
        pass
    finally:
        if broker is not None:
            broker.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = check_serve_settings(Settings.from_env())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # uvicorn re-raises SIGTERM once it has shut down gracefully: exit 0, not -15.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _serve(settings, [args.service], args.host, args.port, drain_s=settings.shutdown_drain_s)
    return 0


MIN_ADMIN_TOKEN_CHARS = 32


def check_serve_settings(settings: Settings) -> Settings:
    """What `serve` refuses to start with (ConfigError, a message for the operator)."""
    if not settings.sealing_keys:
        raise ConfigError("SWITCHBOARD_SECRET_KEY (or SWITCHBOARD_SECRET_KEYS) is required "
                          "(base64 of 32 random bytes)")
    from switchboard.keys import Sealer

    Sealer.from_b64(settings.sealing_keys)  # malformed keys: refuse now, not on first use
    if settings.admin_token and len(settings.admin_token) < MIN_ADMIN_TOKEN_CHARS:
        raise ConfigError(
            f"SWITCHBOARD_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
            "(generate one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or unset where the admin API is not served")
    return settings


def cmd_reseal(args: argparse.Namespace) -> int:
    import asyncio

    from switchboard.services.reseal import reseal

    try:
        settings = check_serve_settings(Settings.from_env())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(reseal(settings, dry_run=args.dry_run))
    return 1 if report.unreadable or report.conflicts else 0


def cmd_apply(args: argparse.Namespace) -> int:
    from switchboard.services.hubfile import apply_file

    token = args.admin_token or os.environ.get("SWITCHBOARD_ADMIN_TOKEN", "")
    if not token:
        print("set SWITCHBOARD_ADMIN_TOKEN or pass --admin-token", file=sys.stderr)
        return 2
    apply_file(Path(args.file), args.url, token)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Sign an activity with an integration's privateSigningKey and post it to the ingress."""
    import time
    import uuid

    import httpx

    from switchboard import webhooks

    body: dict[str, Any] = {"type": "message", "sender": {"id": args.sender},
                            "message": {"type": "text", "text": args.text}}
    if args.conversation:
        body["conversationId"] = args.conversation
    raw = json.dumps(body).encode()
    msg_id = args.id or f"msg_{uuid.uuid4().hex}"
    headers = webhooks.Signer(ed25519=[args.key]).headers(msg_id, int(time.time()), raw)
    headers["content-type"] = "application/json"
    resp = httpx.post(f"{args.url}/ingress/{args.integration}", content=raw, headers=headers)
    print(resp.status_code, resp.text)
    return 0 if resp.status_code < 300 else 1


def cmd_receive(args: argparse.Namespace) -> int:
    """A local webhook receiver that verifies and prints every delivery (for trying it out)."""
    import time

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from switchboard import webhooks
    from switchboard.errors import SwitchboardError

    verifier = webhooks.Verifier(public_keys=[args.public_key]) if args.public_key else None

    async def hook(request: Request) -> Response:
        raw = await request.body()
        verdict = "unverified (no --public-key)"
        if verifier is not None:
            try:
                verifier.verify(request.headers, raw, now=int(time.time()))
                verdict = "signature OK"
            except SwitchboardError as exc:
                verdict = f"signature REJECTED: {exc.code}"
        print(f"{request.url.path} webhook-id={request.headers.get('webhook-id')} [{verdict}]\n"
              f"{raw.decode(errors='replace')}\n", flush=True)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from switchboard.jsonschema import schemas

    out = Path(args.dir)
    stale = []
    for name, data in schemas().items():
        path = out / name
        if not path.exists() or path.read_bytes() != data:
            stale.append(name)
            if args.write:
                out.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    verb = "wrote" if args.write else "out of date"
    print(f"{verb}: {', '.join(stale)}" if stale else "schemas are up to date")
    return 0 if args.write or not stale else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `switchboard` command."""
    logging.basicConfig(level=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"),
                        format=TEXT_FORMAT)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per delivery is noise
    logscrub.install()  # no token or query string reaches a log line
    parser = argparse.ArgumentParser(prog="switchboard")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run every service and an embedded broker in one process")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                     help="broker to start when KAFKA_BOOTSTRAP_SERVERS is unset")
    dev.add_argument("--data-dir", default=os.environ.get("SWITCHBOARD_DATA_DIR", "var"),
                     help="where --broker kafka keeps its data (default ./var)")
    dev.add_argument("--config", help="a hub.yaml to apply once the hub is up")
    dev.set_defaults(func=cmd_dev)

    serve = sub.add_parser("serve", help="run one service against KAFKA_BOOTSTRAP_SERVERS")
    serve.add_argument("service", choices=["api", "ingress", "router", "deliverer", "stream",
                                           "sync"])
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=cmd_serve)

    reseal = sub.add_parser(
        "reseal", help="rewrite every sealed secret of the registry under the first key of "
                       "SWITCHBOARD_SECRET_KEYS (after a key rotation)")
    reseal.add_argument("--dry-run", action="store_true", help="only count what would change")
    reseal.set_defaults(func=cmd_reseal)

    apply = sub.add_parser("apply", help="declare hubs and integrations from a YAML file")
    apply.add_argument("file")
    apply.add_argument("--url", default="http://127.0.0.1:8080")
    apply.add_argument("--admin-token", default="")
    apply.set_defaults(func=cmd_apply)

    send = sub.add_parser("send", help="sign and post a text message to an integration")
    send.add_argument("integration")
    send.add_argument("--key", required=True, help="the integration's privateSigningKey")
    send.add_argument("--text", required=True)
    send.add_argument("--sender", default="user-1")
    send.add_argument("--conversation", help="conversationId (agents and bots must give one)")
    send.add_argument("--id", help="webhook-id (defaults to a fresh one)")
    send.add_argument("--url", default="http://127.0.0.1:8080")
    send.set_defaults(func=cmd_send)

    receive = sub.add_parser("receive", help="print (and verify) webhooks sent to this port")
    receive.add_argument("--host", default="127.0.0.1")
    receive.add_argument("--port", type=int, default=9000)
    receive.add_argument("--public-key", help="the integration's publicSigningKey")
    receive.set_defaults(func=cmd_receive)

    schemas = sub.add_parser("schemas", help="check (or --write) the JSON Schemas in schemas/")
    schemas.add_argument("--dir", default="schemas")
    schemas.add_argument("--write", action="store_true")
    schemas.set_defaults(func=cmd_schemas)

    from switchboard.services import (
        deliveries_cli,
        doctor_cli,
        hubs_cli,
        syncro_cli,
        tail_cli,
    )

    for module in (hubs_cli, deliveries_cli, tail_cli, syncro_cli, doctor_cli):
        module.add_parser(sub)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

