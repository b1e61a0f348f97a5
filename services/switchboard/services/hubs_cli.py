"""`switchboard hubs list|show` and `switchboard integrations list|show`: what a hub holds,
as tables for people and as the API's JSON (`--json`) for scripts.

Everything goes through the REST API with the caller's token, so a hub token sees its own
hub only; secrets appear exactly as the API masks them, and reads carry no token.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from switchboard.services.cli_api import ApiFailed, add_connection_args, call, run, table, utc

# Our own shapes, whatever a hub's `compat` setting says (the table reads our field names).
_OURS = {"compat": "none"}


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def find_hub(hubs: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The hub whose id is `wanted`, else whose name is (case-insensitive); ApiFailed when
    none is, or when several hubs share that name (then their ids are listed)."""
    for h in hubs:
        if h["hubId"] == wanted:
            return h
    named = [h for h in hubs if h["name"].casefold() == wanted.casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        raise ApiFailed(f"several hubs are named {wanted!r}: pass one of their ids ("
                        + ", ".join(h["hubId"] for h in named) + ")")
    raise ApiFailed(f"no hub with id or name {wanted!r} that this token can see")


def resolve_hub(client: httpx.Client, wanted: str | None) -> dict[str, Any]:
    """`find_hub` over the hubs the token sees (a hub token sees its own only); with no
    hub named, the one hub the token sees."""
    hubs: list[dict[str, Any]] = call(client, "GET", "/api/v1/hubs")
    if wanted is None:
        if len(hubs) == 1:
            return hubs[0]
        raise ApiFailed(f"this token sees {len(hubs)} hubs: pass --hub (an id or a name)")
    return find_hub(hubs, wanted)


def _status(status_id: int) -> str:
    return {3000: "active", 3002: "paused"}.get(status_id, str(status_id))


def _target(integration: dict[str, Any]) -> str:
    """Where an integration's deliveries go, in a few words."""
    cfg = integration.get("configuration") or {}
    if cfg.get("webhookUrl"):
        return str(cfg["webhookUrl"])
    if integration.get("channelId") == "Direct":
        return "websocket"
    return "-"


def integration_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["INTEGRATION ID", "NAME", "CHANNEL", "TYPE", "STATUS", "DELIVERS TO"]]
    for i in items:
        rows.append([i["integrationId"], i["name"], i["channelId"], i["integrationTypeId"],
                     _status(i["statusId"]), _target(i)])
    return rows


def cmd_hubs_list(client: httpx.Client, args: argparse.Namespace) -> int:
    hubs: list[dict[str, Any]] = call(client, "GET", "/api/v1/hubs")
    if args.json:
        _dump(hubs)
        return 0
    rows = [["HUB ID", "NAME", "INTEGRATIONS", "CREATED (UTC)", "TOKEN ISSUED (UTC)"]]
    for h in sorted(hubs, key=lambda h: h["createdAt"]):
        rows.append([h["hubId"], h["name"], str(h.get("integrationCount", "-")),
                     utc(h["createdAt"]), utc(h.get("tokenIssuedAt"))])
    print(table(rows) if hubs else "no hubs")
    return 0


def cmd_hubs_show(client: httpx.Client, args: argparse.Namespace) -> int:
    hub = resolve_hub(client, args.hub)
    items: list[dict[str, Any]] = call(
        client, "GET", f"/api/v1/integrations/hubs/{hub['hubId']}", params=_OURS)
    if args.json:
        _dump({**hub, "integrations": items})
        return 0
    for label, value in (("hub", hub["hubId"]), ("name", hub["name"]),
                         ("created", utc(hub["createdAt"])),
                         ("token issued", utc(hub.get("tokenIssuedAt"))),
                         ("retries", hub.get("retrySchedule") or "the deployment's schedule"),
                         ("compat", hub.get("compat") or "none")):
        print(f"{label + ':':14}{value}")
    print("\n" + (table(integration_rows(items)) if items else "no integrations"))
    return 0


def cmd_integrations_list(client: httpx.Client, args: argparse.Namespace) -> int:
    hub = resolve_hub(client, args.hub)
    items: list[dict[str, Any]] = call(
        client, "GET", f"/api/v1/integrations/hubs/{hub['hubId']}", params=_OURS)
    if args.json:
        _dump(items)
        return 0
    print(table(integration_rows(items)) if items else f"hub {hub['name']} has no integrations")
    return 0


def _value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value).replace("\n", " ")


def cmd_integrations_show(client: httpx.Client, args: argparse.Namespace) -> int:
    i = call(client, "GET", f"/api/v1/integrations/{args.integration}", params=_OURS)
    if args.json:
        _dump(i)
        return 0
    for label, value in (("integration", i["integrationId"]), ("name", i["name"]),
                         ("hub", i["hubId"]), ("channel", i["channelId"]),
                         ("type", i["integrationTypeId"]), ("status", _status(i["statusId"]))):
        print(f"{label + ':':14}{value}")
    config = i.get("configuration") or {}
    if config:
        print("configuration:")
        width = max(len(k) for k in config) + 2
        for key in sorted(config):
            print(f"  {key + ':':{width}}{_value(config[key])}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    return run(args, timeout=30)


def add_parser(sub: Any) -> None:
    """Add `hubs` and `integrations` (list and show) to the CLI's subcommands."""

    def action(actions: Any, name: str, helptext: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=helptext)
        add_connection_args(p)
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        p.set_defaults(func=cmd_api, action=func)
        return p

    hubs = sub.add_parser("hubs", help="list hubs, show one with its integrations")
    hub_actions = hubs.add_subparsers(dest="action_name", required=True)
    action(hub_actions, "list", "every hub the token sees", cmd_hubs_list)
    show = action(hub_actions, "show", "one hub and its integrations", cmd_hubs_show)
    show.add_argument("hub", help="the hub's id or name (case-insensitive)")

    integrations = sub.add_parser("integrations", help="list a hub's integrations, show one")
    int_actions = integrations.add_subparsers(dest="action_name", required=True)
    ls = action(int_actions, "list", "a hub's integrations, oldest first",
                cmd_integrations_list)
    ls.add_argument("--hub", help="the hub's id or name (case-insensitive); default: the "
                                  "hub of a hub token")
    one = action(int_actions, "show", "one integration (secrets masked)", cmd_integrations_show)
    one.add_argument("integration", help="the integration's id")
