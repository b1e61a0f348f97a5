"""Scale-out of the deliverer: two processes vs one, and a second one joining and leaving.

Same set-up as deliverer_throughput.py: a development broker and the lean receiver on the
auxiliary core, ``--destinations`` (1,000) Direct Agent integrations on that receiver over
``--hubs`` hubs, Delivery records written to ``deliveries`` as the router writes them, each
numbered within its (destination, conversation) lane so the receiver can check the order.

1. **one**: ``--deliveries`` records pre-filled, one ``switchboard serve deliverer`` on the
   measured core: deliveries/s and CPU per delivery from the ``--warmup`` share on.
2. **two**: as many new records, two deliverer processes in the same group, both on the
   measured core (the same CPU to share, so only the cost per delivery may differ): the
   sum of their CPU per delivery vs one's (target ≤ 1.1x).
3. **join/leave** (fresh topics and group): records written open loop at ``--rate`` for
   ``--duration`` s; one
   deliverer runs throughout, a second joins after a third of the time and leaves
   (SIGTERM, or SIGKILL with ``--leave kill``) after two thirds. Every record must arrive
   (lost = 0), and within a lane no record may arrive for the first time after a later one
   (reordered = 0); repeats of a webhook-id (at-least-once after a rebalance) are counted.

    .venv/bin/python benchmarks/scale_out.py [--deliveries 20000] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    Child,
    DeliverySetup,
    Planner,
    broker_pid,
    cpu_seconds,
    delivery_setup,
    lane_order,
    machine_note,
    pin_pid,
    produce,
    run,
    watch_arrivals,
)


def pids_of(setup: DeliverySetup, deliverers: list[Child]) -> dict[str, int | None]:
    pids: dict[str, int | None] = {f"deliverer{i + 1}": d.pid for i, d in enumerate(deliverers)}
    pids["broker"] = broker_pid(setup.broker)
    return pids


def prefilled(setup: DeliverySetup, planner: Planner, count: int, args: argparse.Namespace
              ) -> dict[str, Any]:
    """Pre-fill `deliveries`, start `count` deliverers at once, wait for every record."""
    setup.receiver.reset()
    planned = planner.batch(args.deliveries)
    run(produce(setup.broker.bootstrap, setup.topic, [(p.key, p.value) for p in planned],
                sign=setup.mac))
    deliverers = [setup.deliverer(f"deliverer{i + 1}", cpu=args.cpu) for i in range(count)]
    try:
        watch = watch_arrivals(setup.receiver, pids_of(setup, deliverers), args.deliveries,
                               warm=int(args.deliveries * args.warmup), timeout=args.timeout)
        for d in deliverers:
            d.check_alive()
        if not watch.done:
            print(f"only {watch.samples[-1][1]} of {args.deliveries} arrived in time",
                  file=sys.stderr)
        result = watch.window()
        records = setup.receiver.records()
        result.update(lane_order(records))
        result["lost"] = args.deliveries - setup.receiver.stats()["unique"]
    finally:
        for d in deliverers:
            d.stop()
    result["cpu_us_per_delivery"] = sum(
        result[f"deliverer{i + 1}_cpu_us_per_delivery"] for i in range(count))
    return result


async def open_loop(setup: DeliverySetup, planner: Planner, args: argparse.Namespace,
                    first: Child) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=setup.broker.bootstrap, acks="all",
                                linger_ms=2)
    await producer.start()
    n = int(args.rate * args.duration)
    join_at, leave_at = n // 3, 2 * n // 3
    second: Child | None = None
    events: list[tuple[float, str]] = []
    ids: list[str] = []
    try:
        futures = []
        start = time.time() + 0.05
        for i in range(n):
            due = start + i / args.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == join_at:
                second = setup.deliverer("deliverer2", cpu=args.cpu)
                events.append((time.time() - start, "second deliverer started"))
            elif i == leave_at and second is not None:
                second.check_alive()
                if args.leave == "kill":
                    second.proc.send_signal(signal.SIGKILL)
                else:
                    second.proc.terminate()
                events.append((time.time() - start, "second deliverer stopped ("
                               + ("SIGKILL)" if args.leave == "kill" else "SIGTERM)")))
            d = i % len(planner.destinations)
            p = planner.one(d, (i // len(planner.destinations)) % planner.conversations,
                            int(due * 1e6))
            futures.append(await producer.send(setup.topic, p.value, key=p.key,
                                               headers=setup.mac(p.key, p.value)))
            ids.append(p.webhook_id)
        await asyncio.gather(*futures)
        late = time.time() - (start + (n - 1) / args.rate)
        return {"ids": ids, "events": events, "producer_late_s": late, "second": second}
    finally:
        await producer.stop()


def slowest(records: list[list[Any]]) -> float:
    """The longest any record waited from its due time to its first arrival (s): after
    a leave, how long the survivor took to take over the departed one's lanes."""
    first: dict[str, float] = {}
    for arrival_ns, _, wid, _, _, due_us in sorted(records, key=lambda r: r[0]):
        if due_us is not None and wid not in first:
            first[wid] = arrival_ns / 1e9 - due_us / 1e6
    return max(first.values(), default=0.0)


def join_leave(setup: DeliverySetup, planner: Planner, args: argparse.Namespace
               ) -> dict[str, Any]:
    setup.receiver.reset()
    first = setup.deliverer("deliverer1", cpu=args.cpu)
    second: Child | None = None
    try:
        # Wait until the first deliverer consumes (its group join) before the load starts.
        probe = planner.one(0, 0)
        run(produce(setup.broker.bootstrap, setup.topic, [(probe.key, probe.value)],
                    sign=setup.mac))
        deadline = time.monotonic() + 60
        while setup.receiver.stats()["unique"] < 1:
            first.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the first deliverer delivered nothing in 60 s")
            time.sleep(0.1)
        cpu0 = cpu_seconds(first.pid)
        sent = run(open_loop(setup, planner, args, first))
        second = sent.pop("second")
        wanted = set(sent["ids"]) | {probe.webhook_id}
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            if setup.receiver.stats()["unique"] >= len(wanted):
                break
            time.sleep(0.2)
        first.check_alive()
        records = setup.receiver.records()
        got = {r[2] for r in records}
        result = {"written": len(wanted), "lost": len(wanted - got), **lane_order(records),
                  "slowest_s": slowest(records),
                  "events": sent["events"], "producer_late_s": sent["producer_late_s"],
                  "first_cpu_s": cpu_seconds(first.pid) - cpu0}
        if second is not None:
            second.proc.wait(30)
            result["second_exit"] = second.proc.returncode
        return result
    finally:
        for d in (second, first):
            if d is not None:
                d.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000,
                        help="records per pre-filled phase (default 20000)")
    parser.add_argument("--destinations", type=int, default=1000)
    parser.add_argument("--hubs", type=int, default=10)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=500.0,
                        help="records/s written in the join/leave phase (default 500)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of the join/leave phase (default 30)")
    parser.add_argument("--leave", choices=["term", "kill"], default="term",
                        help="how the second deliverer leaves (default term: graceful)")
    parser.add_argument("--skip", choices=["none", "pair", "join-leave"], default="none",
                        help="leave out the one/two comparison or the join/leave phase")
    parser.add_argument("--cpu", type=int, default=0, help="core of the deliverers")
    parser.add_argument("--aux-cpu", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")

    load_before = machine_note()
    pin_pid(os.getpid(), args.aux_cpu)
    urls = [f"{{receiver}}/d/{i}" for i in range(args.destinations)]
    out: dict[str, Any] = {}
    with delivery_setup(args.broker, urls, hubs=args.hubs, aux_cpu=args.aux_cpu,
                        partitions=args.partitions, extra_env=args.hub_env) as setup:
        if args.skip != "pair":
            planner = Planner(setup.destinations, args.conversations)
            out["one"] = prefilled(setup, planner, 1, args)
            print(f"one deliverer: {out['one']['rate']:.0f} deliveries/s, "
                  f"{out['one']['cpu_us_per_delivery']:.0f} µs CPU each", flush=True)
            out["two"] = prefilled(setup, planner, 2, args)
            print(f"two deliverers: {out['two']['rate']:.0f} deliveries/s, "
                  f"{out['two']['cpu_us_per_delivery']:.0f} µs CPU each", flush=True)
        if args.skip != "join-leave":
            # A fresh prefix (topics, consumer group): on Tansu 0.6 a consumer joining a
            # group that two members have just left may never get its assignment (README).
            fresh = setup.fork()
            out["join_leave"] = join_leave(fresh, Planner(fresh.destinations,
                                                          args.conversations), args)

    print(f"\nscale-out: {args.destinations} destinations ({args.hubs} hubs, "
          f"{args.conversations} conversations each), {args.partitions} partitions, broker "
          f"{args.broker}, deliverers on CPU {args.cpu}")
    bad = False
    if "one" in out:
        one, two = out["one"], out["two"]
        print(f"{'':16} {'deliv/s':>8} {'CPU µs/deliv':>12} {'lost':>5} {'dup':>5} "
              f"{'reord':>5}")
        for name, r in (("one deliverer", one), ("two deliverers", two)):
            print(f"{name:16} {r['rate']:8.0f} {r['cpu_us_per_delivery']:12.0f} "
                  f"{r['lost']:5d} {r['duplicates']:5d} {r['reordered']:5d}")
        print(f"CPU per delivery two / one: "
              f"{two['cpu_us_per_delivery'] / one['cpu_us_per_delivery']:.2f}x "
              f"(target <= 1.1x); deliveries/s two / one: {two['rate'] / one['rate']:.2f}x")
        bad |= any(r["lost"] or r["reordered"] for r in (one, two))
    if "join_leave" in out:
        jl = out["join_leave"]
        print(f"join/leave at {args.rate:g}/s for {args.duration:g} s: written {jl['written']}, "
              f"lost {jl['lost']}, reordered {jl['reordered']}, duplicates "
              f"{jl['duplicates']}, slowest {jl['slowest_s']:.1f} s; "
              + "; ".join(f"{t:.1f} s {what}" for t, what in jl["events"]))
        if jl["producer_late_s"] > 0.5:
            print(f"  the producer finished {jl['producer_late_s']:.1f} s late")
        bad |= bool(jl["lost"] or jl["reordered"])
    print(f"machine: before {load_before}; after {machine_note()}")
    if args.json:
        args.json.write_text(json.dumps({**out, "args": {k: str(v) for k, v in
                                                         vars(args).items()}}, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
