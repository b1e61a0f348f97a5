"""Switchboard vs a peer: the same pipeline as FastStream + aiohttp glue, same broker and run.

The peer is ``benchmarks/peers/faststream_glue.py``: what a user would otherwise write
(Starlette ingress that verifies a Standard Webhooks Ed25519 signature and publishes with
FastStream's KafkaBroker, acks=all; a FastStream subscriber that routes; a FastStream
subscriber that signs and POSTs with one aiohttp session). It runs twice: ``peer`` with
FastStream's default of one message at a time per subscriber (in order, as Switchboard
keeps a conversation's deliveries), and ``peer-concurrent`` with ``max_workers``
(``--peer-concurrent-workers``, 8: concurrent, order not kept), FastStream's knob for
throughput; Switchboard is compared with the better of the two. Switchboard runs as
``switchboard dev`` does: every service (api, ingress, router, deliverer, stream) in one
process. Each system, one after the other, is pinned alone to the measured core
(``--cpu``, ``taskset``), on one development broker (Tansu, or ``--broker kafka``) started
for the run; the broker, the webhook receiver (``_receiver.py``) and this load generator
share the other core (``--aux-cpu``). Each gets a Direct Customer integration (that signs
what it sends) and a Direct Agent integration whose webhook URL is the receiver, 4
partitions per topic, and the same consumer fetch wait (Switchboard's: 10 ms on Tansu,
which always waits a fetch out; 500 ms on Kafka, which answers early).

For each: signed customer messages are sent open loop (message *i* due at
``start + i/rate``, whatever happened to the others; e2e_latency.py's load generator) over
``--senders`` conversations, at rising rates (``--rates``) for ``--duration`` s each. A
rate is **sustained** when every message is answered 202, every accepted one reaches the
agent's webhook within ``--drain-timeout``, and p99 of (arrival at the receiver minus due
time) is at most ``--slo-ms`` (100). The ladder stops at the first rate that fails
(``--attempts`` tries each: the machine is shared). ``--rounds N`` repeats the pair of
ladders, alternating the order (A B C, C B A, …), each ladder with a freshly started
process. Reported per round: the highest sustained rate of each, p50/p99 at the highest
rate all sustained, the ratio switchboard / best peer of the highest sustained rates; then
the median over the rounds. The receiver checks the signature of every 10th
delivery (a bad one fails the step).

``--profile DIR``: afterwards, Switchboard and the better peer once more (fresh process,
warm-up) for one step at that peer's highest sustained rate (median over the rounds;
``--profile-rate`` to choose), with ``py-spy`` sampling the process under test (flame
graph SVG and a per-function table).

    .venv/bin/python benchmarks/peer_compare.py [--rounds 2] [--broker kafka] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

from _common import (
    HERE,
    Child,
    Pool,
    PySpy,
    Receiver,
    ServerProcess,
    broker_pid,
    cpu_seconds,
    create_integrations,
    dev_broker,
    hub_env,
    latency_summary,
    machine_note,
    pin_pid,
    print_profile,
    raw_request,
    run,
)
from e2e_latency import TOPOLOGIES, open_loop
from switchboard.brokers import free_port
from switchboard.keys import generate_signing_keypair
from switchboard.settings import Settings
from switchboard.webhooks import Signer

PARTITIONS = 4
# "peer": FastStream's default, one message at a time per subscriber (in order);
# "peer-concurrent": the same app with FastStream's max_workers (concurrent, unordered).
SYSTEMS = ("peer", "peer-concurrent", "switchboard")
PEERS = ("peer", "peer-concurrent")


@dataclass
class Target:
    """A system under test: its process, where to post, and with which key."""

    name: str
    pid: int
    port: int
    ingress_path: str
    customer_key: str  # whsk_: signs what the customer integration sends
    agent_public: str  # whpk_: verifies what the agent integration receives
    stop: Callable[[], Any]
    check: Callable[[], None]


def start_switchboard(args: argparse.Namespace, broker: Any, receiver: Receiver) -> Target:
    """Every service in one hub process, as ``switchboard dev`` runs them."""
    env = hub_env(broker.bootstrap, broker.kind, args.hub_env, PARTITIONS)
    server = ServerProcess("hub", services=TOPOLOGIES["single"][0], env=env, cpu=args.cpu)
    try:
        server.wait_ready(timeout=120 if args.broker == "kafka" else 60)
        integ = create_integrations(server.base_url, env["SWITCHBOARD_ADMIN_TOKEN"],
                                    f"{receiver.url}/customer", f"{receiver.url}/agent")
    except BaseException:
        server.stop()
        raise

    def check() -> None:
        if server.proc.poll() is not None:
            raise RuntimeError(f"hub exited with {server.proc.returncode}:\n"
                               f"{server.log_tail()}")

    return Target("switchboard", server.proc.pid, server.port,
                  f"/ingress/{integ['customer']['integrationId']}",
                  integ["customer"]["configuration"]["privateSigningKey"],
                  integ["agent"]["configuration"]["publicSigningKey"], server.stop, check)


def start_peer(args: argparse.Namespace, broker: Any, receiver: Receiver,
               name: str = "peer") -> Target:
    """``peers/faststream_glue.py`` with a Customer and an Agent integration of one hub."""
    workers = args.peer_max_workers if name == "peer" else args.peer_concurrent_workers
    hub = f"hub-{uuid.uuid4().hex[:12]}"
    customer_in, customer_out = generate_signing_keypair(), generate_signing_keypair()
    agent_in, agent_out = generate_signing_keypair(), generate_signing_keypair()
    customer = f"cust-{uuid.uuid4().hex[:12]}"
    config = {"topicPrefix": f"peer{uuid.uuid4().hex[:8]}.", "partitions": PARTITIONS,
              "integrations": [
                  {"integrationId": customer, "hubId": hub, "type": "Customer",
                   "publicKey": customer_in.public, "signingKey": customer_out.secret,
                   "webhookUrl": f"{receiver.url}/customer"},
                  {"integrationId": f"agent-{uuid.uuid4().hex[:12]}", "hubId": hub,
                   "type": "Agent", "publicKey": agent_in.public,
                   "signingKey": agent_out.secret, "webhookUrl": f"{receiver.url}/agent"}]}
    fd, path = tempfile.mkstemp(prefix="switchboard-bench-peer-", suffix=".json")
    os.close(fd)
    config_path = Path(path)
    config_path.write_text(json.dumps(config))
    port = free_port()
    child = Child("faststream-glue", [
        sys.executable, str(HERE / "peers" / "faststream_glue.py"), "--config", str(config_path),
        "--port", str(port), "--bootstrap", broker.bootstrap,
        "--fetch-max-wait-ms", str(args.peer_fetch_max_wait_ms),
        "--max-workers", str(workers)], cpu=args.cpu, port=port)

    def stop() -> None:
        child.stop()
        config_path.unlink(missing_ok=True)

    try:
        child.wait_http("/healthz", timeout=120 if args.broker == "kafka" else 60)
    except BaseException:
        stop()
        raise
    return Target(name, child.pid, port, f"/ingress/{customer}", customer_in.secret,
                  agent_out.public, stop, child.check_alive)


# ------------------------------------------------------------------------ one step


def signed_batch(target: Target, tag: str, n: int, senders: int) -> list[tuple[str, bytes]]:
    """`n` signed customer messages; ``metadata`` tells the receiver the step and index."""
    signer = Signer(ed25519=[target.customer_key])
    ts = int(time.time())
    out = []
    for i in range(n):
        text = f"{tag} {i}"
        body = orjson.dumps({"type": "message", "sender": {"id": f"user-{i % senders}"},
                             "message": {"type": "text", "text": text},
                             "metadata": {"k": tag, "s": str(i), "t": "0"}})
        headers = signer.headers(f"msg_{uuid.uuid4().hex}", ts, body)
        out.append((text, raw_request(target.port, target.ingress_path, body, headers)))
    return out


async def wait_arrivals(receiver: Receiver, expected: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if (await asyncio.to_thread(receiver.stats))["unique"] >= expected:
            return
        await asyncio.sleep(0.05)


async def step(target: Target, receiver: Receiver, pool: Pool, rate: float,
               args: argparse.Namespace, tag: str, pids: dict[str, int | None],
               on_start: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Send `rate` msg/s for `args.duration` s; wait for the deliveries; summarize."""
    n = max(1, int(rate * args.duration))
    batch = signed_batch(target, tag, n, args.senders)
    index = {text: i for i, (text, _) in enumerate(batch)}
    await asyncio.to_thread(receiver.reset)
    cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    wall_offset = time.time() - time.perf_counter()
    wall = time.perf_counter()
    if on_start is not None:
        on_start()
    due, status, round_trips = await open_loop(pool, batch, rate)
    accepted = {index[t] for t, s in status.items() if s == 202}
    await wait_arrivals(receiver, len(accepted), args.drain_timeout)
    wall = time.perf_counter() - wall
    cpu = {k: round(100 * (cpu_seconds(pid) - cpu_before[k]) / wall, 1)
           for k, pid in pids.items()}
    due_wall = {index[t]: at + wall_offset for t, at in due.items()}
    arrived: dict[int, float] = {}
    duplicates = 0
    for arrival_ns, path, _, k, s, _ in await asyncio.to_thread(receiver.records):
        if path != "/agent" or k != tag or s is None:
            continue
        if s in arrived:
            duplicates += 1
        else:
            arrived[s] = arrival_ns / 1e9
    latencies = [arrived[i] - due_wall[i] for i in accepted if i in arrived]
    stats = await asyncio.to_thread(receiver.stats)
    result: dict[str, Any] = {
        "rate": rate, "sent": n, "accepted": len(accepted), "errors": n - len(accepted),
        "error_statuses": sorted({s for s in status.values() if s != 202}),
        "delivered": len(latencies), "lost": len(accepted) - len(latencies),
        "duplicates": duplicates, **latency_summary(latencies),
        "ingress_rtt_p50_ms": latency_summary(round_trips)["p50_ms"],
        "cpu_percent": cpu, "signatures_checked": stats["signatures_checked"],
        "bad_signatures": stats["bad_signatures"],
    }
    result["sustained"] = (result["errors"] == 0 and result["lost"] == 0
                           and result["bad_signatures"] == 0
                           and result["p99_ms"] <= args.slo_ms)
    return result


async def settle(receiver: Receiver, timeout: float) -> None:
    """Until nothing has arrived at the receiver for a second (a backlog drained)."""
    deadline = time.perf_counter() + timeout
    last = -1
    while time.perf_counter() < deadline:
        now = (await asyncio.to_thread(receiver.stats))["requests"]
        if now == last:
            return
        last = now
        await asyncio.sleep(1.0)


async def ready(target: Target, receiver: Receiver, pool: Pool, timeout: float) -> None:
    """One message at a time until the first reaches the agent (consumers joined)."""
    deadline = time.perf_counter() + timeout
    probe = 0
    while True:
        target.check()
        await asyncio.to_thread(receiver.reset)
        [(_, data)] = signed_batch(target, f"probe{probe}", 1, 1)
        probe += 1
        if await pool.request(data) == 202:
            await wait_arrivals(receiver, 1, 1.0)
            if (await asyncio.to_thread(receiver.stats))["unique"] >= 1:
                return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{target.name}: no delivery reached the agent in {timeout} s")


def show_step(name: str, r: dict[str, Any]) -> None:
    cpu = r["cpu_percent"]
    print(f"  {name:15} {r['rate']:6g}/s  p50 {r['p50_ms']:8.1f}  p99 {r['p99_ms']:8.1f}  "
          f"max {r['max_ms']:8.1f} ms  202 {r['accepted']}/{r['sent']}  lost {r['lost']}  "
          f"CPU% {name} {cpu.get('target')} broker {cpu.get('broker')} "
          f"receiver {cpu.get('receiver')} loadgen {cpu.get('loadgen')}  "
          f"{'ok' if r['sustained'] else 'FAILED'}", flush=True)


def pids_of(target: Target, receiver: Receiver, broker: Any) -> dict[str, int | None]:
    return {"target": target.pid, "broker": broker_pid(broker), "receiver": receiver.pid,
            "loadgen": os.getpid()}


async def prepare(target: Target, receiver: Receiver, pool: Pool, args: argparse.Namespace,
                  broker: Any) -> None:
    """Until the first delivery arrives, then a warm-up at the first rate (every
    conversation is opened here), then until the receiver is quiet."""
    receiver.set_keys({"/agent": [target.agent_public]})
    await ready(target, receiver, pool, args.ready_timeout)
    warm = await step(target, receiver, pool, args.rates[0],
                      argparse.Namespace(**{**vars(args), "duration": args.warmup}),
                      "warm", pids_of(target, receiver, broker))
    print(f"  {target.name}: warm-up {warm['delivered']}/{warm['sent']} delivered, "
          f"p99 {warm['p99_ms']:.1f} ms", flush=True)
    await settle(receiver, args.drain_timeout)


async def ladder(target: Target, receiver: Receiver, args: argparse.Namespace,
                 broker: Any) -> list[dict[str, Any]]:
    """Every rate in turn until one fails `args.attempts` times; each try's result."""
    results: list[dict[str, Any]] = []
    pids = pids_of(target, receiver, broker)
    pool = Pool(target.port, args.connections)
    try:
        await prepare(target, receiver, pool, args, broker)
        for rate in args.rates:
            for attempt in range(1, args.attempts + 1):
                await asyncio.sleep(1.0)
                r = await step(target, receiver, pool, rate, args,
                               f"{target.name}-{rate:g}-{attempt}", pids)
                r["attempt"] = attempt
                results.append(r)
                show_step(target.name, r)
                if r["sustained"]:
                    break
                await settle(receiver, 60.0)  # let a backlog drain before trying again
            target.check()
            if not results[-1]["sustained"]:
                break
    finally:
        pool.close()
    return results


async def profile_step(target: Target, receiver: Receiver, args: argparse.Namespace,
                       broker: Any, rate: float) -> dict[str, Any]:
    """A step at `rate` with py-spy on the process under test (the sampler on aux)."""
    args.profile.mkdir(parents=True, exist_ok=True)
    svg = args.profile / f"peer-compare-{target.name}-{rate:g}.svg"
    pool = Pool(target.port, args.connections)
    spy: list[PySpy] = []
    try:
        await prepare(target, receiver, pool, args, broker)
        await asyncio.sleep(1.0)
        r = await step(target, receiver, pool, rate, args, f"{target.name}-profile",
                       pids_of(target, receiver, broker),
                       on_start=lambda: spy.append(PySpy(target.pid, svg, args.duration,
                                                         cpu=args.aux_cpu)))
    finally:
        pool.close()
    for s in spy:
        await asyncio.to_thread(s.wait)
    r["profile"] = spy[0].top(30) if spy else {}
    r["flamegraph"] = str(svg)
    show_step(target.name + "+py-spy", r)
    return r


def best(results: Sequence[dict[str, Any]]) -> float:
    ok = [r["rate"] for r in results if r["sustained"]]
    return max(ok) if ok else 0.0


async def run_system(name: str, args: argparse.Namespace, broker: Any, receiver: Receiver,
                     work: Callable[[Target], Any]) -> Any:
    """Start `name` alone on the measured core, do `work` with it, stop it."""
    print(f"{name}: starting", flush=True)
    if name == "switchboard":
        target = await asyncio.to_thread(start_switchboard, args, broker, receiver)
    else:
        target = await asyncio.to_thread(start_peer, args, broker, receiver, name)
    try:
        return await work(target)
    finally:
        await asyncio.to_thread(target.stop)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": [], "profiles": {}}
    with dev_broker(args.broker, args.aux_cpu) as broker:
        receiver = Receiver(cpu=args.aux_cpu, verify_every=10)
        try:
            receiver.wait_ready()
            for rnd in range(args.rounds):
                # Alternate the order (A B, B A, …): a broker that slows as its topics grow,
                # or a neighbour's job, weighs on both alike.
                order = args.systems if rnd % 2 == 0 else args.systems[::-1]
                results: dict[str, Any] = {}
                code: dict[str, str] = {}
                for name in order:
                    print(f"round {rnd + 1}/{args.rounds}: ", end="")
                    code[name] = code_state()  # the hub's code changes under us at times
                    results[name] = await run_system(
                        name, args, broker, receiver,
                        lambda t: ladder(t, receiver, args, broker))
                out["rounds"].append({"order": order, "systems": results, "code": code})
            if args.profile is not None:
                # Switchboard and the better peer, at that peer's highest sustained rate.
                peers = [p for p in PEERS if p in args.systems]
                peer = max(peers, key=lambda p: median_best(out, p)) if peers else None
                rate = (args.profile_rate or (median_best(out, peer) if peer else 0)
                        or args.rates[0])
                for name in [n for n in args.systems if n in (peer, "switchboard")]:
                    out["profiles"][name] = await run_system(
                        name, args, broker, receiver,
                        lambda t, rate=rate: profile_step(t, receiver, args, broker, rate))
        finally:
            receiver.stop()
    return out


def median_best(out: dict[str, Any], name: str) -> float:
    tops = [best(r["systems"][name]) for r in out["rounds"] if name in r["systems"]]
    return statistics.median(tops) if tops else 0.0


def at_rate(results: Sequence[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    """The sustained try at `rate`, else the last try at it, else None."""
    tries = [r for r in results if r["rate"] == rate]
    ok = [r for r in tries if r["sustained"]]
    return (ok or tries or [None])[-1]


def report(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    print(f"\npeer comparison: broker {args.broker}, {args.duration:g} s per rate, "
          f"{args.senders} conversations; sustained = every message 202 and delivered, "
          f"p99 <= {args.slo_ms:g} ms; measured process alone on CPU {args.cpu}")
    print(f"{'round':>5} {'system':15} {'max sustained':>14} {'first failed':>13} "
          f"{'common':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6}")
    summary: dict[str, Any] = {"rounds": []}
    for n, rnd in enumerate(out["rounds"], 1):
        systems = rnd["systems"]
        top = {name: best(results) for name, results in systems.items()}
        # The highest rate both sustained (or, if one sustained nothing, the lowest tried).
        common = min(top.values()) or args.rates[0]
        row_out: dict[str, Any] = {"max_sustained": top, "common_rate": common}
        for name in args.systems:
            results = systems[name]
            failed = results[-1]["rate"] if results and not results[-1]["sustained"] else None
            row = at_rate(results, common)
            row_out[name] = {"first_failed": failed, "at_common": row}
            fail_text = f"{failed:g}/s" if failed is not None else "none"
            figures = (f"{row['p50_ms']:7.1f} {row['p99_ms']:7.1f} "
                       f"{row['cpu_percent']['target']:6.1f}" if row else "")
            print(f"{n:5d} {name:15} {top[name]:12g}/s {fail_text:>13} {common:5g}/s "
                  f"{figures}")
        peer_top = max((top[p] for p in PEERS if p in top), default=None)
        if "switchboard" in top and peer_top is not None:
            row_out["ratio"] = top["switchboard"] / peer_top if peer_top else math.inf
            print(f"{n:5d} ratio switchboard / best peer: {row_out['ratio']:.2f}x "
                  f"(switchboard at {rnd['code']['switchboard']})")
        summary["rounds"].append(row_out)
    if out["rounds"]:
        med = {name: median_best(out, name) for name in args.systems}
        summary["median_max_sustained"] = med
        print(f"highest sustained rate, median of {len(out['rounds'])} round(s): "
              + ", ".join(f"{k} {v:g}/s" for k, v in med.items()))
        peer_med = max((med[p] for p in PEERS if p in med), default=None)
        if "switchboard" in med and peer_med is not None:
            summary["ratio"] = med["switchboard"] / peer_med if peer_med else math.inf
            print(f"throughput ratio switchboard / best peer: {summary['ratio']:.2f}x")
    for name, prof in out["profiles"].items():
        print(f"\n{name} under py-spy at {prof['rate']:g}/s (flame graph {prof['flamegraph']}):")
        if prof.get("profile"):
            print_profile(prof["profile"])
    return summary


def code_state() -> str:
    """The commit measured, and whether the hub's code had uncommitted changes."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=HERE.parent, capture_output=True,
                                  text=True, timeout=10, check=False).stdout.strip()
        except OSError:
            return ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "libs", "services")
    return head + (f" + uncommitted changes in {len(dirty.splitlines())} file(s) of "
                   f"libs/ services/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--rates",
                        default="50,100,150,200,250,300,350,400,500,600,700,850,1000",
                        help="messages/s to try, rising (default 50,…,1000)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of sending per rate (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds at the first rate before the ladder (default 2)")
    parser.add_argument("--slo-ms", type=float, default=100.0,
                        help="highest p99 for a rate to count as sustained (default 100)")
    parser.add_argument("--attempts", type=int, default=2,
                        help="tries per rate before the ladder stops (default 2)")
    parser.add_argument("--senders", type=int, default=50,
                        help="distinct customers, i.e. conversations (default 50)")
    parser.add_argument("--connections", type=int, default=64,
                        help="most concurrent client connections (default 64)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="how long after the last send a delivery may still arrive "
                             "(default 10 s)")
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--cpu", type=int, default=0, help="core of the process under test")
    parser.add_argument("--aux-cpu", type=int, default=1,
                        help="core of the broker, the receiver and the load generator")
    parser.add_argument("--peer-fetch-max-wait-ms", type=int, default=None,
                        help="the peer's consumer fetch wait (default: what Switchboard "
                             "uses: 20 on Tansu, 500 on Kafka)")
    parser.add_argument("--peer-max-workers", type=int, default=1,
                        help="FastStream max_workers per subscriber of `peer` (default 1)")
    parser.add_argument("--peer-concurrent-workers", type=int, default=8,
                        help="FastStream max_workers per subscriber of `peer-concurrent` "
                             "(default 8)")
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the hub process (repeatable)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="ladders per system, in alternating order (default 1)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="then profile each at the peer's highest sustained rate")
    parser.add_argument("--profile-rate", type=float,
                        help="profile at this rate instead")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"which to measure, in this order (default {','.join(SYSTEMS)})")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not args.systems or set(args.systems) - set(SYSTEMS):
        parser.error(f"--systems takes some of {','.join(SYSTEMS)}")
    try:
        args.rates = sorted(float(r) for r in args.rates.split(","))
    except ValueError:
        parser.error("--rates takes numbers separated by commas")
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")
    if not args.rates or args.rates[0] <= 0 or args.duration <= 0 or args.attempts < 1 \
            or args.rounds < 1:
        parser.error("--rates, --duration and --attempts must be positive")
    if args.peer_fetch_max_wait_ms is None:
        args.peer_fetch_max_wait_ms = 500 if args.broker == "kafka" else Settings(
            broker_kind="tansu").fetch_wait_ms

    pin_pid(os.getpid(), args.aux_cpu)  # the load generator stays off the measured core
    load_before = machine_note()
    code = code_state()
    out = run(main_async(args))
    summary = report(out, args)
    print(f"machine: before {load_before}; after {machine_note()}")
    print(f"code: {code}; FastStream {version('faststream')}, aiokafka {version('aiokafka')}")
    if args.json:
        args.json.write_text(json.dumps(
            {"summary": summary, **out, "machine_before": load_before, "code": code,
             "faststream": version("faststream"), "aiokafka": version("aiokafka"),
             "machine_after": machine_note(),
             "args": {k: str(v) for k, v in vars(args).items()}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
