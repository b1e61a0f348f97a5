"""Isolation: do destinations that never answer slow down the healthy ones?

Two runs in one invocation, the same traffic, each with a fresh ``switchboard serve
deliverer`` process pinned to the measured core (``--cpu``):

- **all healthy**: ``--destinations`` (1,000) Direct Agent integrations, all answering
  ``200 ok`` at once (the lean receiver of ``_receiver.py``);
- **with hanging**: the same, except that every ``1/--hanging``-th position (10 %) is an
  integration whose webhookUrl never answers (the receiver keeps the connection open and
  says nothing), so each attempt there lasts until the deliverer's timeout
  (``SWITCHBOARD_DELIVERY_TIMEOUT_S``, 10 s) and is then retried as the deliverer sees fit.

Traffic is open loop: delivery *i* is written to ``deliveries`` (as the router writes it)
when it is due, at ``start + i / --rate``, to position ``i % destinations`` and one of
``--conversations`` conversations there, whatever the deliverer does. Its due time rides in
the activity's metadata; the receiver notes the arrival, so latency = arrival - due (the
record timestamp), both on this machine's wall clock. First probes until the deliverer
consumes, then ``--warmup`` s at the rate (unmeasured), then ``--duration`` s measured.

Reported per run for the healthy positions (the same 90 % in both runs): p50/p95/p99/max
latency, lost (not arrived ``--drain-timeout`` s after the last was written), duplicates,
reordered, the deliverer's CPU share, how busy its core was in all (``core %``: anything
above the deliverer's share is another process on that core) and how much of it the
hypervisor stole, and the ratio with hanging / all healthy (target: p99 within 1.2x). Broker,
receiver and this process (the producer) run on the auxiliary core. Each run has its own
topics and consumer group (the registry copied over), so ``--rounds N`` can alternate the
two N times; the median ratio is printed.

    .venv/bin/python benchmarks/isolation.py [--rate 200] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    Child,
    DeliverySetup,
    Planner,
    broker_pid,
    core_share,
    core_times,
    cpu_seconds,
    delivery_setup,
    lane_order,
    latency_summary,
    machine_note,
    pin_pid,
    run,
)


async def traffic(setup: DeliverySetup, planner: Planner, args: argparse.Namespace,
                  deliverer: Child) -> dict[str, Any]:
    """Probe until the deliverer consumes, then write at the rate; what was written when."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=setup.broker.bootstrap, acks="all",
                                linger_ms=2)
    await producer.start()
    recv = setup.receiver
    healthy = [p for p in range(args.destinations) if p % args.hanging]
    try:
        # 1. Probes (one healthy destination) until one arrives: the deliverer has joined.
        deadline = time.monotonic() + args.ready_timeout
        probes = 0
        while True:
            deliverer.check_alive()
            before = await asyncio.to_thread(recv.stats)
            p = planner.one(healthy[probes % len(healthy)], 0, time.time_ns() // 1000)
            probes += 1
            await producer.send_and_wait(setup.topic, p.value, key=p.key,
                                         headers=setup.mac(p.key, p.value))
            for _ in range(20):
                await asyncio.sleep(0.1)
                if (await asyncio.to_thread(recv.stats))["unique"] > before["unique"]:
                    break
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no probe delivered in {args.ready_timeout} s")
                continue
            break
        # 2. Open loop: record i due at start + i/rate.
        n_warm = int(args.rate * args.warmup)
        n = n_warm + int(args.rate * args.duration)
        written: list[tuple[int, int, str, int]] = []  # (i, position, webhook id, due µs)
        futures = []
        start = time.time() + 0.05
        cpu0: dict[str, float] = {}
        core0 = core_times(args.cpu)
        for i in range(n):
            due = start + i / args.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == n_warm:
                cpu0 = {"deliverer": cpu_seconds(deliverer.pid),
                        "broker": cpu_seconds(broker_pid(setup.broker))}
                core0 = core_times(args.cpu)
            pos = i % args.destinations
            planned = planner.one(pos, (i // args.destinations) % args.conversations,
                                  int(due * 1e6))
            futures.append(await producer.send(setup.topic, planned.value, key=planned.key,
                                               headers=setup.mac(planned.key, planned.value)))
            written.append((i, pos, planned.webhook_id, int(due * 1e6)))
        await asyncio.gather(*futures)
        wall = time.time() - (start + n_warm / args.rate)
        cpu = {k: 100 * (cpu_seconds(pid) - cpu0[k]) / wall for k, pid in
               (("deliverer", deliverer.pid), ("broker", broker_pid(setup.broker)))}
        core = core_share(core0, core_times(args.cpu))
        late = time.time() - (start + (n - 1) / args.rate)
        return {"written": written, "n_warm": n_warm, "probes": probes,
                "cpu_percent": cpu, "core": core, "producer_late_s": late}
    finally:
        await producer.stop()


def one_run(setup: DeliverySetup, name: str, positions: list[dict[str, Any]],
            args: argparse.Namespace) -> dict[str, Any]:
    setup.receiver.reset()
    planner = Planner(positions, args.conversations)
    env = dict(item.split("=", 1) for item in args.deliverer_env)
    deliverer = setup.deliverer(name=f"deliverer-{name}", cpu=args.cpu, extra_env=env)
    try:
        sent = run(traffic(setup, planner, args, deliverer))
        written = sent["written"]
        measured = [w for w in written[sent["n_warm"]:] if w[1] % args.hanging]
        wanted = {w[2] for w in measured}
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            got = {r[2] for r in setup.receiver.records()}
            if wanted <= got:
                break
            time.sleep(0.5)
        deliverer.check_alive()
        records = setup.receiver.records()
        stats = setup.receiver.stats()
    finally:
        code = deliverer.stop()
    first: dict[str, int] = {}
    for arrival, _, wid, *_ in sorted(records, key=lambda r: r[0]):
        first.setdefault(wid, arrival)
    latencies = [(first[wid] / 1000 - due) / 1e6 for _, _, wid, due in measured if wid in first]
    healthy_records = [r for r in records if not r[1].startswith("/hang/")]
    return {
        "name": name,
        "healthy": {**latency_summary(latencies), "delivered": len(latencies),
                    "lost": len(measured) - len(latencies), "measured": len(measured),
                    **lane_order(healthy_records)},
        "hung_requests": stats["hung"],
        "hanging_positions": sum(1 for p in range(args.destinations) if p % args.hanging == 0)
        if name == "with hanging" else 0,
        "cpu_percent": sent["cpu_percent"],
        "core": sent["core"],
        "probes": sent["probes"],
        "producer_late_s": sent["producer_late_s"],
        "bad_signatures": stats["bad_signatures"],
        "signatures_checked": stats["signatures_checked"],
        "deliverer_exit": code,
    }


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nisolation: {args.rate:g} deliveries/s for {args.duration:g} s (after "
          f"{args.warmup:g} s warm-up) to {args.destinations} destinations "
          f"({args.hubs} hubs, {args.conversations} conversations each); with hanging: "
          f"every {args.hanging}th never answers; deliverer on CPU {args.cpu}")
    print(f"{'healthy destinations':22} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'measured':>8} {'lost':>5} {'dup':>4} {'reord':>5} "
          f"{'hung reqs':>9} {'deliv CPU%':>10} {'core %':>6} {'steal %':>7}")
    p50s, p99s = [], []
    for a_run, b_run in zip(runs[::2], runs[1::2], strict=True):
        for r in (a_run, b_run):
            h = r["healthy"]
            print(f"{r['name']:22} {h['p50_ms']:8.1f} {h['p95_ms']:8.1f} {h['p99_ms']:8.1f} "
                  f"{h['max_ms']:8.1f} {h['measured']:8d} {h['lost']:5d} "
                  f"{h['duplicates']:4d} {h['reordered']:5d} {r['hung_requests']:9d} "
                  f"{r['cpu_percent']['deliverer']:10.1f} {r['core']['busy_percent']:6.1f} "
                  f"{r['core']['steal_percent']:7.1f}")
        a, b = a_run["healthy"], b_run["healthy"]
        p50s.append(b["p50_ms"] / a["p50_ms"])
        p99s.append(b["p99_ms"] / a["p99_ms"])
        print(f"  round {a_run['round']}: ratio with hanging / all healthy: p50 "
              f"{p50s[-1]:.2f}x, p99 {p99s[-1]:.2f}x (target p99 <= 1.2x)")
    if len(p99s) > 1:
        print(f"median over {len(p99s)} rounds: p50 {statistics.median(p50s):.2f}x, "
              f"p99 {statistics.median(p99s):.2f}x (p99 ratios {min(p99s):.2f}-"
              f"{max(p99s):.2f})")
    for r in runs:
        if r["producer_late_s"] > 0.5:
            print(f"  {r['name']}: the producer finished {r['producer_late_s']:.1f} s late "
                  "(this machine was too busy to keep the rate)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0,
                        help="deliveries written per second (default 200)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="measured seconds of traffic per run (default 30)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="unmeasured seconds of traffic first (default 5)")
    parser.add_argument("--destinations", type=int, default=1000)
    parser.add_argument("--hanging", type=int, default=10,
                        help="every Nth destination hangs in the second run (default 10)")
    parser.add_argument("--hubs", type=int, default=10)
    parser.add_argument("--conversations", type=int, default=4,
                        help="conversations per destination (default 4)")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--cpu", type=int, default=0, help="core of the deliverer")
    parser.add_argument("--aux-cpu", type=int, default=1,
                        help="core of the receiver, broker and producer")
    parser.add_argument("--rounds", type=int, default=1,
                        help="both runs this many times, alternating (default 1)")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--deliverer-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the deliverer, e.g. "
                             "SWITCHBOARD_DELIVERY_TIMEOUT_S=10 (repeatable)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.hub_env + args.deliverer_env):
        parser.error("--hub-env and --deliverer-env take NAME=VALUE")
    if (args.rate <= 0 or args.duration <= 0 or args.hanging < 2 or args.destinations < 2
            or args.rounds < 1):
        parser.error("--rate and --duration must be positive, --hanging at least 2")

    load_before = machine_note()
    pin_pid(os.getpid(), args.aux_cpu)  # the producer stays off the deliverer's core
    hanging = [p for p in range(args.destinations) if p % args.hanging == 0]
    # 1,000 healthy integrations (both runs) and one never-answering one per hanging
    # position (second run only, in place of the healthy one there).
    urls = ([f"{{receiver}}/d/{i}" for i in range(args.destinations)]
            + [f"{{receiver}}/hang/{p}" for p in hanging])
    t0 = time.perf_counter()
    with delivery_setup(args.broker, urls, hubs=args.hubs, aux_cpu=args.aux_cpu,
                        partitions=args.partitions, extra_env=args.hub_env) as setup:
        print(f"set-up: {len(setup.destinations)} integrations in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        healthy = setup.destinations[:args.destinations]
        hang = dict(zip(hanging, setup.destinations[args.destinations:], strict=True))
        mixed = [hang.get(p, d) for p, d in enumerate(healthy)]
        setup.receiver.set_keys({d["url"].removeprefix(setup.receiver.url):
                                 [d["publicSigningKey"]] for d in healthy})
        runs = []
        for i in range(args.rounds):
            for name, positions in (("all healthy", healthy), ("with hanging", mixed)):
                # A fresh prefix per run: new topics and group, nothing left by the last.
                r = one_run(setup.fork(), name, positions, args)
                r["round"] = i + 1
                h = r["healthy"]
                print(f"round {i + 1} {name}: healthy p50 {h['p50_ms']:.1f} ms, "
                      f"p99 {h['p99_ms']:.1f} ms, lost {h['lost']}", flush=True)
                runs.append(r)
    report(runs, args)
    print(f"machine: before {load_before}; after {machine_note()}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs,
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))
    return 1 if any(r["healthy"]["lost"] or r["bad_signatures"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
