"""Crash resilience: SIGKILL the router and the deliverer mid-stream, restart them.

API and ingress run in this process; two routers and two deliverers run as separate OS
processes (`switchboard serve …`) on the same topics. While signed customer messages flow
at a steady pace through several conversations, one router and the deliverer that is
sending are killed with SIGKILL, and later replacements are started. Checked:

- nothing is lost: every message reaches the agent's webhook (invariant 3);
- order is kept: per conversation the first arrivals come in sequence (invariant 4);
  redeliveries after the crash are allowed (at-least-once) but carry the original
  `webhook-id` (invariant 2);
- the dead members' partitions resume within 15 s (short session timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
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
PER_CONVERSATION = 40  # streamed messages per conversation, after one warm-up message
RATE = 12.0  # messages per second, all conversations together
KILL_AFTER_S = 7.0  # into the stream
RESUME_WITHIN_S = 15.0
DRAIN_TIMEOUT_S = 60.0
SWITCHBOARD = Path(sys.executable).with_name("switchboard")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGKILL if the test process dies, so nothing is left behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Service:
    """One `switchboard serve <name>` OS process on a loopback port."""

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
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
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

    def stop(self) -> None:
        """Terminate (gracefully if it can, leaving its groups), kill if it will not."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return ""

    def connected_to(self, port: int) -> bool:
        """Whether this process holds an established TCP connection to 127.0.0.1:`port`."""
        inodes = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    cols = row.split()
                    remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                    if remote_port == port and cols[3] == "01" and cols[9] in inodes:
                        return True
        return False


def _senders(integration_id: str, partitions: int) -> list[str]:
    """Sender ids whose conversations cover every `activities` partition evenly.

    Every router then owns busy partitions, so killing either one interrupts real work.
    """
    partitioner = DefaultPartitioner()
    parts = list(range(partitions))
    per: dict[int, list[str]] = defaultdict(list)
    i = 0
    while any(len(per[p]) < CONVERSATIONS_PER_PARTITION for p in parts):
        sender = f"cust-{i}"
        i += 1
        key = customer_conversation_id(integration_id, sender).encode()
        p = partitioner(key, parts, parts)
        if len(per[p]) < CONVERSATIONS_PER_PARTITION:
            per[p].append(sender)
    return [s for p in parts for s in per[p]]


def _seq(got: Received) -> tuple[str, int]:
    text = got.json["activity"]["message"]["text"]
    sender, _, seq = text.rpartition("#")
    return sender, int(seq)


def _largest_gap(times: list[float], since: float) -> float:
    """The longest wait for the next arrival from `since` on (the kill) to the last one."""
    points = [since, *sorted(t for t in times if t >= since)]
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


async def test_kill_and_restart_router_and_deliverer_mid_stream(
    broker: Any, tmp_path: Path
) -> None:
    # Apache Kafka refuses session timeouts below group.min.session.timeout.ms (6 s);
    # the embedded Tansu takes shorter ones.
    session_ms = 6000 if broker.kind == "kafka" else 3000
    settings = make_settings(broker, session_timeout_ms=session_ms, heartbeat_interval_ms=500)
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
            await hub.create_integration(
                hub_id, auth, channelId="Direct", name="desk",
                configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
            key = cust["configuration"]["privateSigningKey"]
            senders = _senders(cust["integrationId"], settings.partitions)

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

            # Warm-up: seq 0 of every conversation, once both groups deliver.
            for sender in senders:
                await send(sender, 0)
            await receiver.wait_for("/agent", len(senders), timeout=60)

            async def steady() -> None:
                start = time.monotonic()
                for i in range(PER_CONVERSATION * len(senders)):
                    delay = start + i / RATE - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await send(senders[i % len(senders)], 1 + i // len(senders))

            stream_started = time.monotonic()
            stream = asyncio.create_task(steady())
            await asyncio.sleep(KILL_AFTER_S)
            assert not stream.done(), "the stream ended before the kill"
            busy = [d for d in deliverers if d.connected_to(receiver.port)]
            assert busy, (f"no deliverer is connected to the receiver "
                          f"({len(receiver.at('/agent'))} delivered):\n"
                          + "\n".join(f"== {d} ==\n{d.log_tail()}" for d in services))
            victims = [routers[0], busy[0]]
            killed_at = time.monotonic()
            for victim in victims:
                victim.sigkill()
                assert victim.proc.returncode == -signal.SIGKILL
            before_kill = len(receiver.at("/agent"))

            # The survivors take over; later, replacements join (another rebalance).
            await asyncio.sleep(2.5 * session_ms / 1000 + 4)
            restarted_at = time.monotonic()
            replacements = [Service("router", settings, tmp_path),
                            Service("deliverer", settings, tmp_path)]
            services += replacements
            await asyncio.gather(*(s.wait_ready() for s in replacements))
            assert not stream.done(), "the stream ended before the replacements started"
            await stream
            sent_done = time.monotonic()

            expected = {(s, n) for s in senders for n in range(PER_CONVERSATION + 1)}
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while {_seq(g) for g in receiver.at("/agent")} != expected:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            drained = time.monotonic()
    finally:
        if stream is not None and not stream.done():
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
        for s in services:
            with contextlib.suppress(Exception):
                s.stop()
        await receiver.stop()
        await hub.stop()

    got = receiver.at("/agent")
    seen = {_seq(g) for g in got}
    missing = sorted(expected - seen)
    logs = "\n\n".join(f"== {s} ==\n{s.log_tail()}" for s in services)
    assert not missing, f"lost {len(missing)} messages, e.g. {missing[:10]}\n{logs}"
    assert seen == expected, f"unexpected messages: {sorted(seen - expected)[:10]}"

    by_conversation: dict[str, list[Received]] = defaultdict(list)
    for g in got:
        by_conversation[_seq(g)[0]].append(g)
    duplicates = 0
    ids: dict[tuple[str, int], str] = {}
    for sender, arrivals in by_conversation.items():
        first: list[int] = []
        for g in arrivals:
            item = _seq(g)
            webhook_id = g.headers["webhook-id"]
            if item in ids:
                duplicates += 1
                assert ids[item] == webhook_id, f"{item} redelivered with another webhook-id"
            else:
                ids[item] = webhook_id
                first.append(item[1])
        assert first == sorted(first), f"{sender}: first arrivals out of order: {first}"
        # Conversation and payload agree (the envelope is the one routed for it).
        assert len({g.json["conversationId"] for g in arrivals}) == 1
    assert len(set(ids.values())) == len(expected), "two messages share a webhook-id"
    assert receiver.at("/customer") == []  # echo is off

    per_conversation_gap = {
        sender: _largest_gap([g.at for g in arrivals], killed_at)
        for sender, arrivals in by_conversation.items()
    }
    worst = max(per_conversation_gap.values())
    overall = _largest_gap([g.at for g in got], killed_at)
    print(
        f"\nresilience[{broker.kind}]: session {session_ms} ms; {len(expected)} messages, "
        f"{len(got)} deliveries, {duplicates} duplicates; {before_kill} delivered before "
        f"the kill at {killed_at - stream_started:.1f}s into the stream; restart "
        f"{restarted_at - killed_at:.1f}s after the kill; largest gap after the kill "
        f"{worst:.2f}s per conversation, {overall:.2f}s overall; stream sent in "
        f"{sent_done - stream_started:.1f}s; drained {drained - sent_done:.1f}s after",
    )
    assert worst < RESUME_WITHIN_S, (
        f"delivery stalled {worst:.1f}s after the kill: {per_conversation_gap}\n{logs}")
