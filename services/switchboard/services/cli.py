"""`switchboard …`: the command line. `main` builds the parser (every command and option
with its help) and turns any failure into one line on stderr with what to do."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from switchboard import logscrub
from switchboard.errors import ConfigError
from switchboard.logfmt import TEXT_FORMAT
from switchboard.services.cli_errors import RUNTIME, USAGE, CliError, describe
from switchboard.settings import Settings

log = logging.getLogger("switchboard")
DEFAULT_URL = "http://127.0.0.1:8080"


class DrainingServer(uvicorn.Server):
    """uvicorn, with readiness failing for `drain_s` after SIGTERM before intake stops,
    so the load balancer stops sending first (in-flight work then gets uvicorn's
    `timeout_graceful_shutdown`, and the services their own stop). With `hangup`, SIGHUP
    (a closed terminal) shuts down as gracefully as SIGINT."""

    def __init__(self, config: uvicorn.Config, drain_s: float, hangup: bool = False) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.hangup = hangup

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.hangup or threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        # uvicorn captures SIGINT and SIGTERM only. A SIGHUP caught here shuts down as they
        # do, and the server's run then returns (the caller's cleanup runs as after Ctrl-C).
        previous = signal.signal(signal.SIGHUP, self.handle_exit)
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(signal.SIGHUP, previous)

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


def serve_app(settings: Settings, services: list[str], host: str, port: int,
              on_ready: Any = None, drain_s: float = 0.0,
              sockets: list[socket.socket] | None = None, hangup: bool = False) -> None:
    """Serve `services` with uvicorn until a signal stops it (on `sockets` if given)."""
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
    server = DrainingServer(config, drain_s, hangup=hangup)
    if on_ready is not None:
        def wait_then_call() -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                on_ready()
        threading.Thread(target=wait_then_call, daemon=True).start()
    server.run(sockets=sockets)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = check_serve_settings(Settings.from_env())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # uvicorn re-raises SIGTERM once it has shut down gracefully: exit 0, not -15.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    serve_app(settings, [args.service], args.host, args.port,
              drain_s=settings.shutdown_drain_s)
    return 0


MIN_ADMIN_TOKEN_CHARS = 32


def check_serve_settings(settings: Settings) -> Settings:
    """What `serve` refuses to start with (ConfigError, a message for the operator)."""
    if not settings.sealing_keys:
        raise ConfigError("SWITCHBOARD_SECRET_KEY (or SWITCHBOARD_SECRET_KEYS) is required "
                          "(base64 of 32 random bytes)")
    from switchboard.sealer import Sealer

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
    """Apply a hub.yaml through the API; one line per hub and integration."""
    from switchboard.services.hubfile import apply_file

    token = args.admin_token or os.environ.get("SWITCHBOARD_ADMIN_TOKEN", "")
    if not token:
        raise CliError("apply needs the admin token: set SWITCHBOARD_ADMIN_TOKEN or pass "
                       "--admin-token (`switchboard dev` prints it when it starts)", USAGE)
    report = apply_file(Path(args.file), args.url, token,
                        out=lambda line: print(line, flush=True))
    print(f"applied {args.file}: {report.summary()}", flush=True)
    return 0


PRIVATE_KEY_HINT = ("--key must be the integration's privateSigningKey (whsk_…, the one "
                    "shown once when it was created; the publicSigningKey only verifies)")


def cmd_send(args: argparse.Namespace) -> int:
    """Sign an activity with an integration's privateSigningKey and post it to the ingress."""
    import time
    import uuid

    import httpx

    from switchboard import webhooks
    from switchboard.errors import SwitchboardError
    from switchboard.keys import PUBLIC_KEY_PREFIX

    if args.key.startswith(PUBLIC_KEY_PREFIX):
        raise CliError(f"{PRIVATE_KEY_HINT}; this is a publicSigningKey", USAGE)
    try:
        signer = webhooks.Signer(ed25519=[args.key])
    except SwitchboardError as exc:
        raise CliError(f"{PRIVATE_KEY_HINT}; this one is malformed: {exc.description}",
                       USAGE) from None
    body: dict[str, Any] = {"type": "message", "sender": {"id": args.sender},
                            "message": {"type": "text", "text": args.text}}
    if args.conversation:
        body["conversationId"] = args.conversation
    raw = json.dumps(body).encode()
    msg_id = args.id or f"msg_{uuid.uuid4().hex}"
    try:
        headers = signer.headers(msg_id, int(time.time()), raw)
    except ValueError as exc:  # an --id that is no webhook id
        raise CliError(f"--id: {exc}", USAGE) from None
    headers["content-type"] = "application/json"
    resp = httpx.post(f"{args.url}/ingress/{args.integration}", content=raw, headers=headers)
    if resp.status_code < 300:
        print(resp.status_code, resp.text)
        return 0
    # The ingress says nothing more than 401 to an unauthenticated sender, on purpose.
    hint = (" (is the integration id right, and --key its privateSigningKey? a paused or "
            "non-Direct integration is refused the same way)" if resp.status_code == 401
            else "")
    raise CliError(f"the hub answered {resp.status_code} {resp.text.strip()[:300]}{hint}",
                   RUNTIME)


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


EPILOG = """\
Every command takes -h for its options. Start with `switchboard dev`, then follow the
README's "Five minutes with curl". Failures are one line on stderr (exit 2: bad usage or
configuration, 1: it failed); SWITCHBOARD_DEBUG=1 shows the traceback instead."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command and option, each with its help."""
    from switchboard.services import (
        deliveries_cli,
        dev_cli,
        doctor_cli,
        hubs_cli,
        receive_cli,
        sync_cli,
        syncro_cli,
        tail_cli,
    )

    parser = argparse.ArgumentParser(
        prog="switchboard", description="Switchboard, the webhook integration hub.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")

    dev_cli.add_parser(sub)

    serve = sub.add_parser("serve", help="run one service against KAFKA_BOOTSTRAP_SERVERS",
                           description="Run one service (production: one per process), "
                                       "configured by SWITCHBOARD_* variables.")
    serve.add_argument("service", choices=["api", "ingress", "router", "deliverer", "stream",
                                           "sync"], help="the service to run")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.set_defaults(func=cmd_serve)

    reseal = sub.add_parser(
        "reseal", help="re-seal stored secrets under the newest secret key",
        description="Rewrite every sealed secret of the registry (and sync profiles) under "
                    "the first key of SWITCHBOARD_SECRET_KEYS, after a key rotation.")
    reseal.add_argument("--dry-run", action="store_true", help="only count what would change")
    reseal.set_defaults(func=cmd_reseal)

    apply = sub.add_parser(
        "apply", help="create or update hubs and integrations declared in a hub.yaml",
        description="Compare each hub and integration of FILE with the hub's API and write "
                    "only what differs; prints created, updated or unchanged for each.")
    apply.add_argument("file", help="the hub.yaml to apply")
    apply.add_argument("--url", default=DEFAULT_URL, help="the hub's URL")
    apply.add_argument("--admin-token", default="",
                       help="the admin token (default: $SWITCHBOARD_ADMIN_TOKEN)")
    apply.set_defaults(func=cmd_apply)

    send = sub.add_parser("send", help="sign and post a text message to an integration")
    send.add_argument("integration", help="the integrationId to send as")
    send.add_argument("--key", required=True,
                      help="the integration's privateSigningKey (whsk_…, shown once at create)")
    send.add_argument("--text", required=True, help="the message text")
    send.add_argument("--sender", default="user-1", help="sender.id of the activity")
    send.add_argument("--conversation", help="conversationId (agents and bots must give one)")
    send.add_argument("--id", help="webhook-id (defaults to a fresh one)")
    send.add_argument("--url", default=DEFAULT_URL, help="the hub's URL")
    send.set_defaults(func=cmd_send)

    receive_cli.add_parser(sub)

    schemas = sub.add_parser("schemas", help="check (or --write) the JSON Schemas in schemas/")
    schemas.add_argument("--dir", default="schemas", help="where the schema files are")
    schemas.add_argument("--write", action="store_true",
                         help="write the stale ones instead of failing")
    schemas.set_defaults(func=cmd_schemas)

    for module in (hubs_cli, deliveries_cli, tail_cli, sync_cli, syncro_cli, doctor_cli):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `switchboard` command."""
    logging.basicConfig(level=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"),
                        format=TEXT_FORMAT)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per delivery is noise
    logscrub.install()  # no token or query string reaches a log line
    args = build_parser().parse_args(argv)
    if os.environ.get("SWITCHBOARD_DEBUG", "").lower() in ("1", "true", "yes"):
        result: int = args.func(args)
        return result
    try:
        result = args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        line, code = describe(exc, getattr(args, "url", None))
        print(f"switchboard {args.command}: {line}", file=sys.stderr, flush=True)
        return code
    return result


if __name__ == "__main__":
    raise SystemExit(main())
