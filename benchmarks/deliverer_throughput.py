"""Deliverer throughput: signed webhooks delivered per second by one deliverer process.

Set-up (none of it measured): a development broker and a lean receiver
(``_receiver.py``: raw asyncio + httptools, answers ``200 ok`` and records every arrival),
both pinned to the auxiliary core; a short-lived ``switchboard serve api`` process creates
``--destinations`` (1,000) Direct Agent integrations over ``--hubs`` hubs, every webhookUrl
on that one receiver; ``--deliveries`` (20,000) Delivery records, spread round-robin over
the destinations and ``--conversations`` conversations each, are written to ``deliveries``
exactly as the router writes them (key = destination id).

Then, one after the other, each pinned alone to the measured core (``--cpu``):

- baseline: ``_sender.py``, a raw aiohttp loop that signs the same bodies (Ed25519 over
  ``{id}.{timestamp}.{body}`` with switchboard.webhooks.Signer, as the deliverer does) and
  POSTs them to the same receiver at the deliverer's concurrency (``--max-in-flight`` 256
  overall, ``--per-destination`` 8, ``--per-hub`` 64);
- switchboard: one ``switchboard serve deliverer`` process reading the pre-filled topic.

Deliveries/s are counted at the receiver from the ``--warmup`` share of the batch (10 %)
to the last one, and CPU time per delivery of the process under test is read from /proc
over the same window. ``--profile FILE.svg`` runs py-spy on the deliverer (and on the
baseline, into FILE-baseline.svg) during the measured window: a flame graph and a table
of the functions and packages where the samples fall. py-spy samples from the auxiliary
core without pausing the target, but still costs it a little: quote rates from runs
without it.

    .venv/bin/python benchmarks/deliverer_throughput.py [--deliveries 20000] [--profile p.svg]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _common import (
    Child,
    DeliverySetup,
    Planner,
    PySpy,
    arrival_rate,
    broker_pid,
    delivery_setup,
    lane_order,
    machine_note,
    pin_pid,
    print_profile,
    produce,
    run,
    watch_arrivals,
)
from switchboard.keys import generate_signing_keypair


def profile_path(args: argparse.Namespace, name: str) -> Path:
    path: Path = args.profile
    return path if name == "switchboard" else path.with_name(f"{path.stem}-{name}.svg")


def measure(setup: DeliverySetup, name: str, proc: Child, n: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    pids = {"process": proc.pid, "broker": broker_pid(setup.broker),
            "receiver": setup.receiver.pid}
    warm = int(n * args.warmup)
    spies: list[PySpy] = []

    def start_profile() -> None:
        if args.profile is not None:
            spies.append(PySpy(proc.pid, profile_path(args, name), args.profile_duration,
                               cpu=args.aux_cpu))

    watch = watch_arrivals(setup.receiver, pids, n, warm=warm, timeout=args.timeout,
                           alive=proc, on_warm=start_profile, core=args.cpu)
    result = watch.window()
    records = setup.receiver.records()
    stats = setup.receiver.stats()
    result.update(lane_order(records))
    result["arrival_rate"] = arrival_rate(records, warm)
    result["delivered"] = stats["unique"]
    result["lost"] = n - stats["unique"]
    result["connections"] = stats["connections"]
    result["signatures_checked"] = stats["signatures_checked"]
    result["bad_signatures"] = stats["bad_signatures"]
    result["name"] = name
    for spy in spies:
        spy.wait(args.profile_duration + 30)
        result["profile"] = spy.top(40)
    return result


def run_baseline(setup: DeliverySetup, planned: list[Any], args: argparse.Namespace
                 ) -> dict[str, Any]:
    keys = [generate_signing_keypair() for _ in setup.destinations]
    paths = [f"/b/{i}" for i in range(len(setup.destinations))]
    job = {
        "destinations": [[setup.receiver.url + p, k.secret, d["hub"]]
                         for p, k, d in zip(paths, keys, setup.destinations, strict=True)],
        "requests": [[p.dest, p.webhook_id, p.body.decode()] for p in planned],
        "concurrency": args.max_in_flight, "per_destination": args.per_destination,
        "per_hub": args.per_hub, "timeout_s": 10, "linger_s": 3,
    }
    with tempfile.NamedTemporaryFile(prefix="switchboard-bench-job-", suffix=".json") as f:
        f.write(orjson.dumps(job))
        f.flush()
        setup.receiver.reset()
        setup.receiver.set_keys({p: [k.public] for p, k in zip(paths, keys, strict=True)})
        sender = Child("baseline", [sys.executable, str(Path(__file__).with_name("_sender.py")),
                                    f.name], cpu=args.cpu)
        try:
            return measure(setup, "baseline", sender, len(planned), args)
        finally:
            sender.stop()


def run_deliverer(setup: DeliverySetup, planned: list[Any], args: argparse.Namespace
                  ) -> dict[str, Any]:
    setup.receiver.reset()
    setup.receiver.set_keys({f"/d/{i}": [d["publicSigningKey"]]
                             for i, d in enumerate(setup.destinations)})
    run(produce(setup.broker.bootstrap, setup.topic, [(p.key, p.value) for p in planned],
                sign=setup.mac))
    env = {"SWITCHBOARD_MAX_IN_FLIGHT": str(args.max_in_flight),
           "SWITCHBOARD_MAX_IN_FLIGHT_PER_DESTINATION": str(args.per_destination),
           "SWITCHBOARD_MAX_IN_FLIGHT_PER_HUB": str(args.per_hub),
           **dict(item.split("=", 1) for item in args.deliverer_env)}
    deliverer = setup.deliverer(cpu=args.cpu, extra_env=env)
    try:
        result = measure(setup, "switchboard", deliverer, len(planned), args)
        deliverer.check_alive()
        return result
    except BaseException:
        print(f"deliverer log tail:\n{deliverer.log_tail()}", file=sys.stderr)
        raise
    finally:
        deliverer.stop()


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def report(rounds: list[dict[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\ndeliverer throughput: {args.deliveries} deliveries to {args.destinations} "
          f"destinations ({args.hubs} hubs, {args.conversations} conversations each), "
          f"broker {args.broker}, in flight {args.max_in_flight} / {args.per_destination} per "
          f"destination / {args.per_hub} per hub; measured process on CPU {args.cpu}")
    print(f"{'':12} {'deliv/s':>8} {'(recv)':>7} {'CPU µs/deliv':>12} {'CPU %':>6} "
          f"{'broker µs':>9} {'recv µs':>8} {'1st s':>6} {'lost':>5} {'dup':>4} "
          f"{'reord':>5} {'conns':>5} {'sig bad':>7} {'core %':>6} {'steal %':>7}")
    for i, r in enumerate(rounds):
        for name in ("baseline", "switchboard"):
            x = r[name]
            print(f"{name:12} {fmt(x['rate']):>8} {fmt(x['arrival_rate']):>7} "
                  f"{fmt(x.get('process_cpu_us_per_delivery')):>12} "
                  f"{fmt(x.get('process_cpu_percent')):>6} "
                  f"{fmt(x.get('broker_cpu_us_per_delivery')):>9} "
                  f"{fmt(x.get('receiver_cpu_us_per_delivery')):>8} "
                  f"{fmt(x['first_arrival_s'], '.1f'):>6} {x['lost']:5d} {x['duplicates']:4d} "
                  f"{x['reordered']:5d} {x['connections']:5d} "
                  f"{x['bad_signatures']:3d}/{x['signatures_checked']:<3d} "
                  f"{fmt(x.get('core', {}).get('busy_percent'), '.0f'):>6} "
                  f"{fmt(x.get('core', {}).get('steal_percent'), '.0f'):>7}")
        b, s = r["baseline"], r["switchboard"]
        cpu = s["process_cpu_us_per_delivery"] / b["process_cpu_us_per_delivery"]
        print(f"  round {i + 1}: ratio switchboard / baseline {s['rate'] / b['rate']:.3f} "
              f"(deliveries/s; target >= 0.5), CPU per delivery {cpu:.2f}x (so "
              f"{1 / cpu:.3f} of the baseline's deliveries per CPU-second)")
    if len(rounds) > 1:
        ratios = sorted(r["switchboard"]["rate"] / r["baseline"]["rate"] for r in rounds)
        per_cpu = sorted(r["baseline"]["process_cpu_us_per_delivery"]
                         / r["switchboard"]["process_cpu_us_per_delivery"] for r in rounds)
        print(f"ratio over {len(rounds)} rounds: median {statistics.median(ratios):.3f}, "
              f"min {ratios[0]:.3f}, max {ratios[-1]:.3f}; per CPU-second: median "
              f"{statistics.median(per_cpu):.3f}, min {per_cpu[0]:.3f}, max {per_cpu[-1]:.3f}")
    for r in rounds[-1:]:
        for name in ("baseline", "switchboard"):
            if "profile" in r[name]:
                svg = profile_path(args, name)
                print(f"\n{name}: flame graph {svg} (collapsed stacks "
                      f"{svg.with_suffix('.txt')})")
                print_profile(r[name]["profile"], args.profile_top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--destinations", type=int, default=1000)
    parser.add_argument("--hubs", type=int, default=10,
                        help="hubs the destinations are spread over (default 10)")
    parser.add_argument("--conversations", type=int, default=4,
                        help="conversations per destination (default 4)")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--per-destination", type=int, default=8)
    parser.add_argument("--per-hub", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="share of the batch before the measured window (default 0.1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="baseline + switchboard this many times, a new batch each")
    parser.add_argument("--cpu", type=int, default=0, help="core of the measured process")
    parser.add_argument("--aux-cpu", type=int, default=1,
                        help="core of the receiver, broker and py-spy")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="most seconds to wait for one batch (default 180)")
    parser.add_argument("--profile", type=Path, metavar="FILE.svg",
                        help="py-spy the deliverer (and the baseline) while measured")
    parser.add_argument("--profile-duration", type=float, default=8.0)
    parser.add_argument("--profile-top", type=int, default=20)
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every hub process (repeatable)")
    parser.add_argument("--deliverer-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the deliverer only (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.hub_env + args.deliverer_env):
        parser.error("--hub-env and --deliverer-env take NAME=VALUE")
    if args.deliveries < 10 or args.destinations < 1 or args.rounds < 1:
        parser.error("--deliveries, --destinations and --rounds must be positive")

    load_before = machine_note()
    pin_pid(os.getpid(), args.aux_cpu)  # this process polls; keep it off the measured core
    t0 = time.perf_counter()
    urls = [f"{{receiver}}/d/{i}" for i in range(args.destinations)]
    rounds: list[dict[str, dict[str, Any]]] = []
    with delivery_setup(args.broker, urls, hubs=args.hubs, aux_cpu=args.aux_cpu,
                        partitions=args.partitions, extra_env=args.hub_env) as setup:
        print(f"set-up: {len(setup.destinations)} destinations in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        planner = Planner(setup.destinations, args.conversations)
        for i in range(args.rounds):
            planned = planner.batch(args.deliveries)
            base = run_baseline(setup, planned, args)
            print(f"round {i + 1} baseline: {base['rate']:.0f} deliveries/s", flush=True)
            sb = run_deliverer(setup, planned, args)
            print(f"round {i + 1} switchboard: {sb['rate']:.0f} deliveries/s", flush=True)
            rounds.append({"baseline": base, "switchboard": sb})
    report(rounds, args)
    print(f"machine: before {load_before}; after {machine_note()}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds,
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))
    # The baseline keeps no order per conversation; only the deliverer must.
    bad = any(x["lost"] or x["bad_signatures"] for r in rounds for x in r.values()) or any(
        r["switchboard"]["reordered"] for r in rounds)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
