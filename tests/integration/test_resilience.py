"""Crash resilience: SIGKILL a router and a deliverer mid-stream, then restart them.

API and ingress run in this process; two routers and two deliverers run as separate OS
processes (`switchboard serve …`) on the same topics. While signed customer messages flow
at a steady pace through several conversations to several agent webhooks, one router and
one deliverer are killed with SIGKILL, and later replacements are started. Checked:

- nothing is lost: every message reaches every agent webhook (invariant 3);
- order is kept: per destination and conversation the first arrivals come in sequence
  (invariant 4); redeliveries after the crash are allowed (at-least-once) but carry the
  original `webhook-id` (invariant 2);
- the survivors take over the dead members' partitions within 15 s (short session
  timeouts), before any replacement exists.

The conversations cover every `activities` partition and the agent integrations every
`deliveries` partition, so whichever partitions each process owns, the killed ones were
doing real work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from switchboard.brokers import free_port
from switchboard.ids import customer_conversation_id
from switchboard.settings import Settings, env_names
from tests.conftest import RunningHub, make_settings
from tests.support import Received, Receiver, message, sign_with_cryptography

pytestmark = pytest.mark.timeout(180)

CONVERSATIONS_PER_PARTITION = 2
RATE = 12.0  # messages per second, all conversations together
KILL_AFTER_S = 8.0  # into the stream
STREAM_AFTER_RESTART_S = 10.0  # the replacements join while messages still flow
RESUME_WITHIN_S = 15.0
DRAIN_TIMEOUT_S = 60.0
SWITCHBOARD = Path(sys.executable).with_name("switchboard")

try:  # resolved here: between fork and exec the child should only call it
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGKILL if the test process dies, so nothing is left behind."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Service:
    """One `switchboard serve <name>` OS process on a loopback port, logging to a file."""

    def __init__(self, name: str, settings: Settings, logs: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SWITCHBOARD_", "KAFKA_"))}
        for field, (var, _default) in env_names().items():
            env[var] = str(getattr(settings, field))
        env["SWITCHBOARD_LOG_LEVEL"] = "INFO"
        self.log_path = logs / f"{name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(SWITCHBOARD), "serve", name, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.proc.pid} port={self.port}>"

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self} exited with {self.proc.returncode}:\n"
                                         + self.log_tail())
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self} not ready after {timeout}s:\n"
                                         + self.log_tail())
                await asyncio.sleep(0.1)

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close_log(self) -> None:
        with contextlib.suppress(OSError):
            self._log.close()


async def _stop_all(services: list[Service], grace: float = 10.0) -> None:
    """SIGTERM everyone (a graceful stop leaves its groups), then SIGKILL who is left."""
    for s in services:
        with contextlib.suppress(OSError):
            if s.proc.poll() is None:
                s.proc.terminate()
    for _ in range(int(grace / 0.1)):
        if all(s.proc.poll() is not None for s in services):
            break
        await asyncio.sleep(0.1)
    for s in services:
        with contextlib.suppress(OSError):
            if s.proc.poll() is None:
                s.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.proc.wait(timeout=5)
        s.close_log()


def _partition(key: str, partitions: int) -> int:
    """The partition our producers (aiokafka's default partitioner) pick for `key`."""
    parts = list(range(partitions))
    result: int = DefaultPartitioner()(key.encode(), parts, parts)
    return result


def _senders(integration_id: str, partitions: int) -> list[str]:
    """Sender ids whose conversations cover every `activities` partition evenly."""
    per: dict[int, list[str]] = defaultdict(list)
    for i in itertools.count():
        if all(len(per[p]) >= CONVERSATIONS_PER_PARTITION for p in range(partitions)):
            break
        sender = f"cust-{i}"
        p = _partition(customer_conversation_id(integration_id, sender), partitions)
        if len(per[p]) < CONVERSATIONS_PER_PARTITION:
            per[p].append(sender)
    return [s for p in range(partitions) for s in per[p]]


async def _agents(hub: RunningHub, hub_id: str, auth: dict[str, str], url: str,
                  partitions: int) -> list[str]:
    """Direct Agent integrations, one per `deliveries` partition (deliveries are keyed by
    destination), with webhooks at `url`/agent/<n>. Returns the webhook paths."""
    paths: dict[int, str] = {}
    for n in range(64):
        if len(paths) == partitions:
            break
        agent = await hub.create_integration(
            hub_id, auth, channelId="Direct", name=f"desk-{n}",
            configuration={"integrationType": "Agent", "webhookUrl": f"{url}/agent/{n}"})
        p = _partition(agent["integrationId"], partitions)
        if p in paths:
            r = await hub.client.delete(f"/api/v1/integrations/{agent['integrationId']}",
                                        headers=auth)
            assert r.status_code < 300, r.text
        else:
            paths[p] = f"/agent/{n}"
    assert len(paths) == partitions
    return sorted(paths.values())


def _item(got: Received) -> tuple[str, str, int]:
    """(webhook path, sender, sequence number) of one delivery."""
    sender, _, seq = got.json["activity"]["message"]["text"].rpartition("#")
    return got.path, sender, int(seq)


def _largest_gap(times: list[float], since: float) -> float:
    """The longest wait for the next arrival from `since` (the kill) to the last one."""
    points = [since, *sorted(t for t in times if t >= since)]
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


async def test_kill_and_restart_router_and_deliverer_mid_stream(
    broker: Any, tmp_path: Path
) -> None:
    # Apache Kafka refuses session timeouts below group.min.session.timeout.ms (6 s by
    # default); the embedded Tansu takes shorter ones.
    session_ms = 6000 if broker.kind == "kafka" else 3000
    settings = make_settings(broker, session_timeout_ms=session_ms, heartbeat_interval_ms=500)
    # Restart once the survivors have taken over (a dead member is noticed after its
    # session timeout); keep streaming while the replacements start and join.
    restart_after_s = 2 * session_ms / 1000 + 4
    stream_s = KILL_AFTER_S + restart_after_s + STREAM_AFTER_RESTART_S
    hub = await RunningHub(settings, ["api", "ingress"]).start()
    receiver = await Receiver().start()
    services: list[Service] = []
    stream: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(150):
            hub_id, auth = await hub.create_hub()
            cust = await hub.create_integration(
                hub_id, auth, channelId="Direct", name="site",
                configuration={"integrationType": "Customer",
                               "webhookUrl": receiver.url + "/customer"})
            paths = await _agents(hub, hub_id, auth, receiver.url, settings.partitions)
            key = cust["configuration"]["privateSigningKey"]
            senders = _senders(cust["integrationId"], settings.partitions)
            per_conversation = math.ceil(stream_s * RATE / len(senders))
            expected = {(path, s, n) for path in paths for s in senders
                        for n in range(per_conversation + 1)}

            # Started after the setup, so every worker's registry view already has it.
            for name in ("router", "router", "deliverer", "deliverer"):
                services.append(Service(name, settings, tmp_path))
            await asyncio.gather(*(s.wait_ready() for s in services))
            routers = [s for s in services if s.name == "router"]
            deliverers = [s for s in services if s.name == "deliverer"]

            async def send(sender: str, seq: int) -> None:
                body = message(f"{sender}#{seq}", sender=sender)
                r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                          headers=sign_with_cryptography(key, body))
                assert r.status_code == 202, r.text

            # Warm-up: seq 0 of every conversation, through both groups to every agent.
            for sender in senders:
                await send(sender, 0)
            for path in paths:
                await receiver.wait_for(path, len(senders), timeout=60)

            async def steady() -> None:
                start = time.monotonic()
                for i in range(per_conversation * len(senders)):
                    delay = start + i / RATE - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await send(senders[i % len(senders)], 1 + i // len(senders))

            stream_started = time.monotonic()
            stream = asyncio.create_task(steady())
            await asyncio.sleep(KILL_AFTER_S)
            assert not stream.done(), "the stream ended before the kill"
            killed_at = time.monotonic()
            for victim in (routers[0], deliverers[0]):
                victim.sigkill()
                assert victim.proc.returncode == -signal.SIGKILL
            before_kill = len(receiver.received)

            # The survivors take over; then replacements join (another rebalance).
            await asyncio.sleep(restart_after_s)
            restarted_at = time.monotonic()
            replacements = [Service("router", settings, tmp_path),
                            Service("deliverer", settings, tmp_path)]
            services += replacements
            await asyncio.gather(*(s.wait_ready() for s in replacements))
            assert not stream.done(), "the stream ended before the replacements were up"
            await stream
            sent_done = time.monotonic()

            for _ in range(int(DRAIN_TIMEOUT_S / 0.2)):
                if {_item(g) for g in receiver.received} >= expected:
                    break
                await asyncio.sleep(0.2)
            drained = time.monotonic()
    finally:
        if stream is not None and not stream.done():
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
        try:
            await _stop_all(services)
        finally:
            await receiver.stop()
            await hub.stop()

    logs = "\n\n".join(f"== {s} ==\n{s.log_tail()}" for s in services)
    got = receiver.received
    seen = {_item(g) for g in got}
    missing = sorted(expected - seen)
    assert not missing, f"lost {len(missing)} deliveries, e.g. {missing[:10]}\n{logs}"
    assert seen == expected, f"unexpected deliveries: {sorted(seen - expected)[:10]}"

    lanes: dict[tuple[str, str], list[Received]] = defaultdict(list)  # (path, sender)
    for g in got:
        path, sender, _ = _item(g)
        lanes[path, sender].append(g)
    duplicates = 0
    ids: dict[tuple[str, str, int], str] = {}
    for lane, arrivals in lanes.items():
        first: list[int] = []
        for g in arrivals:
            item = _item(g)
            if item in ids:
                duplicates += 1
                assert ids[item] == g.headers["webhook-id"], f"{item}: another webhook-id"
            else:
                ids[item] = g.headers["webhook-id"]
                first.append(item[2])
        assert first == sorted(first), f"{lane}: first arrivals out of order: {first}"
        assert len({g.json["conversationId"] for g in arrivals}) == 1
    assert len(set(ids.values())) == len(expected), "two deliveries share a webhook-id"

    # The survivors resumed every lane before any replacement existed.
    stalled = [lane for lane, arrivals in lanes.items()
               if not any(killed_at < g.at < restarted_at for g in arrivals)]
    assert not stalled, f"not resumed by the survivors: {stalled}\n{logs}"
    gaps = {lane: _largest_gap([g.at for g in arrivals], killed_at)
            for lane, arrivals in lanes.items()}
    worst = max(gaps.values())
    print(
        f"\nresilience[{broker.kind}]: session {session_ms} ms; {len(expected)} deliveries "
        f"expected ({len(paths)} agents x {len(senders)} conversations x "
        f"{per_conversation + 1}), {len(got)} received, {duplicates} duplicates; "
        f"{before_kill} before the kill at {killed_at - stream_started:.1f}s into the "
        f"stream; restart {restarted_at - killed_at:.1f}s after it; largest gap after the "
        f"kill {worst:.2f}s (lane), {_largest_gap([g.at for g in got], killed_at):.2f}s "
        f"(all); stream {sent_done - stream_started:.1f}s, drained "
        f"{drained - sent_done:.1f}s after",
    )
    assert worst < RESUME_WITHIN_S, f"stalled {worst:.1f}s after the kill: {gaps}\n{logs}"
