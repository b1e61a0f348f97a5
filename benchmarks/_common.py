"""Shared plumbing of the benchmarks: server processes, a lean HTTP/1.1 client, statistics.

Everything talks to 127.0.0.1 only. Servers run in their own processes (see _server.py)
so the load generator never competes with them for an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
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
from collections.abc import Callable, Iterator, Sequence
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


def rss_mib(pid: int | None) -> float:
    """Resident memory of process `pid` in MiB (Linux /proc); NaN if unknown."""
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


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


def core_times(cpu: int | None) -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of core `cpu` (all cores if None), from /proc/stat.

    Steal is time the hypervisor gave this core's slot to another guest: on a shared VM it
    is the noise no pinning removes.
    """
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
            busy = user + nice + system + irq + softirq
            return busy, steal, busy + idle + iowait + steal
    return 0, 0, 0


def core_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    """Busy and stolen share (%) of a core between two `core_times` readings."""
    total = after[2] - before[2]
    if total <= 0:
        return {"busy_percent": float("nan"), "steal_percent": float("nan")}
    return {"busy_percent": 100 * (after[0] - before[0]) / total,
            "steal_percent": 100 * (after[1] - before[1]) / total}


class ServerProcess:
    """`_server.py` in a child process on a loopback port; output goes to a log file."""

    def __init__(self, app: str, *, env: dict[str, str] | None = None,
                 services: Sequence[str] = ("api", "ingress"), cpu: int | None = None
                 ) -> None:
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
                pinned([sys.executable, str(HERE / "_server.py"), app, "--port",
                        str(self.port), "--services", ",".join(services)], cpu),
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
def echo_server(cpu: int | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess("echo", cpu=cpu)
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


def hub_env(bootstrap: str, kind: str, extra_env: Sequence[str] = (),
            partitions: int = 4) -> dict[str, str]:
    """Settings for hub processes on a fresh topic prefix; `extra_env` (``NAME=value``) win."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWITCHBOARD_BROKER_KIND": kind,
        "SWITCHBOARD_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}.",
        "SWITCHBOARD_PARTITIONS": str(partitions),
        "SWITCHBOARD_SECRET_KEY": generate_secret_key_b64(),
        "SWITCHBOARD_ADMIN_TOKEN": "bench-admin-" + uuid.uuid4().hex,
        # The per-integration ingress rate limit (default 200/s, burst 400) would answer
        # 429 to a load test that uses one integration: lift it (override with --hub-env).
        "SWITCHBOARD_INGRESS_RATE_PER_S": "1000000",
        "SWITCHBOARD_INGRESS_BURST": "1000000",
        # Likewise the API's per-token limit (50/s), for benchmarks that create many
        # integrations, and the SSRF guard: every receiver here is on 127.0.0.1.
        "SWITCHBOARD_API_RATE_PER_S": "1000000",
        "SWITCHBOARD_API_BURST": "1000000",
        "SWITCHBOARD_ALLOW_PRIVATE_DESTINATIONS": "true",
        **dict(item.split("=", 1) for item in extra_env),
    }


@contextlib.contextmanager
def broker_and_hub(kind: str, groups: Sequence[Sequence[str]], extra_env: Sequence[str] = (),
                   *, hub_cpu: int | None = None, broker_cpu: int | None = None
                   ) -> Iterator[Hub]:
    """A development broker and the hub on it: one process per group of services.

    The first group must contain ``api`` and ``ingress``. `extra_env` are ``NAME=value``
    settings for every hub process (e.g. from ``--hub-env``). With `hub_cpu` every hub
    process runs on that core, with `broker_cpu` the broker's threads on that one.
    """
    data = Path(tempfile.mkdtemp(prefix="switchboard-bench-broker-"))
    broker = start_broker("kafka" if kind == "kafka" else "tansu", data)
    pin_pid(broker.process.pid if broker.process is not None else None, broker_cpu)
    env = hub_env(broker.bootstrap, broker.kind, extra_env)
    prefix = env["SWITCHBOARD_TOPIC_PREFIX"]
    servers: list[ServerProcess] = []
    try:
        for group in groups:
            servers.append(ServerProcess("hub", services=group, env=env, cpu=hub_cpu))
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


# ------------------------------------------------------------------------ pinned processes
# The delivery and wrk benchmarks pin the process under test to one core and everything
# else (receiver, load generator, broker) to the other, so what is measured does not share
# its core with what drives it.


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """`cmd` run by ``taskset -c cpu`` (taskset execs it: the pid stays the command's)."""
    if cpu is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def pin_pid(pid: int | None, cpu: int | None) -> None:
    """Move every thread of a running process (e.g. the broker) to `cpu`."""
    if pid is None or cpu is None or shutil.which("taskset") is None:
        return
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any Switchboard setting, plus `env`."""
    out = {k: v for k, v in os.environ.items()
           if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("SWITCHBOARD_")}
    out.update(env or {})
    return out


def serve_cmd(service: str, port: int) -> list[str]:
    """``switchboard serve SERVICE`` on 127.0.0.1:port (settings come from the env)."""
    return [str(Path(sys.executable).with_name("switchboard")), "serve", service,
            "--host", LOOPBACK, "--port", str(port)]


class Child:
    """A child process of a benchmark (pinned when `cpu` is given), output to a log file."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None,
                 cpu: int | None = None, port: int | None = None) -> None:
        self.name = name
        self.port = port
        fd, log = tempfile.mkstemp(prefix=f"switchboard-bench-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(pinned(cmd, cpu), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env=child_env(env))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                               f"{self.log_tail()}")

    def wait_http(self, path: str = "/readyz", timeout: float = 60.0) -> None:
        """Until GET `path` on our port answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{LOOPBACK}:{self.port}{path}",
                             timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> int:
        """SIGTERM (SIGKILL after `grace`); the log is kept only if the process failed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if code in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)
        else:
            print(f"{self.name} exited with {code}; log: {self.log_path}", file=sys.stderr)
        return code


@contextlib.contextmanager
def dev_broker(kind: str, cpu: int | None = None) -> Iterator[Any]:
    """A fresh development broker (Tansu or Kafka), its threads pinned to `cpu`."""
    data = Path(tempfile.mkdtemp(prefix="switchboard-bench-broker-"))
    broker = start_broker("kafka" if kind == "kafka" else "tansu", data)
    try:
        pin_pid(broker.process.pid if broker.process is not None else None, cpu)
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


def broker_pid(broker: Any) -> int | None:
    return broker.process.pid if getattr(broker, "process", None) is not None else None


class Receiver(Child):
    """`_receiver.py`: a lean webhook receiver that records every arrival (see there)."""

    def __init__(self, cpu: int | None = None, hang_prefix: str = "/hang/",
                 verify_every: int = 50) -> None:
        port = free_port()
        super().__init__("receiver", [sys.executable, str(HERE / "_receiver.py"),
                                      "--port", str(port), "--hang-prefix", hang_prefix,
                                      "--verify-every", str(verify_every)],
                         cpu=cpu, port=port)
        self.url = f"http://{LOOPBACK}:{port}"
        self._client = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout: float = 30.0) -> Receiver:
        self.wait_http("/_stats", timeout)
        return self

    def stats(self) -> dict[str, int]:
        return self._client.get("/_stats").json()  # type: ignore[no-any-return]

    def records(self) -> list[list[Any]]:
        """``[arrival_ns, path, webhook_id, k, s, t]`` for every request so far."""
        return orjson.loads(self._client.get("/_dump").content)["records"]  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._client.post("/_reset")

    def set_keys(self, keys: dict[str, list[str]]) -> None:
        """Public keys per path: a sample of what arrives there has its signature checked."""
        self._client.post("/_keys", content=orjson.dumps(keys))

    def stop(self, grace: float = 5.0) -> int:
        self._client.close()
        return super().stop(grace)


# ------------------------------------------------------------------------ destinations


async def create_destinations(base_url: str, admin_token: str, urls: Sequence[str],
                              hubs: int = 1, concurrency: int = 16) -> list[dict[str, Any]]:
    """One Direct Agent integration per URL, spread round-robin over `hubs` new hubs.

    Each: ``integrationId``, ``hubId``, ``hub`` (its index), ``url``, ``publicSigningKey``
    (verifies what the hub sends it).
    """
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        admin = {"Authorization": f"Bearer {admin_token}"}
        made = []
        for h in range(hubs):
            r = await client.post("/api/v1/hubs", json={"name": f"bench-{h}"}, headers=admin)
            r.raise_for_status()
            made.append(r.json())
        out: list[dict[str, Any]] = [{} for _ in urls]
        todo = iter(enumerate(urls))

        async def worker() -> None:
            for i, url in todo:
                hub = made[i % hubs]
                r = await client.post(
                    f"/api/v1/integrations/hubs/{hub['hubId']}",
                    headers={"Authorization": f"Bearer {hub['accessToken']}"},
                    json={"channelId": "Direct", "name": f"dest-{i}",
                          "configuration": {"integrationType": "Agent", "webhookUrl": url}})
                if r.status_code != 201:
                    raise RuntimeError(f"creating integration {i}: {r.status_code} {r.text}")
                body = r.json()
                out[i] = {"integrationId": body["integrationId"], "hubId": hub["hubId"],
                          "hub": i % hubs, "url": url,
                          "publicSigningKey": body["configuration"]["publicSigningKey"]}

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return out


# ------------------------------------------------------------------------ deliveries


def delivery_record(hub_id: str, destination_id: str, conversation: str, text: str,
                    marks: dict[str, str], now_ms: int) -> tuple[bytes, bytes, bytes]:
    """A `deliveries` record as the router writes it: (key, value, the body a webhook gets).

    `marks` go into ``activity.metadata`` (the receiver reads ``k``, ``s``, ``t``).
    """
    import msgspec

    from switchboard.ids import delivery_id, stable_id
    from switchboard.model import Activity, Delivery, DirectEnvelope, TextMessage
    from switchboard.model import Sender as ActivitySender

    activity_id = stable_id("bench", uuid.uuid4().hex)
    activity = Activity(
        activity_id=activity_id, hub_id=hub_id, integration_id="bench-source",
        channel_id="Direct", type="message:customer", conversation_id=conversation,
        sender=ActivitySender(id="bench-user", name="Bench"), timestamp=now_ms,
        message=TextMessage(text=text), metadata=marks)
    delivery = Delivery(delivery_id=delivery_id(activity_id, destination_id), hub_id=hub_id,
                        destination_id=destination_id, conversation_id=conversation,
                        activity=activity, created_at=now_ms)
    body = msgspec.json.encode(DirectEnvelope(hub_id=hub_id, integration_id=destination_id,
                                              conversation_id=conversation,
                                              activity=activity))
    return destination_id.encode(), msgspec.json.encode(delivery), body


def webhook_id(value: bytes) -> str:
    return str(orjson.loads(value)["deliveryId"])


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], *,
                  sign: Callable[[bytes, bytes], list[tuple[str, bytes]]] | None = None
                  ) -> float:
    """Write (key, value) records with acks=all, as fast as the broker takes them; seconds.
    `sign` gives a record's headers (the hub's MAC: readers refuse records without it)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        start = time.perf_counter()
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key,
                                               headers=sign(key, value) if sign else None))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - start
    finally:
        await producer.stop()


# ------------------------------------------------------------------------ profiling


class PySpy:
    """``py-spy record`` on a running process: a flame graph (SVG) and a per-function table.

    Two samplers run side by side, non-blocking (the target is never paused): one writes
    the SVG, one the raw collapsed stacks that `top()` aggregates.
    """

    def __init__(self, pid: int, svg: Path, duration: float, rate: int = 100,
                 cpu: int | None = None) -> None:
        spy = str(Path(sys.executable).with_name("py-spy"))
        self.svg = svg
        self.raw = svg.with_suffix(".txt")
        common = ["record", "--pid", str(pid), "--duration", str(max(1, round(duration))),
                  "--rate", str(rate), "--nonblocking"]
        self.procs = [
            subprocess.Popen(pinned([spy, *common, "--format", "flamegraph", "-o", str(svg)],
                                    cpu), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            subprocess.Popen(pinned([spy, *common, "--function", "--full-filenames",
                                     "--format", "raw", "-o", str(self.raw)], cpu),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
        ]

    def wait(self, timeout: float = 60.0) -> None:
        for proc in self.procs:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                continue
            if proc.returncode:
                print(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')}",
                      file=sys.stderr)

    def top(self, n: int = 25) -> dict[str, Any]:
        return collapsed_top(self.raw, n)


def _where(frame: str) -> tuple[str, str]:
    """(package, short name) of a ``func (/full/path.py:line)`` frame."""
    func, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        rel = path.split("site-packages/", 1)[1]
        package = rel.split("/", 1)[0].removesuffix(".py")
    elif "/lib/python3" in path:
        rel = path.split("/lib/python3", 1)[1].split("/", 2)[-1]
        package = "stdlib " + rel.split("/", 1)[0].removesuffix(".py")
    elif "/switchboard/" in path:
        rel = "switchboard/" + path.rsplit("/switchboard/", 1)[1]
        package = "switchboard " + Path(rel).stem
    else:
        rel = Path(path).name or path
        package = rel
    return package, f"{func} ({rel})"


def collapsed_top(path: Path, n: int = 25) -> dict[str, Any]:
    """Self and total share of the samples per function, and self share per package."""
    import collections

    self_count: collections.Counter[str] = collections.Counter()
    total_count: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    samples = 0
    if not path.exists():
        return {"samples": 0, "self": [], "total": [], "packages": []}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_where(f) for f in stack.split(";")]
        samples += count
        self_count[frames[-1][1]] += count
        by_package[frames[-1][0]] += count
        for name in {f[1] for f in frames}:
            total_count[name] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100 * v / samples) for k, v in counter.most_common(n)]

    return {"samples": samples, "self": share(self_count), "total": share(total_count),
            "packages": share(by_package)}


def print_profile(top: dict[str, Any], n: int = 15) -> None:
    print(f"profile: {top['samples']} samples (active only); % of samples")
    print("  self %  function (top of the stack)")
    for name, pct in top["self"][:n]:
        print(f"  {pct:6.1f}  {name}")
    print("  self %  by package (switchboard: by module)")
    for name, pct in top["packages"][:n]:
        print(f"  {pct:6.1f}  {name}")
    print("  total %  function (anywhere on the stack)")
    for name, pct in top["total"][:n]:
        print(f"  {pct:6.1f}  {name}")


# ------------------------------------------------------------------------ delivery benchmarks
# Shared by deliverer_throughput.py, isolation.py and scale_out.py: a broker, a receiver
# and N destination integrations; batches of `deliveries` records; watching the receiver.


@dataclasses.dataclass
class DeliverySetup:
    broker: Any
    env: dict[str, str]  # for every hub process (deliverers get extra settings on top)
    receiver: Receiver
    destinations: list[dict[str, Any]]
    topic: str  # the prefixed `deliveries` topic

    def fork(self) -> DeliverySetup:
        """The same hubs and integrations on a fresh topic prefix: new topics and consumer
        groups, nothing left over from earlier runs. The registry is copied record by record
        (the sealed secrets stay valid: every process has the same secret key)."""
        from switchboard.kafka import DELIVERIES

        env = {**self.env, "SWITCHBOARD_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}."}
        run(copy_registry(self.env, env))
        return dataclasses.replace(self, env=env,
                                   topic=env["SWITCHBOARD_TOPIC_PREFIX"] + DELIVERIES)

    @functools.cached_property
    def _guard(self) -> Any:
        from switchboard.record_mac import guard_for
        from switchboard.settings import Settings

        return guard_for(Settings.from_env(self.env))

    def mac(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """The headers of a delivery record as the hub writes it (with its MAC: the
        deliverer refuses records without one)."""
        headers: list[tuple[str, bytes]] = self._guard.sign_headers(self.topic, key, value, None)
        return headers

    def deliverer(self, name: str = "deliverer", cpu: int | None = None,
                  extra_env: dict[str, str] | None = None) -> Child:
        """``switchboard serve deliverer`` (pinned to `cpu`); not waited for."""
        port = free_port()
        return Child(name, serve_cmd("deliverer", port), env={**self.env, **(extra_env or {})},
                     cpu=cpu, port=port)


async def copy_registry(src_env: dict[str, str], dst_env: dict[str, str]) -> int:
    """Create the topics of `dst_env`'s prefix and copy `src_env`'s registry into them."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from switchboard.broker_config import kafka_kwargs
    from switchboard.kafka import REGISTRY
    from switchboard.kafka_topics import ensure_topics
    from switchboard.settings import Settings

    dst = Settings.from_env(dst_env)
    await ensure_topics(dst)
    src = TopicPartition(src_env["SWITCHBOARD_TOPIC_PREFIX"] + REGISTRY, 0)
    connect: dict[str, Any] = kafka_kwargs(dst)  # the hub's own TLS / SASL settings
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **connect)
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **connect)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([src])
        await consumer.seek_to_beginning(src)
        end = (await consumer.end_offsets([src]))[src]
        futures = []
        while await consumer.position(src) < end:
            batch = await consumer.getmany(src, timeout_ms=500)
            for rec in batch.get(src, []):
                # With its MAC: it covers the topic without prefix, and the key is shared.
                futures.append(await producer.send(dst.topic(REGISTRY), rec.value,
                                                   headers=list(rec.headers), key=rec.key))
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()
        await consumer.stop()


@contextlib.contextmanager
def delivery_setup(kind: str, urls: Sequence[str], *, hubs: int, aux_cpu: int | None,
                   partitions: int, extra_env: Sequence[str] = (),
                   receiver: Receiver | None = None) -> Iterator[DeliverySetup]:
    """Broker and receiver on `aux_cpu`; a short-lived ``serve api`` process creates one
    Direct Agent integration per URL (``{receiver}`` in a URL is the receiver's base URL)
    over `hubs` hubs, and is stopped before anything is measured."""
    with dev_broker(kind, aux_cpu) as broker:
        env = hub_env(broker.bootstrap, broker.kind, extra_env, partitions)
        recv = receiver or Receiver(cpu=aux_cpu)
        try:
            recv.wait_ready()
            port = free_port()
            api = Child("api", serve_cmd("api", port), env=env, port=port)
            try:
                api.wait_http(timeout=120 if kind == "kafka" else 60)
                dests = run(create_destinations(
                    f"http://{LOOPBACK}:{port}", env["SWITCHBOARD_ADMIN_TOKEN"],
                    [u.format(receiver=recv.url) for u in urls], hubs))
            finally:
                api.stop()
            from switchboard.kafka import DELIVERIES

            yield DeliverySetup(broker, env, recv, dests,
                                env["SWITCHBOARD_TOPIC_PREFIX"] + DELIVERIES)
        finally:
            recv.stop()


@dataclasses.dataclass
class Planned:
    """One prepared delivery: destination index, lane key, sequence in its lane, id, record."""

    dest: int
    lane: str
    seq: int
    webhook_id: str
    key: bytes
    value: bytes
    body: bytes


class Planner:
    """Makes `deliveries` records spread over destinations and conversations.

    Record k of a batch goes to destination ``k % D`` (of the chosen ones), conversation
    ``(k // D) % conversations``; each (destination, conversation) lane numbers its
    records 0, 1, 2, … across batches, so the receiver can check the order.
    """

    def __init__(self, destinations: Sequence[dict[str, Any]], conversations: int,
                 text_bytes: int = 120) -> None:
        from switchboard.ids import stable_id

        self.destinations = destinations
        self.conversations = conversations
        self.next_seq: dict[str, int] = {}
        self.filler = "x" * max(0, text_bytes - 40)
        self._conv = {(d, c): stable_id("bench-conversation", str(d), str(c))
                      for d in range(len(destinations)) for c in range(conversations)}

    def one(self, dest: int, conversation: int, due_us: int = 0) -> Planned:
        lane = f"{dest}/{conversation}"
        seq = self.next_seq.get(lane, 0)
        self.next_seq[lane] = seq + 1
        d = self.destinations[dest]
        key, value, body = delivery_record(
            d["hubId"], d["integrationId"], self._conv[dest, conversation],
            f"bench {lane} #{seq} {self.filler}", {"k": lane, "s": str(seq), "t": str(due_us)},
            int(time.time() * 1000))
        return Planned(dest, lane, seq, webhook_id(value), key, value, body)

    def batch(self, n: int, dests: Sequence[int] | None = None) -> list[Planned]:
        chosen = list(range(len(self.destinations))) if dests is None else list(dests)
        return [self.one(chosen[k % len(chosen)], (k // len(chosen)) % self.conversations)
                for k in range(n)]


@dataclasses.dataclass
class Watch:
    """What `watch_arrivals` saw: polls of (seconds, unique arrivals, CPU s per process)."""

    samples: list[tuple[float, int, dict[str, float]]]
    started: float
    expected: int
    warm: int
    cores: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    core: int | None = None

    @property
    def done(self) -> bool:
        return bool(self.samples) and self.samples[-1][1] >= self.expected

    def window(self) -> dict[str, Any]:
        """Rate and CPU per delivery from the first poll at ≥ `warm` arrivals to the end."""
        if not self.samples:
            return {}
        first = next((s for s in self.samples if s[1] >= self.warm), self.samples[-1])
        last = self.samples[-1]
        n = last[1] - first[1]
        seconds = last[0] - first[0]
        arrivals = [s for s in self.samples if s[1] > 0]
        out: dict[str, Any] = {
            "measured": n, "seconds": seconds, "rate": n / seconds if seconds > 0 else 0.0,
            "first_arrival_s": arrivals[0][0] if arrivals else float("nan"),
            "total_s": last[0],
        }
        if len(self.cores) == len(self.samples):
            i = self.samples.index(first)
            out["core"] = core_share(self.cores[i], self.cores[-1])
        for name in last[2]:
            used = last[2][name] - first[2][name]
            out[f"{name}_cpu_us_per_delivery"] = used / n * 1e6 if n else float("nan")
            out[f"{name}_cpu_percent"] = 100 * used / seconds if seconds > 0 else float("nan")
        return out


def watch_arrivals(receiver: Receiver, pids: dict[str, int | None], expected: int, *,
                   warm: int, timeout: float, poll_s: float = 0.02,
                   alive: Child | None = None, on_warm: Any = None,
                   first_timeout: float = 90.0, core: int | None = None) -> Watch:
    """Poll the receiver until `expected` unique webhook-ids arrived (or `timeout`, or
    nothing at all within `first_timeout`: a sender that never started)."""
    started = time.perf_counter()
    watch = Watch([], started, expected, warm, core=core)
    warmed = False
    while True:
        unique = receiver.stats()["unique"]
        now = time.perf_counter()
        watch.samples.append((now - started, unique,
                              {k: cpu_seconds(pid) for k, pid in pids.items()}))
        watch.cores.append(core_times(core))
        if not warmed and unique >= warm:
            warmed = True
            if on_warm is not None:
                on_warm()
        if unique >= expected or now - started > timeout:
            return watch
        if unique == 0 and now - started > first_timeout:
            print(f"nothing arrived in {first_timeout:.0f} s", file=sys.stderr)
            return watch
        if alive is not None and alive.proc.poll() is not None and unique < expected:
            # Give the last in-flight answers a moment, then stop waiting for a dead sender.
            time.sleep(0.5)
            if receiver.stats()["unique"] < expected:
                alive.check_alive()
        time.sleep(poll_s)


def lane_order(records: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Per lane, in arrival order: first arrivals whose sequence number is lower than one
    already seen (reordered), and repeated webhook-ids (duplicates)."""
    seen: set[str] = set()
    high: dict[str, int] = {}
    reordered = duplicates = 0
    for _, _, wid, lane, seq, _ in sorted(records, key=lambda r: r[0]):
        if wid in seen:
            duplicates += 1
            continue
        seen.add(wid)
        if lane is None or seq is None:
            continue
        if seq < high.get(lane, -1):
            reordered += 1
        high[lane] = max(high.get(lane, -1), seq)
    return {"reordered": reordered, "duplicates": duplicates}


def arrival_rate(records: Sequence[Sequence[Any]], skip: int) -> float:
    """Unique arrivals per second between the `skip`-th and the last (receiver clock)."""
    times: list[int] = []
    seen: set[str] = set()
    for arrival, _, wid, *_ in sorted(records, key=lambda r: r[0]):
        if wid not in seen:
            seen.add(wid)
            times.append(arrival)
    if len(times) <= skip + 1:
        return float("nan")
    return (len(times) - 1 - skip) / ((times[-1] - times[skip]) / 1e9)
