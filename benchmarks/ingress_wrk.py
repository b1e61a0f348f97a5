"""Ingress throughput under wrk: one ``switchboard serve ingress`` process vs a bare echo.

Both servers run alone on the measured core (``--cpu``), one after the other, served the
same way (uvicorn, one worker, uvloop + httptools, no access log):

- baseline: the bare Starlette app of ``_server.py``, ``POST /echo`` → ``await
  request.json()`` → JSONResponse;
- switchboard: ``switchboard serve ingress`` on a development broker (Tansu, or
  ``--broker kafka``). Each ``POST /ingress/{id}`` checks an Ed25519 Standard Webhooks
  signature, normalizes the message, produces it with acks=all and answers 202.

The load comes from ``wrk`` (Debian package ``wrk``) on the other core (``--aux-cpu``, with
the broker), one thread, ``--connections`` keep-alive connections, through a Lua script
that sends pre-built requests read from a file: the same bodies and signature headers for
both servers, each with its own ``webhook-id``, signed just before the run (the ingress
accepts timestamps within ±5 minutes). A short warm-up run comes first, then
``--duration`` seconds measured. The per-integration rate limit is lifted
(``SWITCHBOARD_INGRESS_RATE_PER_S`` / ``_BURST``), as in ingress_throughput.py.

Reported: requests/s, p50/p99/max latency (wrk's), non-2xx answers and socket errors, CPU
time per request of the server (and broker), and the ratio switchboard / baseline.

    .venv/bin/python benchmarks/ingress_wrk.py [--duration 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    Child,
    PySpy,
    broker_pid,
    cpu_seconds,
    create_integrations,
    dev_broker,
    echo_server,
    hub_env,
    machine_note,
    message_body,
    pin_pid,
    pinned,
    print_profile,
    serve_cmd,
)
from switchboard.brokers import free_port
from switchboard.webhooks import Signer

LUA = r"""
-- Sends pre-built requests from a file: one per line, "id<TAB>timestamp<TAB>signature<TAB>body".
-- Script arguments: FILE PATH FIRST (1-based index of the first request to send).
local reqs = {}
local n = 0
local i = 0
local first = 1

function init(args)
  local file, path = args[1], args[2]
  first = tonumber(args[3] or "1")
  for line in io.lines(file) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    if id then
      n = n + 1
      reqs[n] = wrk.format("POST", path, {
        ["content-type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }, body)
    end
  end
  i = first - 1
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def write_requests(path: Path, key: str, count: int, senders: int) -> None:
    """`count` signed message requests, one per line (see the Lua script)."""
    signer = Signer(ed25519=[key])
    ts = int(time.time())
    with path.open("w") as out:
        for i in range(count):
            body = message_body(f"wrk {i}", f"user-{i % senders}")
            wid = f"msg_{uuid.uuid4().hex}"
            out.write(f"{wid}\t{ts}\t{signer.sign(wid, ts, body)}\t{body.decode()}\n")


def wrk(url: str, script: Path, requests: Path, path: str, first: int, seconds: float,
        args: argparse.Namespace) -> dict[str, Any]:
    cmd = pinned(["wrk", "-t1", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
                  "--timeout", "10s", "-s", str(script), url, "--",
                  str(requests), path, str(first)], args.aux_cpu)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                         check=False)
    m = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if out.returncode or m is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(m.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def measure(port: int, path: str, pids: dict[str, int | None], files: dict[str, Path],
            args: argparse.Namespace) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    warm = wrk(url, files["script"], files["requests"], path, 1, args.warmup, args)
    first = warm["requests"] + 1
    before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    result = wrk(url, files["script"], files["requests"], path, first, args.duration, args)
    for k, pid in pids.items():
        used = cpu_seconds(pid) - before[k]
        result[f"{k}_cpu_us_per_request"] = used / max(1, result["requests"]) * 1e6
    # Past the end of the file wrk starts over: the ingress then sees repeated ids.
    result["reused_ids"] = max(0, first - 1 + result["requests"] - args.requests)
    result["warmup_requests"] = warm["requests"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per server (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unmeasured seconds first (default 2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=100_000,
                        help="distinct signed requests prepared (default 100000)")
    parser.add_argument("--senders", type=int, default=256,
                        help="distinct sender ids, i.e. conversations (default 256)")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--cpu", type=int, default=0, help="core of the server under test")
    parser.add_argument("--aux-cpu", type=int, default=1, help="core of wrk and the broker")
    parser.add_argument("--hub-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, metavar="FILE.svg",
                        help="py-spy the ingress while measured (flame graph + top table)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu), "
              "brew install wrk (macOS)", file=sys.stderr)
        return 2

    load_before = machine_note()
    pin_pid(os.getpid(), args.aux_cpu)
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-wrk-"))
    files = {"script": tmp / "post.lua", "requests": tmp / "requests.tsv"}
    files["script"].write_text(LUA)
    try:
        with dev_broker(args.broker, args.aux_cpu) as broker:
            env = hub_env(broker.bootstrap, broker.kind, args.hub_env)
            api_port = free_port()
            api = Child("api", serve_cmd("api", api_port), env=env, port=api_port)
            try:
                api.wait_http(timeout=120 if args.broker == "kafka" else 60)
                customer = create_integrations(f"http://127.0.0.1:{api_port}",
                                               env["SWITCHBOARD_ADMIN_TOKEN"],
                                               "http://127.0.0.1:9/unused")["customer"]
            finally:
                api.stop()
            t = time.perf_counter()
            write_requests(files["requests"], customer["configuration"]["privateSigningKey"],
                           args.requests, args.senders)
            print(f"signed {args.requests} requests in {time.perf_counter() - t:.1f} s",
                  flush=True)

            with echo_server(cpu=args.cpu) as echo:
                base = measure(echo.port, "/echo", {"server": echo.proc.pid, "broker": None},
                               files, args)
            print(f"baseline: {base['rps']:.0f} req/s", flush=True)

            port = free_port()
            ingress = Child("ingress", serve_cmd("ingress", port), env=env, cpu=args.cpu,
                            port=port)
            try:
                ingress.wait_http(timeout=120 if args.broker == "kafka" else 60)
                spy = (PySpy(ingress.pid, args.profile, args.warmup + args.duration,
                             cpu=args.aux_cpu) if args.profile and ingress.pid else None)
                sb = measure(port, f"/ingress/{customer['integrationId']}",
                             {"server": ingress.pid, "broker": broker_pid(broker)}, files, args)
                ingress.check_alive()
                if spy is not None:
                    spy.wait()
                    print_profile(spy.top())
            finally:
                ingress.stop()
            print(f"switchboard: {sb['rps']:.0f} req/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\ningress under wrk: {args.connections} connections, 1 wrk thread on CPU "
          f"{args.aux_cpu}, server on CPU {args.cpu}, {args.duration:g} s, broker {args.broker}")
    print(f"{'':12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'requests':>9} "
          f"{'errors':>7} {'server µs/req':>13} {'broker µs/req':>13}")
    for name, r in (("baseline", base), ("switchboard", sb)):
        broker_us = r["broker_cpu_us_per_request"]
        print(f"{name:12} {r['rps']:8.0f} {r['p50_us'] / 1e3:8.2f} {r['p99_us'] / 1e3:8.2f} "
              f"{r['max_us'] / 1e3:8.2f} {r['requests']:9d} {r['errors']:7d} "
              f"{r['server_cpu_us_per_request']:13.0f} "
              f"{'-' if broker_us != broker_us else f'{broker_us:.0f}':>13}")
    print(f"ratio switchboard / baseline: {sb['rps'] / base['rps']:.3f} (requests/s; "
          f"target >= 0.33), "
          f"{sb['server_cpu_us_per_request'] / base['server_cpu_us_per_request']:.2f}x "
          "server CPU per request")
    for name, r in (("baseline", base), ("switchboard", sb)):
        if r["errors"]:
            print(f"  {name}: {r['status']} non-2xx answers, socket errors connect "
                  f"{r['connect']} read {r['read']} write {r['write']} timeout {r['timeout']}")
    if sb["reused_ids"]:
        print(f"  switchboard: {sb['reused_ids']} requests repeated a webhook-id "
              "(raise --requests)")
    print(f"machine: before {load_before}; after {machine_note()}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "switchboard": sb,
                                         "ratio": sb["rps"] / base["rps"],
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))
    return 1 if base["errors"] or sb["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
