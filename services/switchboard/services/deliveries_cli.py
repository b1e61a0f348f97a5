"""`switchboard deliveries list | show | redeliver | replay`: the delivery log from a shell."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from switchboard import clock
from switchboard.progress import Progress
from switchboard.services.cli_api import add_connection_args, call, run, table, utc

_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str, now_ms: int | None = None) -> int:
    """ms since the epoch from ms digits, an ISO 8601 time (UTC unless it says otherwise)
    or an age such as 90m, 6h, 2d."""
    now = clock.now_ms() if now_ms is None else now_ms
    value = value.strip()
    if value.isdigit():
        return int(value)
    ago = _AGO.match(value)
    if ago:
        return now - int(ago.group(1)) * _UNIT_S[ago.group(2)] * 1000
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not ms, an ISO 8601 time or an age like 6h") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def cmd_list(client: httpx.Client, args: argparse.Namespace) -> int:
    params: dict[str, str | int] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.since is not None:
        params["since"] = args.since
    if args.cursor:
        params["cursor"] = args.cursor
    page = call(client, "GET", f"/api/v1/integrations/{args.integration}/deliveries",
                 params=params)
    if args.json:
        print(json.dumps(page, indent=2, ensure_ascii=False))
        return 0
    rows = [["DELIVERY ID", "STATUS", "ATTEMPTS", "LAST", "UPDATED (UTC)", "ERROR"]]
    for d in page["items"]:
        rows.append([d["deliveryId"], d["status"], str(d["attempts"]),
                     str(d["lastStatus"] or "-"), utc(d["updatedAt"]), d["lastError"] or ""])
    print(table(rows) if page["items"] else "no deliveries")
    if page["nextCursor"]:
        print(f"more: --cursor {page['nextCursor']}")
    return 0


def cmd_show(client: httpx.Client, args: argparse.Namespace) -> int:
    d = call(client, "GET", f"/api/v1/deliveries/{args.delivery}")
    if args.json:
        print(json.dumps(d, indent=2, ensure_ascii=False))
        return 0
    for label, key in (("delivery", "deliveryId"), ("activity", "activityId"),
                       ("integration", "integrationId"), ("conversation", "conversationId"),
                       ("status", "status"), ("attempts", "attemptCount"),
                       ("last status", "lastStatus"), ("last error", "lastError")):
        print(f"{label + ':':14}{d[key] if d[key] is not None else '-'}")
    print(f"{'created:':14}{utc(d['createdAt'])}\n{'updated:':14}{utc(d['updatedAt'])}")
    if d["nextAttemptAt"] is not None:
        print(f"{'next attempt:':14}{utc(d['nextAttemptAt'])}")
    rows = [["#", "AT (UTC)", "STATUS", "MS", "ERROR", "RESPONSE"]]
    for a in d["attempts"]:
        response = (a["response"] or "").replace("\n", " ")
        rows.append([str(a["attempt"]), utc(a["at"]), str(a["status"] or "-"),
                     str(a["latencyMs"] if a["latencyMs"] is not None else "-"),
                     a["error"] or "", response[:60]])
    print("\n" + table(rows))
    return 0


def _follow(client: httpx.Client, job_id: str, args: argparse.Namespace) -> int:
    """Wait for a job, its progress on stderr (switchboard.progress: in place on a
    terminal, a line per change otherwise); stdout keeps the job id, or its JSON."""
    if args.no_wait:
        print(json.dumps({"jobId": job_id}) if args.json else f"job {job_id}")
        return 0
    if not args.json:
        print(f"job {job_id}", flush=True)
    progress: Progress | None = None
    while True:
        job = call(client, "GET", f"/api/v1/jobs/{job_id}")
        if progress is None:
            tty = sys.stderr.isatty()
            # Polled twice a second: a log gets each change, not one line per 5 s.
            progress = Progress(job.get("kind", "job"), sys.stderr.write, tty=tty,
                                every_s=None if tty else 0.0)
            progress.step("deliveries", job["total"])
            shown = (0, job["total"])
        if (job["done"], job["total"]) != shown:
            shown = (job["done"], job["total"])
            progress.update(job["done"], job["total"])
        if job["state"] != "running":
            break
        time.sleep(0.5)
    if job["state"] == "done":
        progress.finish()
    else:
        progress.clear()
        print(f"{job.get('kind', 'job')}: {job['state']} at {job['done']}/{job['total']}",
              file=sys.stderr)
    if job.get("skipped"):
        print(f"{job['skipped']} skipped: no longer on the deliveries topic", file=sys.stderr)
    if args.json:
        print(json.dumps(job, indent=2))
    if job.get("error"):
        print(f"error: {job['error']}", file=sys.stderr)
    return 0 if job["state"] == "done" else 1


def cmd_redeliver(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.delivery:
        body: dict[str, Any] = {"deliveryId": args.delivery}
    else:
        body = {"status": "failed", "since": args.failed_since}
    made = call(client, "POST", f"/api/v1/integrations/{args.integration}/redeliver",
                 json=body)
    return _follow(client, made["jobId"], args)


def cmd_replay(client: httpx.Client, args: argparse.Namespace) -> int:
    body = {"since": args.since}
    if args.until is not None:
        body["until"] = args.until
    made = call(client, "POST", f"/api/v1/integrations/{args.integration}/replay", json=body)
    return _follow(client, made["jobId"], args)


def cmd_deliveries(args: argparse.Namespace) -> int:
    return run(args, timeout=30)


def add_parser(sub: Any) -> None:
    """Add `deliveries` and its actions to the CLI's subcommands."""
    top = sub.add_parser("deliveries", help="list, show, redeliver and replay deliveries")
    actions = top.add_subparsers(dest="action_name", required=True)

    def action(name: str, helptext: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=helptext)
        add_connection_args(p)
        p.add_argument("--json", action="store_true",
                       help="print the API's JSON answer (a job's: once it has ended)")
        p.set_defaults(func=cmd_deliveries, action=func)
        return p

    ls = action("list", "an integration's deliveries, newest first", cmd_list)
    ls.add_argument("integration", help="the destination integration's id")
    ls.add_argument("--status", choices=["delivered", "pending", "failed"],
                    help="only deliveries in this state")
    ls.add_argument("--since", type=parse_time, help="updated since (ms, ISO 8601 or 6h)")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (1-500; 50)")
    ls.add_argument("--cursor", help="the next page, as printed by the previous one")

    show = action("show", "one delivery and its attempts", cmd_show)
    show.add_argument("delivery", help="the delivery's id (its webhook-id)")

    re_ = action("redeliver", "send deliveries again (same webhook-id)", cmd_redeliver)
    re_.add_argument("integration", help="the destination integration's id")
    which = re_.add_mutually_exclusive_group(required=True)
    which.add_argument("--delivery", help="one delivery id")
    which.add_argument("--failed-since", type=parse_time,
                       help="every delivery failed since then (ms, ISO 8601 or 6h)")
    re_.add_argument("--no-wait", action="store_true", help="print the job id and return")

    rp = action("replay", "send every delivery of a time window again", cmd_replay)
    rp.add_argument("integration", help="the destination integration's id")
    rp.add_argument("--since", type=parse_time, required=True,
                    help="the window's start (ms, ISO 8601 or 6h)")
    rp.add_argument("--until", type=parse_time, help="default: now")
    rp.add_argument("--no-wait", action="store_true", help="print the job id and return")
