"""Shared plumbing of the benchmarks: server processes, a lean HTTP/1.1 client, statistics.

Everything talks to 127.0.0.1 only. Servers run in their own processes (see _server.py)
so the load generator never competes with them for an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from switchboard.brokers import free_port, start_broker
from switchboard.keys import generate_secret_key_b64
from switchboard.webhooks import Signer

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"


def machine_note() -> str:
    """CPU count and load average: other work on the machine moves every figure."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def run(coro: Any) -> Any:
    """Run the load generator on uvloop when available (a lighter client)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


# ------------------------------------------------------------------------ processes


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time used so far by process `pid` (Linux /proc); NaN if unknown."""
    if pid is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """`_server.py` in a child process on a loopback port; output goes to a log file."""

    def __init__(self, app: str, *, env: dict[str, str] | None = None,
                 services: Sequence[str] = ("api", "ingress")) -> None:
        self.app = app
        self.services = list(services)
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        fd, name = tempfile.mkstemp(prefix=f"switchboard-bench-{app}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        child_env = {k: v for k, v in os.environ.items()
                     if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("SWITCHBOARD_")}
        child_env.update(env or {})
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "_server.py"), app, "--port", str(self.port),
                 "--services", ",".join(services)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.app} server not ready after {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (SIGKILL after `grace`); the log is kept only if the server failed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        if self.proc.returncode in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)
        else:
            print(f"{self.app} server exited with {self.proc.returncode}; log: {self.log_path}",
                  file=sys.stderr)


@contextlib.contextmanager
def echo_server() -> Iterator[ServerProcess]:
    server = ServerProcess("echo")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclasses.dataclass
class Hub:
    """A running hub: its processes (the first serves the API and the ingress) and broker."""

    servers: list[ServerProcess]
    admin_token: str
    bootstrap: str
    topic_prefix: str
    broker_pid: int | None

    @property
    def main(self) -> ServerProcess:
        return self.servers[0]

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers]


@contextlib.contextmanager
def broker_and_hub(kind: str, groups: Sequence[Sequence[str]], extra_env: Sequence[str] = ()
                   ) -> Iterator[Hub]:
    """A development broker and the hub on it: one process per group of services.

    The first group must contain ``api`` and ``ingress``. `extra_env` are ``NAME=value``
    settings for every hub process (e.g. from ``--hub-env``).
    """
    data = Path(tempfile.mkdtemp(prefix="switchboard-bench-broker-"))
    broker = start_broker("kafka" if kind == "kafka" else "tansu", data)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "SWITCHBOARD_BROKER_KIND": broker.kind,
        "SWITCHBOARD_TOPIC_PREFIX": prefix,
        "SWITCHBOARD_PARTITIONS": "4",
        "SWITCHBOARD_SECRET_KEY": generate_secret_key_b64(),
        "SWITCHBOARD_ADMIN_TOKEN": "bench-admin-" + uuid.uuid4().hex,
        # The per-integration ingress rate limit (default 200/s, burst 400) would answer
        # 429 to a load test that uses one integration: lift it (override with --hub-env).
        "SWITCHBOARD_INGRESS_RATE_PER_S": "1000000",
        "SWITCHBOARD_INGRESS_BURST": "1000000",
        **dict(item.split("=", 1) for item in extra_env),
    }
    servers: list[ServerProcess] = []
    try:
        for group in groups:
            servers.append(ServerProcess("hub", services=group, env=env))
        for server in servers:
            server.wait_ready(timeout=120 if kind == "kafka" else 60)
        pid = broker.process.pid if broker.process is not None else None
        yield Hub(servers, env["SWITCHBOARD_ADMIN_TOKEN"], broker.bootstrap, prefix, pid)
    finally:
        for server in reversed(servers):
            server.stop()
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


def create_integrations(base_url: str, admin_token: str, customer_url: str,
                        agent_url: str | None = None) -> dict[str, dict[str, Any]]:
    """A hub with a Direct Customer (and optionally a Direct Agent) integration."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/api/v1/hubs", json={"name": "bench"},
                        headers={"Authorization": f"Bearer {admin_token}"})
        r.raise_for_status()
        hub = r.json()
        auth = {"Authorization": f"Bearer {hub['accessToken']}"}
        out: dict[str, dict[str, Any]] = {}
        wanted = [("customer", "Customer", customer_url)]
        if agent_url is not None:
            wanted.append(("agent", "Agent", agent_url))
        for key, kind, url in wanted:
            r = client.post(f"/api/v1/integrations/hubs/{hub['hubId']}", headers=auth, json={
                "channelId": "Direct", "name": f"bench-{key}",
                "configuration": {"integrationType": kind, "webhookUrl": url}})
            r.raise_for_status()
            out[key] = r.json()
        return out


# ------------------------------------------------------------------------ requests


def message_body(text: str, sender: str) -> bytes:
    return orjson.dumps({"type": "message", "sender": {"id": sender},
                         "message": {"type": "text", "text": text}})


def raw_request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None
                ) -> bytes:
    """A complete HTTP/1.1 keep-alive POST, ready to write to a socket."""
    lines = [f"POST {path} HTTP/1.1", f"host: {LOOPBACK}:{port}",
             "content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() != "content-type"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_requests(port: int, path: str, private_key: str, texts: Sequence[str],
                    senders: int) -> list[bytes]:
    """Pre-signed message POSTs to `path`, each with its own webhook-id."""
    signer = Signer(ed25519=[private_key])
    ts = int(time.time())
    out = []
    for i, text in enumerate(texts):
        body = message_body(text, f"user-{i % senders}")
        headers = signer.headers(f"msg_{uuid.uuid4().hex}", ts, body)
        out.append(raw_request(port, path, body, headers))
    return out


class HttpConn:
    """One keep-alive HTTP/1.1 connection; far lighter per request than a full client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConn:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        return cls(reader, writer)

    async def roundtrip(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            return status, b"".join(p[:-2] for p in parts)
        return status, (await self.reader.readexactly(length)) if length else b""

    def close(self) -> None:
        self.writer.close()


CONN_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


class Pool:
    """Keep-alive connections to one port, at most `size` in use at once."""

    # uvicorn closes a keep-alive connection after 5 s idle; never reuse one that old.
    MAX_IDLE_S = 2.0

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self._idle: list[tuple[float, HttpConn]] = []
        self._slots = asyncio.Semaphore(size)

    async def _connection(self) -> HttpConn:
        while self._idle:
            since, conn = self._idle.pop()
            if time.monotonic() - since < self.MAX_IDLE_S:
                return conn
            conn.close()
        return await HttpConn.open(self.port)

    async def request(self, data: bytes) -> int:
        """POST `data`; the status, or 0 if the connection failed."""
        async with self._slots:
            conn = await self._connection()
            try:
                status, _ = await conn.roundtrip(data)
            except CONN_ERRORS:
                conn.close()
                return 0
            self._idle.append((time.monotonic(), conn))
            return status

    def close(self) -> None:
        for _, conn in self._idle:
            conn.close()
        self._idle.clear()


# ------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }
