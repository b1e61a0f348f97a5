"""End-to-end latency: customer message in at the ingress → agent's webhook receives it.

A hub with every service (api, ingress, router, deliverer, stream) runs in its own process
(``--topology split``: api+ingress, router and deliverer in three processes, as the Helm
chart deploys them) on an embedded Tansu broker (or Apache Kafka with ``--broker kafka``).
This process hosts a
loopback webhook receiver (uvicorn) and posts Standard Webhooks-signed customer messages
to ``POST /ingress/{customer}`` at a fixed rate (open loop: message i is due at
``start + i / rate`` whatever happened to the ones before). Each message carries a unique
text; the receiver matches the Agent delivery by that text and records when it arrived.
Latency = arrival at the receiver minus the time the message was due to be sent, so a stalled
sender cannot hide delays (no coordinated omission).

Baseline, in the same run, at the same rate, through the same client and receiver: a plain
HTTP POST of a delivery-shaped body straight to the receiver (no hub), timed the same way.
``e2e / baseline`` then says what the hub adds, on this machine, today.

Reported: p50/p95/p99/max, messages lost (accepted with 202 but never delivered; must be
0), duplicates, and ingress errors. Everything stays on 127.0.0.1.

    .venv/bin/python benchmarks/e2e_latency.py [--rate 200] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from _common import (
    Hub,
    Pool,
    PySpy,
    broker_and_hub,
    cpu_seconds,
    create_integrations,
    latency_summary,
    machine_note,
    pin_pid,
    print_profile,
    raw_request,
    rss_mib,
    run,
    signed_requests,
)
from switchboard.brokers import free_port
from switchboard.kafka import ACTIVITIES, DELIVERIES
from switchboard.settings import Settings

# "single" is what `switchboard dev` runs; "split" is one process per stage, as in the chart.
TOPOLOGIES = {
    "single": [["api", "ingress", "router", "deliverer", "stream"]],
    "split": [["api", "ingress"], ["router"], ["deliverer"]],
}


class TopicWatch:
    """With --hops: when each e2e message was produced to a topic (its record's CreateTime).

    CreateTime is wall-clock milliseconds set by the producing stage; it is mapped onto
    this process's perf_counter so hops can be subtracted from the other timings.
    """

    PATTERN = re.compile(rb"e2e [0-9a-f]{8} [0-9]+")

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.produced: dict[str, float] = {}
        self._offset = time.perf_counter() - time.time()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicWatch:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, group_id=None,
            enable_auto_commit=False, auto_offset_reset="latest", fetch_max_wait_ms=50)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    for m in self.PATTERN.finditer(rec.value or b""):
                        self.produced.setdefault(m.group(0).decode(),
                                                 rec.timestamp / 1000 + self._offset)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


def hops(due: dict[str, float], arrived: dict[str, float], activities: TopicWatch,
         deliveries: TopicWatch) -> dict[str, dict[str, float]]:
    """Latency split by stage for the messages seen at every point."""
    texts = [t for t in due if t in arrived and t in activities.produced
             and t in deliveries.produced]
    a, d = activities.produced, deliveries.produced
    return {
        "ingress (due → activity produced)": latency_summary([a[t] - due[t] for t in texts]),
        "router (activity → delivery produced)": latency_summary([d[t] - a[t] for t in texts]),
        "deliverer (delivery → received)": latency_summary([arrived[t] - d[t] for t in texts]),
    }


class BrokerFloor:
    """What the broker alone costs at this rate: two hops, no hub.

    Each message is produced (acks=all) to one topic, a relay consumer produces it to a
    second, and a reader takes it from there: the two broker round trips the hub's path
    needs at the least (ingress → router → deliverer), with the hub's producer and fetch
    settings, in the same run on the same broker after the hub's own traffic (so the
    broker holds at least as many records as during the hub's phase). Its latency is due
    time → read from the second topic.
    """

    def __init__(self, bootstrap: str, prefix: str, fetch_wait_ms: int) -> None:
        self.bootstrap = bootstrap
        self.first, self.second = prefix + "floor.a", prefix + "floor.b"
        self.fetch_wait_ms = fetch_wait_ms
        self.arrived: dict[str, float] = {}
        self._all_read = asyncio.Event()

    async def run(self, texts: list[str], rate: float, senders: int) -> dict[str, float]:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 4, 1) for t in (self.first, self.second)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    linger_ms=2)
        consumers = [AIOKafkaConsumer(t, bootstrap_servers=self.bootstrap, group_id=None,
                                      auto_offset_reset="earliest",
                                      fetch_max_wait_ms=self.fetch_wait_ms)
                     for t in (self.first, self.second)]
        await producer.start()
        for c in consumers:
            await c.start()

        async def relay() -> None:
            while True:
                batch = await consumers[0].getmany(timeout_ms=100)
                futures = [await producer.send(self.second, r.value, key=r.key)
                           for records in batch.values() for r in records]
                if futures:
                    await asyncio.gather(*futures)

        async def read() -> None:
            while True:
                batch = await consumers[1].getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        self.arrived.setdefault((r.value or b"").decode(), now)
                if len(self.arrived) >= len(texts):
                    self._all_read.set()

        tasks = [asyncio.create_task(relay()), asyncio.create_task(read())]
        due: dict[str, float] = {}
        try:
            start = time.perf_counter() + 0.5
            sends = []
            for i, text in enumerate(texts):
                at = start + i / rate
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                due[text] = at
                sends.append(await producer.send(self.first, text.encode(),
                                                 key=str(i % senders).encode()))
            await asyncio.gather(*sends)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_read.wait(), 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in consumers:
                await c.stop()
            await producer.stop()
        latencies = [self.arrived[t] - due[t] for t in texts if t in self.arrived]
        return {**latency_summary(latencies), "sent": len(texts),
                "lost": len(texts) - len(latencies)}


class Sink:
    """The webhook receiver: records the first arrival time of each message text, per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.arrivals: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self.duplicates: collections.Counter[str] = collections.Counter()
        self.unmatched: collections.Counter[str] = collections.Counter()
        # Client (host, port) pairs seen per path: how many connections the sender used.
        self.peers: dict[str, set[tuple[str, int]]] = collections.defaultdict(set)
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="off"))
        self._task: asyncio.Task[None] | None = None

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        now = time.perf_counter()
        path = request.path_params["path"]
        if request.client is not None:
            self.peers[path].add((request.client.host, request.client.port))
        try:
            text = orjson.loads(body)["activity"]["message"]["text"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unmatched[path] += 1
            return Response(status_code=200)
        seen = self.arrivals[path]
        if text in seen:
            self.duplicates[path] += 1
        else:
            seen[text] = now
        return Response(status_code=200)

    async def start(self) -> Sink:
        self._task = asyncio.create_task(self._server.serve())
        # uvicorn offers no started event to await.
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def wait_for(self, path: str, texts: Sequence[str], timeout: float) -> bool:
        """Until every text arrived at `path` (True) or `timeout` passed (False)."""
        deadline = time.perf_counter() + timeout
        seen = self.arrivals[path]
        while time.perf_counter() < deadline:
            if all(t in seen for t in texts):
                return True
            await asyncio.sleep(0.05)
        return all(t in seen for t in texts)


async def open_loop(pool: Pool, requests: Sequence[tuple[str, bytes]], rate: float
                    ) -> tuple[dict[str, float], dict[str, int], list[float]]:
    """Send request i at start + i/rate; returns (due time, status, round trips) per text."""
    due: dict[str, float] = {}
    status: dict[str, int] = {}
    round_trips: list[float] = []

    async def one(text: str, data: bytes, at: float) -> None:
        status[text] = await pool.request(data)
        round_trips.append(time.perf_counter() - at)

    tasks = []
    start = time.perf_counter() + 0.05
    for i, (text, data) in enumerate(requests):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due[text] = at
        tasks.append(asyncio.create_task(one(text, data, at)))
    await asyncio.gather(*tasks)
    return due, status, round_trips


def summarize(sink: Sink, path: str, due: dict[str, float], status: dict[str, int],
              round_trips: list[float], ok: int) -> dict[str, Any]:
    arrived = sink.arrivals[path]
    accepted = [t for t in due if status.get(t) == ok]
    latencies = [arrived[t] - due[t] for t in accepted if t in arrived]
    return {
        "sent": len(due),
        "accepted": len(accepted),
        "send_errors": len(due) - len(accepted),
        "delivered": len(latencies),
        "lost": len(accepted) - len(latencies),
        "duplicates": sink.duplicates[path],
        **latency_summary(latencies),
        "post_round_trip_p50_ms": latency_summary(round_trips)["p50_ms"],
    }


async def bench(args: argparse.Namespace, sink: Sink, hub: Hub,
                integ: dict[str, dict[str, Any]]) -> dict[str, Any]:
    hub_port = hub.main.port
    watches: list[TopicWatch] = []
    if args.hops:
        for topic in (ACTIVITIES, DELIVERIES):
            watches.append(await TopicWatch(hub.bootstrap, hub.topic_prefix + topic).start())
    customer = integ["customer"]
    ingress = f"/ingress/{customer['integrationId']}"
    key = customer["configuration"]["privateSigningKey"]
    run_id = uuid.uuid4().hex[:8]
    hub_pool = Pool(hub_port, args.connections)
    sink_pool = Pool(sink.port, args.connections)
    try:
        # 1. Wait until the router and deliverer have joined their groups: one message at a
        #    time until the first reaches the agent.
        deadline = time.perf_counter() + args.ready_timeout
        probe = 0
        while True:
            text = f"probe {run_id} {probe}"
            probe += 1
            [data] = signed_requests(hub_port, ingress, key, [text], 1)
            if await hub_pool.request(data) == 202 and await sink.wait_for("agent", [text], 1.0):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no delivery reached the agent in {args.ready_timeout} s")
        # 2. Warm up at the target rate; every sender opens its conversation here.
        n_warm = max(args.senders, int(args.rate * args.warmup))
        texts = [f"warm {run_id} {i}" for i in range(n_warm)]
        warm = list(zip(texts, signed_requests(hub_port, ingress, key, texts, args.senders),
                        strict=True))
        await open_loop(hub_pool, warm, args.rate)
        await sink.wait_for("agent", texts, args.drain_timeout)
        await asyncio.sleep(0.5)

        n = int(args.rate * args.duration)
        # 3. Baseline: the same receiver, the same client and rate, no hub in between.
        texts = [f"base {run_id} {i}" for i in range(n)]
        plain = [(t, raw_request(sink.port, "/baseline", orjson.dumps(
            {"activity": {"message": {"type": "text", "text": t}}}))) for t in texts]
        due, status, rtts = await open_loop(sink_pool, plain, args.rate)
        await sink.wait_for("baseline", texts, args.drain_timeout)
        baseline = summarize(sink, "baseline", due, status, rtts, 200)
        await asyncio.sleep(0.5)

        # 4. End to end through the hub.
        texts = [f"e2e {run_id} {i}" for i in range(n)]
        signed = list(zip(texts, signed_requests(hub_port, ingress, key, texts, args.senders),
                          strict=True))
        pids = {"broker": hub.broker_pid, "bench": os.getpid()}
        pids.update({f"hub[{','.join(s.services)}]": s.proc.pid for s in hub.servers})
        spies: dict[str, PySpy] = {}
        if args.profile is not None:
            # One sampler per hub process (with --topology split: per stage), off its core.
            args.profile.mkdir(parents=True, exist_ok=True)
            for server in hub.servers:
                name = "-".join(server.services)
                spies[name] = PySpy(server.proc.pid, args.profile / f"e2e-{name}.svg",
                                    args.duration, cpu=args.aux_cpu)
        cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        rss_before = rss_mib(hub.broker_pid)
        wall = time.perf_counter()
        due, status, rtts = await open_loop(hub_pool, signed, args.rate)
        accepted = [t for t in texts if status.get(t) == 202]
        await sink.wait_for("agent", accepted, args.drain_timeout)
        wall = time.perf_counter() - wall
        e2e = summarize(sink, "agent", due, status, rtts, 202)
        # Share of one core each process used from the first send to the last delivery.
        e2e["cpu_percent"] = {k: round(100 * (cpu_seconds(pid) - cpu_before[k]) / wall, 1)
                              for k, pid in pids.items()}
        e2e["broker_rss_mib"] = [round(rss_before, 1), round(rss_mib(hub.broker_pid), 1)]
        for spy in spies.values():
            await asyncio.to_thread(spy.wait)
        result = {"baseline": baseline, "e2e": e2e, "unmatched": dict(sink.unmatched),
                  "profiles": {name: spy.top(30) for name, spy in spies.items()},
                  "customer_got": len(sink.arrivals["customer"]),
                  # Over the whole run, probes and warm-up included.
                  "agent_requests": len(sink.arrivals["agent"]) + sink.duplicates["agent"],
                  "agent_connections": len(sink.peers["agent"])}
        if watches:
            await asyncio.sleep(0.5)
            result["hops"] = hops(due, sink.arrivals["agent"], *watches)
        if args.floor:
            # 5. The broker alone, same rate and count, after the hub's traffic.
            hub_env = dict(item.split("=", 1) for item in args.hub_env)
            wait_ms = Settings(broker_kind="kafka" if args.broker == "kafka" else "tansu",
                               fetch_max_wait_ms=int(hub_env.get(
                                   "SWITCHBOARD_FETCH_MAX_WAIT_MS", "0"))).fetch_wait_ms
            floor = BrokerFloor(hub.bootstrap, hub.topic_prefix, wait_ms)
            result["broker_floor"] = await floor.run(
                [f"floor {run_id} {i}" for i in range(n)], args.rate, args.senders)
        return result
    finally:
        hub_pool.close()
        sink_pool.close()
        for w in watches:
            await w.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sink = await Sink().start()
    try:
        # Servers are started by blocking code; keep the receiver serving meanwhile.
        hub_cm = broker_and_hub(args.broker, TOPOLOGIES[args.topology], args.hub_env,
                                hub_cpu=args.cpu, broker_cpu=args.aux_cpu)
        hub = await asyncio.to_thread(hub_cm.__enter__)
        try:
            integ = await asyncio.to_thread(create_integrations, hub.main.base_url,
                                            hub.admin_token, f"{sink.url}/customer",
                                            f"{sink.url}/agent")
            if len(hub.servers) > 1:
                await asyncio.sleep(1.0)  # the other processes' registry views catch up
            return await bench(args, sink, hub, integ)
        finally:
            await asyncio.to_thread(hub_cm.__exit__, None, None, None)
    finally:
        with contextlib.suppress(Exception):
            await sink.stop()


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    base, e2e = result["baseline"], result["e2e"]
    print(f"\ne2e latency: {args.rate:g} msg/s for {args.duration:g} s, broker {args.broker}, "
          f"{args.senders} conversations, topology {args.topology}")
    print(f"{'':24} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'sent':>6} {'lost':>5} {'dup':>4} {'errors':>6}")
    for name, r in (("baseline (POST→receiver)", base), ("e2e (ingress→agent)", e2e)):
        print(f"{name:24} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['max_ms']:8.2f} {r['sent']:6d} {r['lost']:5d} {r['duplicates']:4d} "
              f"{r['send_errors']:6d}")
    print(f"ingress 202 round trip p50: {e2e['post_round_trip_p50_ms']:.2f} ms "
          f"(baseline POST round trip p50: {base['post_round_trip_p50_ms']:.2f} ms)")
    print(f"the hub used {result['agent_connections']} TCP connections for "
          f"{result['agent_requests']} deliveries to the agent (whole run)")
    cpu = ", ".join(f"{k} {v}" for k, v in e2e["cpu_percent"].items())
    print(f"CPU during the e2e phase (% of one core): {cpu} (bench = load generator + receiver)")
    print(f"ratio e2e / baseline: p50 {e2e['p50_ms'] / base['p50_ms']:.1f}x, "
          f"p99 {e2e['p99_ms'] / base['p99_ms']:.1f}x")
    if "broker_floor" in result:
        f = result["broker_floor"]
        print(f"{'broker floor (2 hops)':24} {f['p50_ms']:8.2f} {f['p95_ms']:8.2f} "
              f"{f['p99_ms']:8.2f} {f['max_ms']:8.2f} {f['sent']:6d} {f['lost']:5d}"
              "   (the broker alone, after the hub's phase)")
    rss = e2e["broker_rss_mib"]
    print(f"broker resident memory: {rss[0]:.0f} MiB before the e2e phase, {rss[1]:.0f} MiB "
          f"after ({(rss[1] - rss[0]) * 1024 / max(1, e2e['sent']):.1f} KiB per message)")
    for stage, r in result.get("hops", {}).items():
        print(f"  {stage:40} p50 {r['p50_ms']:8.2f}  p99 {r['p99_ms']:8.2f}  "
              f"max {r['max_ms']:8.2f} ms")
    for name, top in result.get("profiles", {}).items():
        print(f"\n== hub process [{name}], e2e phase (flame graph: "
              f"{args.profile}/e2e-{name}.svg)")
        print_profile(top)
    if result["customer_got"] or result["unmatched"]:
        print(f"unexpected: {result['customer_got']} deliveries to the customer, "
              f"unmatched bodies {result['unmatched']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s (default 200)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of measured sending (default 10)")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--senders", type=int, default=50,
                        help="distinct customers, i.e. conversations (default 50)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unmeasured sending at the rate first (default 2)")
    parser.add_argument("--connections", type=int, default=64,
                        help="most concurrent client connections (default 64)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="how long to wait for the last deliveries (default 30 s)")
    parser.add_argument("--ready-timeout", type=float, default=60.0,
                        help="how long the first delivery may take (default 60 s)")
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="single",
                        help="single: every service in one hub process (as `switchboard dev`); "
                             "split: api+ingress, router and deliverer in three processes")
    parser.add_argument("--hops", action="store_true",
                        help="also split the latency by stage (reads the hub's topics)")
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the hub process, e.g. "
                             "SWITCHBOARD_MAX_IN_FLIGHT_PER_DESTINATION=32 (repeatable)")
    parser.add_argument("--cpu", type=int, default=None,
                        help="run the hub process(es) on this core (e.g. 0)")
    parser.add_argument("--aux-cpu", type=int, default=None,
                        help="run the broker, receiver and load generator on this core (e.g. 1)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy each hub process during the e2e phase (SVG + table)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure the broker alone (two hops, no hub) afterwards")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")
    if args.rate <= 0 or args.duration <= 0 or args.senders < 1:
        parser.error("--rate, --duration and --senders must be positive")

    load_before = machine_note()
    pin_pid(os.getpid(), args.aux_cpu)  # the load generator and receiver stay off the hub's core
    result = run(main_async(args))
    report(result, args)
    print(f"machine: before {load_before}; after {machine_note()}")
    if args.json:
        result["args"] = {k: str(v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps(result, indent=2))
    e2e = result["e2e"]
    return 1 if e2e["lost"] or e2e["send_errors"] or result["baseline"]["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
