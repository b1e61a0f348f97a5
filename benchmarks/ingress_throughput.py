"""Ingress throughput: signed webhooks accepted per second, against a bare echo baseline.

Two servers are measured one after the other in this run, each in its own process and
served the same way (uvicorn, one worker, uvloop + httptools, no access log):

- baseline: a bare Starlette app, ``POST /echo`` → ``await request.json()`` → JSONResponse;
- switchboard: a hub (``api,ingress`` by default) on an embedded Tansu broker (or Apache
  Kafka with ``--broker kafka``). Each ``POST /ingress/{id}`` verifies an Ed25519 Standard
  Webhooks signature, normalizes the message, produces it with acks=all and answers 202.

The load generator (this process) keeps ``--concurrency`` keep-alive connections busy
(closed loop) with pre-built requests: the same body and signature headers for both
servers, each with a unique webhook-id. Requests/s, latency percentiles and the ratio
switchboard / baseline are printed; any response other than 200 (baseline) or 202
(switchboard) counts as an error. Everything stays on 127.0.0.1.

    .venv/bin/python benchmarks/ingress_throughput.py [--requests 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    CONN_ERRORS,
    HttpConn,
    broker_and_hub,
    cpu_seconds,
    create_integrations,
    echo_server,
    latency_summary,
    machine_note,
    run,
    signed_requests,
)
from switchboard.keys import generate_signing_keypair


async def closed_loop(port: int, requests: Sequence[bytes], concurrency: int,
                      deadline_s: float) -> dict[str, Any]:
    """Send every request over `concurrency` keep-alive connections; stop at the deadline."""
    next_index = iter(range(len(requests)))
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    start = time.perf_counter()
    deadline = start + deadline_s

    async def worker() -> None:
        conn = await HttpConn.open(port)
        try:
            for i in next_index:
                if time.perf_counter() > deadline:
                    break
                t = time.perf_counter()
                try:
                    status, _ = await conn.roundtrip(requests[i])
                except CONN_ERRORS:
                    statuses[0] += 1
                    conn.close()
                    conn = await HttpConn.open(port)
                    continue
                latencies.append(time.perf_counter() - t)
                statuses[status] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    done = sum(statuses.values())
    return {"requests": done, "seconds": elapsed, "rps": done / elapsed,
            "statuses": dict(statuses), **latency_summary(latencies)}


async def measure(port: int, pids: dict[str, int | None], warmup: Sequence[bytes],
                  requests: Sequence[bytes], args: argparse.Namespace) -> dict[str, Any]:
    await closed_loop(port, warmup, min(args.concurrency, len(warmup) or 1), args.duration)
    before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    result = await closed_loop(port, requests, args.concurrency, args.duration)
    # CPU time per request is far less sensitive to a noisy machine than requests/s.
    for k, pid in pids.items():
        used = cpu_seconds(pid) - before[k]
        result[f"{k}_cpu_s"] = used
        result[f"{k}_cpu_us_per_request"] = used / result["requests"] * 1e6
    return result


def build(port: int, path: str, key: str, prefix: str, args: argparse.Namespace
          ) -> tuple[list[bytes], list[bytes]]:
    texts = [f"{prefix} {i}" for i in range(args.warmup + args.requests)]
    reqs = signed_requests(port, path, key, texts, args.senders)
    return reqs[:args.warmup], reqs[args.warmup:]


def bench_baseline(args: argparse.Namespace) -> dict[str, Any]:
    key = generate_signing_keypair().secret
    with echo_server() as server:
        warm, reqs = build(server.port, "/echo", key, "baseline", args)
        pids = {"server": server.proc.pid, "broker": None}
        return run(measure(server.port, pids, warm, reqs, args))  # type: ignore[no-any-return]


def bench_switchboard(args: argparse.Namespace) -> dict[str, Any]:
    with broker_and_hub(args.broker, [args.services.split(",")], args.hub_env) as hub:
        # The Customer webhookUrl is never called: no router/deliverer runs by default.
        integ = create_integrations(hub.main.base_url, hub.admin_token,
                                    "http://127.0.0.1:9/unused")
        customer = integ["customer"]
        path = f"/ingress/{customer['integrationId']}"
        key = customer["configuration"]["privateSigningKey"]
        port = hub.main.port
        warm, reqs = build(port, path, key, "switchboard", args)
        pids = {"server": hub.main.proc.pid, "broker": hub.broker_pid}
        return run(measure(port, pids, warm, reqs, args))  # type: ignore[no-any-return]


def errors(result: dict[str, Any], ok: int) -> int:
    return sum(n for status, n in result["statuses"].items() if status != ok)


def report(base: dict[str, Any], sb: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\ningress throughput: {args.requests} requests, concurrency {args.concurrency}, "
          f"broker {args.broker}, hub services {args.services}")
    print(f"{'':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'requests':>9} {'errors':>7} {'server CPU µs/req':>18} {'broker CPU µs/req':>18}")
    for name, r, ok in (("baseline", base, 200), ("switchboard", sb, 202)):
        broker = r["broker_cpu_us_per_request"]
        print(f"{name:12} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['max_ms']:8.2f} {r['requests']:9d} {errors(r, ok):7d} "
              f"{r['server_cpu_us_per_request']:18.0f} "
              f"{'-' if broker != broker else f'{broker:.0f}':>18}")
    print(f"ratio switchboard / baseline: {sb['rps'] / base['rps']:.3f} (requests/s), "
          f"{sb['server_cpu_us_per_request'] / base['server_cpu_us_per_request']:.2f}x "
          "server CPU per request")
    for name, r, ok in (("baseline", base, 200), ("switchboard", sb, 202)):
        if errors(r, ok):
            print(f"  {name} statuses: {r['statuses']} (0 = connection error)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000,
                        help="measured requests per server (default 10000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="keep-alive connections kept busy (default 64)")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--warmup", type=int, default=500,
                        help="unmeasured requests first (default 500)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="stop sending after this many seconds per server (default 20)")
    parser.add_argument("--senders", type=int, default=256,
                        help="distinct sender ids, i.e. conversations (default 256)")
    parser.add_argument("--services", default="api,ingress",
                        help="services in the hub process (default api,ingress)")
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the hub process, e.g. "
                             "SWITCHBOARD_MAX_IN_FLIGHT_PER_DESTINATION=32 (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be positive")

    load_before = machine_note()
    base = bench_baseline(args)
    sb = bench_switchboard(args)
    report(base, sb, args)
    print(f"machine: before {load_before}; after {machine_note()}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "switchboard": sb,
                                         "ratio": sb["rps"] / base["rps"],
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))
    return 1 if errors(base, 200) or errors(sb, 202) else 0


if __name__ == "__main__":
    sys.exit(main())
