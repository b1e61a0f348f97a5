"""`switchboard dev`: every service and an embedded broker in one process.

It checks its HTTP port and the data dir before starting anything (a second dev, or a
broker a killed one left behind, is one line with the fix), writes `<data-dir>/dev.json`
once the broker is up (see switchboard.devstate) and stops the broker on Ctrl-C, SIGTERM
and SIGHUP (a closed terminal) alike.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from switchboard import devstate
from switchboard.brokers import start_broker
from switchboard.services.cli_errors import RUNTIME, CliError, describe
from switchboard.settings import Settings

SERVICES = ["api", "ingress", "router", "deliverer", "stream", "sync"]


def add_parser(sub: Any) -> None:
    """Register `dev` on the CLI's subparsers."""
    dev = sub.add_parser(
        "dev", help="run every service and an embedded broker in one process",
        description="Run every service and a broker in one process for development. "
                    "Writes <data-dir>/dev.json while it runs; Ctrl-C, SIGTERM or SIGHUP "
                    "stop the services and the broker.")
    dev.add_argument("--host", default="127.0.0.1", help="address the hub listens on")
    dev.add_argument("--port", type=int, default=8080, help="port the hub listens on")
    dev.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                     help="broker to start when KAFKA_BOOTSTRAP_SERVERS is unset: tansu "
                          "(embedded, memory only) or kafka (Apache Kafka, data kept)")
    dev.add_argument("--data-dir", default=os.environ.get("SWITCHBOARD_DATA_DIR", "var"),
                     help="where dev.json, logs and --broker kafka's data are kept "
                          "(default ./var, or $SWITCHBOARD_DATA_DIR)")
    dev.add_argument("--config", help="a hub.yaml to apply once the hub is up")
    dev.add_argument("--replace", action="store_true",
                     help="stop a dev, or a broker a previous dev left running, on this "
                          "data dir first")
    dev.set_defaults(func=cmd_dev)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets for dev, generated once and kept beside a persistent broker's data.

    Sealed secrets on a kept Kafka log are only readable with the key that sealed them.
    """
    path = data_dir / "dev-secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    state = _fresh_secrets()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    path.chmod(0o600)
    return state


def _fresh_secrets() -> dict[str, str]:
    return {"secret_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "admin_token": "sbadm_" + secrets.token_urlsafe(24)}


# ---- processes ------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_broker(pid: int, kind: str) -> bool:
    return devstate.looks_like_broker(_cmdline(pid), kind)


def _kafka_on(data_dir: Path) -> int | None:
    """The pid of a Kafka running with this data dir's config, if any (a dev killed
    before it could write or remove dev.json leaves one)."""
    config = str(data_dir / "kafka" / "server.properties")
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                cmd = _cmdline(int(entry.name))
                if "kafka.Kafka" in cmd and config in cmd and _alive(int(entry.name)):
                    return int(entry.name)
    return None


def _stop(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def _clear_leftovers(data_dir: Path, replace: bool) -> None:
    """Refuse (or with `replace`, stop) a dev or broker still running on `data_dir`."""
    path = data_dir / devstate.FILE_NAME
    state = devstate.decode(path.read_bytes()) if path.exists() else None
    problem = devstate.leftover_problem(state, os.getpid(), _alive, _is_broker,
                                        str(data_dir))
    kafka = _kafka_on(data_dir)
    if problem is None and kafka is not None:
        problem = (f"a Kafka from a previous `switchboard dev` is still running on "
                   f"{data_dir} (pid {kafka}): stop it with `kill {kafka}`, or start with "
                   "--replace")
    if problem is None:
        return
    if not replace:
        raise CliError(problem, RUNTIME)
    if state is not None and state.pid != os.getpid() and _alive(state.pid):
        print(f"stopping switchboard dev (pid {state.pid})", flush=True)
        _stop(state.pid, 40)
    if state is not None and state.broker_pid is not None and _alive(state.broker_pid) \
            and _is_broker(state.broker_pid, state.broker):
        print(f"stopping the {state.broker} broker left running (pid {state.broker_pid})",
              flush=True)
        _stop(state.broker_pid, 30)
    kafka = _kafka_on(data_dir)
    if kafka is not None:
        print(f"stopping the Kafka left running (pid {kafka})", flush=True)
        _stop(kafka, 30)


def _claim_port(host: str, port: int) -> socket.socket:
    """The hub's listening socket, bound before any broker starts (so a busy port fails
    at once); uvicorn listens on it later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror} (another "
                       "`switchboard dev` or server is on it: stop it, or pick --port)",
                       RUNTIME) from None
    sock.set_inheritable(True)
    return sock


# ---- the command ----------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    """Run the hub and its broker until Ctrl-C, SIGTERM or SIGHUP."""
    from switchboard.services.cli import serve_app

    # Before anything is started: a signal from here on unwinds through the `finally`
    # below (and the brokers' own cleanup) instead of killing us with a broker running.
    # uvicorn takes SIGINT and SIGTERM over while it serves; SIGHUP is passed to it too.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    env = os.environ
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(data_dir, args.replace)
    sock = _claim_port(args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    state_path = data_dir / devstate.FILE_NAME
    overrides: dict[str, Any] = {}
    broker = None
    try:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            if args.broker == "kafka":
                print("starting Apache Kafka (first run downloads its jars with Maven)...",
                      flush=True)
                ports_file = data_dir / "kafka" / "ports.json"
                port = (json.loads(ports_file.read_text())["port"] if ports_file.exists()
                        else None)
                broker = start_broker("kafka", data_dir / "kafka", port=port)
                ports_file.write_text(json.dumps({"port": int(broker.bootstrap.split(":")[1])}))
            else:
                broker = start_broker("tansu", data_dir)
            overrides["kafka_bootstrap_servers"] = broker.bootstrap
            overrides["broker_kind"] = broker.kind
        made = (_dev_secrets(data_dir) if broker is not None and broker.kind == "kafka"
                else _fresh_secrets())
        if not env.get("SWITCHBOARD_SECRET_KEY") and not env.get("SWITCHBOARD_SECRET_KEYS"):
            overrides["secret_key"] = made["secret_key"]
        # Printed only if generated here: a token the operator supplied never reaches a log.
        generated_admin = not env.get("SWITCHBOARD_ADMIN_TOKEN")
        if generated_admin:
            overrides["admin_token"] = made["admin_token"]
        if not env.get("SWITCHBOARD_PUBLIC_URL"):
            overrides["public_url"] = base
        if not env.get("SWITCHBOARD_ALLOW_PRIVATE_DESTINATIONS"):
            # Local development delivers to local receivers; `serve` keeps the SSRF guard on.
            overrides["allow_private_destinations"] = True
        settings = Settings.from_env(**overrides)
        state_path.write_bytes(devstate.encode(devstate.DevState(
            pid=os.getpid(), url=base, bootstrap=settings.kafka_bootstrap_servers,
            broker=broker.kind if broker is not None else "kafka",
            broker_pid=broker.pid if broker is not None else None)))
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
                f"  state          {state_path}\n"
                "Ctrl-C stops everything.\n",
                flush=True,
            )
            if args.config:
                from switchboard.services.hubfile import apply_file

                try:
                    report = apply_file(Path(args.config), base, settings.admin_token,
                                        out=lambda line: print(line, flush=True))
                    print(f"applied {args.config}: {report.summary()}", flush=True)
                except Exception as exc:
                    print(f"applying {args.config} failed: {describe(exc, base)[0]}",
                          file=sys.stderr, flush=True)

        serve_app(settings, SERVICES, args.host, args.port, on_ready=banner,
                  sockets=[sock], hangup=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if broker is not None:
            broker.stop()
        with contextlib.suppress(OSError):
            ours = devstate.decode(state_path.read_bytes()) if state_path.exists() else None
            if ours is not None and ours.pid == os.getpid():
                state_path.unlink()
    return 0
