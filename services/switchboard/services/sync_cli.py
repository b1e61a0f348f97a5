"""`switchboard sync runs | run`: a hub's sync runs from a shell (`GET …/syncJobs`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from switchboard.services.cli_api import add_connection_args, call, run, table, utc

_STATES = ["requested", "queued", "running", "finished", "failed", "skipped"]


def _counts(modules: dict[str, Any] | None) -> str:
    """created/updated/deleted per module, as `contacts 3/1/0`."""
    if not modules:
        return ""
    return ", ".join(f"{m} {c['created']}/{c['updated']}/{c['deleted']}"
                     for m, c in sorted(modules.items()))


def cmd_runs(client: httpx.Client, args: argparse.Namespace) -> int:
    params: dict[str, str | int] = {"limit": args.limit}
    for name, value in (("profileId", args.profile), ("state", args.state),
                        ("cursor", args.cursor)):
        if value:
            params[name] = value
    page = call(client, "GET", f"/api/v1/hubs/{args.hub}/syncJobs", params=params)
    if args.json:
        print(json.dumps(page, indent=2, ensure_ascii=False))
        return 0
    rows = [["JOB ID", "PROFILE", "TYPE", "TRIGGER", "STATE", "STARTED (UTC)",
             "FINISHED (UTC)", "CREATED/UPDATED/DELETED", "ERROR"]]
    for r in page["items"]:
        rows.append([r["jobId"], r["profileId"], r["type"] or "-", r["trigger"] or "-",
                     r["state"], utc(r["startedAt"]), utc(r["finishedAt"]),
                     _counts(r["modules"]), r["errMessage"] or ""])
    print(table(rows) if page["items"] else "no sync runs")
    if page["nextCursor"]:
        print(f"more: --cursor {page['nextCursor']}")
    return 0


def cmd_run(client: httpx.Client, args: argparse.Namespace) -> int:
    r = call(client, "GET", f"/api/v1/hubs/{args.hub}/syncJobs/{args.job}")
    if args.json:
        print(json.dumps(r, indent=2, ensure_ascii=False))
        return 0
    for label, value in (("job", r["jobId"]), ("profile", r["profileId"]),
                         ("type", r["type"]), ("trigger", r["trigger"]),
                         ("state", r["state"]), ("requested", utc(r["requestedAt"])),
                         ("started", utc(r["startedAt"])),
                         ("finished", utc(r["finishedAt"])),
                         ("progress", f"{r['progress']['done']}/{r['progress']['total']}"),
                         ("error", r["errMessage"]), ("failed side", r["errSvcId"])):
        print(f"{label + ':':13}{value if value is not None else '-'}")
    if r["modules"]:
        rows = [["MODULE", "CREATED", "UPDATED", "DELETED", "MATCHED", "CONFLICTS"]]
        rows += [[m, *(str(c[k]) for k in ("created", "updated", "deleted", "matched",
                                          "conflicts"))]
                 for m, c in sorted(r["modules"].items())]
        print("\n" + table(rows))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    return run(args, timeout=30)


def add_parser(sub: Any) -> None:
    """Add `sync` and its actions to the CLI's subcommands."""
    top = sub.add_parser("sync", help="a hub's two-way sync runs")
    actions = top.add_subparsers(dest="action_name", required=True)

    def action(name: str, helptext: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=helptext)
        add_connection_args(p)
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        p.add_argument("hub", help="the hub's id")
        p.set_defaults(func=cmd_sync, action=func)
        return p

    ls = action("runs", "the hub's sync runs, newest first", cmd_runs)
    ls.add_argument("--profile", help="only this profile's runs")
    ls.add_argument("--state", choices=_STATES, type=str.lower, help="only runs in this state")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (1-500; 50)")
    ls.add_argument("--cursor", help="the next page, as printed by the previous one")

    one = action("run", "one sync run and its per-module counts", cmd_run)
    one.add_argument("job", help="the run's jobId")
