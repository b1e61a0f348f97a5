"""What the CLI's API commands (`switchboard deliveries …`, `switchboard syncro …`) share:
one authenticated client per command, our error answers as one readable line, tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from switchboard import devstate

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiFailed(Exception):
    """The API answered 4xx/5xx; the message is its status and descriptions."""


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One API request; the decoded JSON answer (None when empty), or ApiFailed."""
    resp = client.request(method, path, **kwargs)
    if resp.status_code >= 400:
        try:
            errors = resp.json().get("errors", [])
            why = "; ".join(
                e.get("description", e.get("code", "")) + (f" (field {e['field']})"
                                                           if e.get("field") else "")
                for e in errors)
        except (ValueError, AttributeError):
            why = resp.text
        raise ApiFailed(f"{resp.status_code}: {why}")
    return resp.json() if resp.content else None


def utc(ms: int | None) -> str:
    """A time of the API (ms since the epoch) as the tables show it, in UTC; "-" if none."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """--url and --token, as every API command takes them."""
    p.add_argument("--url", default=None,
                   help="the hub's base URL (default: a running `switchboard dev`'s, from "
                        "<$SWITCHBOARD_DATA_DIR or ./var>/dev.json, else "
                        f"{DEFAULT_URL})")
    p.add_argument("--token", default="", help="default: $SWITCHBOARD_TOKEN")


def default_url(env: Mapping[str, str] | None = None) -> str:
    """The URL of the `switchboard dev` running on the default data dir, else :8080."""
    env = os.environ if env is None else env
    path = Path(env.get("SWITCHBOARD_DATA_DIR") or "var") / devstate.FILE_NAME
    try:
        state = devstate.decode(path.read_bytes())
    except OSError:
        state = None
    return state.url if state is not None else DEFAULT_URL


def run(args: argparse.Namespace, timeout: float) -> int:
    """Call `args.action(client, args)` with a client for `args.url` and the token; exit
    codes: 0 done, 1 the API refused or could not be reached, 2 bad usage."""
    args.url = args.url or default_url()
    token = args.token or os.environ.get("SWITCHBOARD_TOKEN", "")
    if not token:
        print("pass --token or set SWITCHBOARD_TOKEN (a hub access token or the admin token)",
              file=sys.stderr)
        return 2
    try:
        with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {token}"},
                          timeout=timeout) as client:
            result: int = args.action(client, args)
            return result
    except ApiFailed as exc:
        print(f"error {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # --data that is not JSON, a missing @file
        print(f"error: {exc}", file=sys.stderr)
        return 2
