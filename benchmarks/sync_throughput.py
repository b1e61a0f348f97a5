"""Two-way sync: an initial sync of N contacts (default 100,000) from one platform to an
empty one, through a sync profile run by the real `sync` worker on the embedded broker,
against a plain script that copies the same N records through the same connector
clients — in the same run; then an incremental run of 100 changes.

- **fakes** (their own process, `_platforms.py`): three reference platforms with indexed
  listings and lookups and no rate limit — A holds the N contacts, B is the sync's
  mailbox side, C the baseline's target.
- **baseline**: this process, `PlatformConnector` on A and C (the connector the worker
  uses, over the same `platform_http` client): every page of A's contacts, each record
  created in C, one after the other (as the worker applies a plan).
- **switchboard**: a hub (`api,ingress`) and a `sync` worker process on Tansu (the
  embedded broker; `--broker kafka` for Apache Kafka); a profile
  A ⇄ B (contacts, BOTH, no review); `POST …/run {initial: true}`; done when the profile's
  status names the job. CPU per record is the worker process's CPU over the run.
- **incremental**: 100 contacts edited in A, `POST …/run` (from the watermark): time.

    .venv/bin/python benchmarks/sync_throughput.py [--contacts 100000] [--profile p.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from _common import HERE, PySpy, broker_and_hub, cpu_seconds, machine_note, print_profile
from switchboard.brokers import free_port
from switchboard.services.platform_connector import PlatformConnector, platform_http
from switchboard.settings import Settings
from switchboard.sync.platform_wire import PlatformAuth
from switchboard.sync.records import Contact

TOKEN = "bench"
_COPIED = ("first_name", "last_name", "email", "phone", "mobile_phone", "title",
           "company_name")


def start_fakes(contacts: int) -> tuple[subprocess.Popen[bytes], list[str]]:
    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen([sys.executable, str(HERE / "_platforms.py"), "--ports",
                             ",".join(map(str, ports)), "--contacts", str(contacts)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"the platform fakes did not start: {line!r}")
    return proc, [f"http://127.0.0.1:{p}" for p in ports]


def count(url: str) -> int:
    return int(httpx.get(url + "/_bench/count", timeout=60).json()["contacts"])


async def baseline(source: str, target: str) -> dict[str, float]:
    """Every contact of `source` created in `target` through PlatformConnector."""
    settings = msgspec.structs.replace(Settings.from_env({}),
                                       allow_private_destinations=True)
    http = platform_http(settings)
    auth = PlatformAuth(scheme="bearer", token=TOKEN)
    src = PlatformConnector(http, source, auth, frozenset(), allow_private=True)
    dst = PlatformConnector(http, target, auth, frozenset(), allow_private=True)
    copied = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    cursor: str | None = None
    try:
        while True:
            page = await src.my_contacts(None, cursor)
            for rec in page.records:
                values = {f: getattr(rec, f) for f in _COPIED}
                await dst.create_contact(Contact(id="new", modified_at=0, **values))
                copied += 1
            if page.cursor is None:
                break
            cursor = page.cursor
    finally:
        await http.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"records": copied, "seconds": wall, "records_per_s": copied / wall,
            "cpu_us_per_record": 1e6 * cpu / copied}


def wait_run(client: httpx.Client, url: str, job: str, timeout: float,
             series: Series | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(url).json()["status"]
        if series is not None:
            series.sample(status)
        if status.get("lastJobId") == job:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {job} not done after {timeout:.0f} s: {status}")
        time.sleep(0.2)


class Series:
    """Every `every` s of a run: operations done, and the worker's and the broker's CPU
    per operation over that interval (does the cost grow as `sync.pairs` does?)."""

    def __init__(self, every: float, worker: int, broker: int | None) -> None:
        self.every, self.worker, self.broker = every, worker, broker
        self.rows: list[dict[str, float]] = []
        self.last = (time.perf_counter(), 0, cpu_seconds(worker), cpu_seconds(broker))

    def sample(self, status: dict[str, Any]) -> None:
        now = time.perf_counter()
        t, done0, w0, b0 = self.last
        if now - t < self.every:
            return
        done = int((status.get("progress") or {}).get("done") or 0)
        w, b = cpu_seconds(self.worker), cpu_seconds(self.broker)
        self.last = (now, done, w, b)
        if done <= done0:
            return  # reading and planning: no operation done yet
        n = done - done0
        row = {"done": done, "ops_per_s": n / (now - t), "worker_us": 1e6 * (w - w0) / n,
               "broker_us": 1e6 * (b - b0) / n}
        self.rows.append(row)
        print(f"  {done:>7,} done: {row['ops_per_s']:6.0f}/s, worker {row['worker_us']:5.0f} "
              f"µs, broker {row['broker_us']:5.0f} µs per op", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--profile", type=Path, help="py-spy flame graph of the worker "
                        "(FILE.svg; FILE.txt the collapsed stacks)")
    parser.add_argument("--profile-delay", type=float, default=5.0)
    parser.add_argument("--profile-duration", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-baseline", action="store_true",
                        help="no plain copy (no ratio): for diagnosing the sync alone")
    parser.add_argument("--series", type=float, default=0.0, metavar="S",
                        help="print progress and CPU per operation every S s of the run")
    parser.add_argument("--hub-env", action="append", default=[])
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    args = parser.parse_args(argv)
    print(machine_note())
    fakes, (a_url, b_url, c_url) = start_fakes(args.contacts)
    results: dict[str, Any] = {"contacts": args.contacts, "broker": args.broker,
                               "machine": machine_note()}
    ok = True
    try:
        base: dict[str, float] | None = None
        if not args.skip_baseline:
            base = asyncio.run(baseline(a_url, c_url))
            assert count(c_url) == args.contacts, "the baseline lost records"
            results["baseline"] = base
            print(f"baseline: {base['records']:,} contacts copied in {base['seconds']:.1f} s: "
                  f"{base['records_per_s']:.0f}/s, {base['cpu_us_per_record']:.0f} µs CPU "
                  "each")

        with broker_and_hub(args.broker, [("api", "ingress"), ("sync",)],
                            args.hub_env) as hub:
            worker = hub.servers[1].proc.pid
            admin = {"Authorization": f"Bearer {hub.admin_token}"}
            with httpx.Client(base_url=hub.main.base_url, timeout=60) as c:
                made = c.post("/api/v1/hubs", json={"name": "bench"}, headers=admin).json()
                c.headers["Authorization"] = f"Bearer {made['accessToken']}"
                side = {"kind": "platform", "credentials": {"accessToken": TOKEN}}
                r = c.post(f"/api/v1/hubs/{made['hubId']}/syncProfiles", json={
                    "name": "bench",
                    "portal": {**side, "configuration": {"instanceUrl": a_url}},
                    "mailbox": {**side, "configuration": {"instanceUrl": b_url}},
                    "modules": {"contacts": {"options": {"direction": "BOTH"},
                                             "needReview": False}}})
                assert r.status_code == 201, r.text
                url = f"/api/v1/hubs/{made['hubId']}/syncProfiles/{r.json()['profileId']}"

                cpu0, broker0 = cpu_seconds(worker), cpu_seconds(hub.broker_pid)
                t0 = time.perf_counter()
                series = (Series(args.series, worker, hub.broker_pid) if args.series
                          else None)
                job = c.post(url + "/run", json={"initial": True}).json()["jobId"]
                spy = None
                if args.profile is not None:
                    time.sleep(args.profile_delay)
                    spy = PySpy(worker, args.profile, args.profile_duration)
                status = wait_run(c, url, job, args.timeout, series)
                wall = time.perf_counter() - t0
                cpu = cpu_seconds(worker) - cpu0
                broker_cpu = cpu_seconds(hub.broker_pid) - broker0
                if status.get("errMessage"):
                    print(f"the initial run failed: {status}", file=sys.stderr)
                    return 1
                created = status["modules"]["contacts"]["created"]
                ok &= created == args.contacts and count(b_url) == args.contacts
                sync = {"records": created, "seconds": wall, "records_per_s": created / wall,
                        "cpu_us_per_record": 1e6 * cpu / max(1, created),
                        "broker_cpu_us_per_record": 1e6 * broker_cpu / max(1, created)}
                results["switchboard"] = sync
                if series is not None:
                    results["series"] = series.rows
                print(f"switchboard: {created:,} contacts synced in {wall:.1f} s: "
                      f"{sync['records_per_s']:.0f}/s, {sync['cpu_us_per_record']:.0f} µs "
                      f"CPU each in the worker (+{sync['broker_cpu_us_per_record']:.0f} µs "
                      "in the broker)")
                if base is not None:
                    ratio = sync["records_per_s"] / base["records_per_s"]
                    results["ratio_records_per_s"] = ratio
                    results["ratio_cpu_per_record"] = (sync["cpu_us_per_record"]
                                                       / base["cpu_us_per_record"])
                    print(f"ratio: {ratio:.2f}x the baseline's records/s, "
                          f"{results['ratio_cpu_per_record']:.2f}x its CPU per record")
                if spy is not None:
                    spy.wait(args.profile_duration + 30)
                    top = spy.top()
                    results["profile"] = top
                    print_profile(top)

                httpx.post(a_url + f"/_bench/edit?n={args.changes}", timeout=60)
                t0 = time.perf_counter()
                job = c.post(url + "/run").json()["jobId"]
                status = wait_run(c, url, job, args.timeout)
                wall = time.perf_counter() - t0
                updated = status["modules"]["contacts"]["updated"]
                ok &= updated == args.changes and not status.get("errMessage")
                results["incremental"] = {"changes": updated, "seconds": wall}
                print(f"incremental: {updated} changes synced in {wall:.2f} s (request to "
                      "status)")
    finally:
        fakes.terminate()
        fakes.wait(30)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not ok:
        print("records were lost or duplicated", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
