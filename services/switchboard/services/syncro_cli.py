"""`switchboard syncro customers|tickets|leads list|get|create|update|delete`, `syncro
tickets comment` and `syncro call`: a Syncro integration's actions from a shell, over the
public API (``/api/v1/integrations/{id}/syncro/...``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

from switchboard.providers.syncro_records import KINDS
from switchboard.services.cli_api import ApiFailed, add_connection_args, call, run, table

# The columns a listing shows: header → how to read it from a record.
_COLUMNS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "customers": [("ID", ("id",)), ("NAME", ("business_then_name", "business_name",
                                             "fullname", "firstname")),
                  ("EMAIL", ("email",)), ("PHONE", ("phone", "mobile"))],
    "tickets": [("ID", ("id",)), ("NUMBER", ("number",)), ("STATUS", ("status",)),
                ("CUSTOMER", ("customer_business_then_name", "customer_id")),
                ("SUBJECT", ("subject",))],
    "leads": [("ID", ("id",)), ("NAME", ("business_name", "first_name", "last_name")),
              ("EMAIL", ("email",)), ("STATUS", ("status",))],
}


def _cell(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = record.get(key)
        if value not in (None, ""):
            return str(value).replace("\n", " ")[:60]
    return "-"


def _show(label: str, record: dict[str, Any]) -> None:
    print(f"{label} {record.get('id', '?')}")
    for key, value in record.items():
        if key == "id" or value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            print(f"  {key}: {len(value)} item(s)")
        elif isinstance(value, dict):
            print(f"  {key}: {json.dumps(value, ensure_ascii=False)[:100]}")
        else:
            print(f"  {key}: {str(value).replace(chr(10), ' ')[:100]}")


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """`--data` (JSON or @file), then each `--set name=text` / `--set name:=json`."""
    body: dict[str, Any] = {}
    if args.data:
        text = Path(args.data[1:]).read_text() if args.data.startswith("@") else args.data
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ApiFailed("--data must be a JSON object")
        body.update(loaded)
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ApiFailed(f"--set {item!r}: expected name=value or name:=json")
        if name.endswith(":"):
            body[name[:-1]] = json.loads(value)
        else:
            body[name] = value
    return body


def _base(args: argparse.Namespace) -> str:
    return f"/api/v1/integrations/{args.integration}/syncro"


def _key_header(args: argparse.Namespace) -> dict[str, str]:
    return {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}


def cmd_list(client: httpx.Client, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    params: list[tuple[str, str]] = []
    for name in kind.search:
        value = getattr(args, name)
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            params.append((name, str(v).lower() if isinstance(v, bool) else str(v)))
    if args.limit is not None:
        params.append(("limit", str(args.limit)))
    out = call(client, "GET", f"{_base(args)}/{kind.plural}", params=params)
    if args.json:
        _dump(out)
        return 0
    found = out[kind.plural]
    columns = _COLUMNS[kind.plural]
    rows = [[h for h, _ in columns]] + [[_cell(r, keys) for _, keys in columns] for r in found]
    print(table(rows) if found else f"no {kind.plural}")
    if out.get("more"):
        print(f"more {kind.plural} match: raise --limit or narrow the search")
    return 0


def cmd_get(client: httpx.Client, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    out = call(client, "GET", f"{_base(args)}/{kind.plural}/{args.id}")
    _dump(out) if args.json else _show(kind.one, out[kind.one])
    return 0


def cmd_create(client: httpx.Client, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    out = call(client, "POST", f"{_base(args)}/{kind.plural}", json=_fields(args),
                   headers=_key_header(args))
    _dump(out) if args.json else _show(f"created {kind.one}", out[kind.one])
    return 0


def cmd_update(client: httpx.Client, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    out = call(client, "PUT", f"{_base(args)}/{kind.plural}/{args.id}", json=_fields(args))
    _dump(out) if args.json else _show(f"updated {kind.one}", out[kind.one])
    return 0


def cmd_delete(client: httpx.Client, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    call(client, "DELETE", f"{_base(args)}/{kind.plural}/{args.id}")
    print(f"deleted {kind.one} {args.id}")
    return 0


def cmd_comment(client: httpx.Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"subject": args.subject, "body": args.body,
                            "do_not_email": args.do_not_email}
    if args.hidden is not None:
        body["hidden"] = args.hidden
    out = call(client, "POST", f"{_base(args)}/tickets/{args.id}/comments", json=body,
                   headers=_key_header(args))
    if args.json:
        _dump(out)
    else:
        print(f"comment {out['comment'].get('id', '?')} on ticket {args.id}")
    return 0


def cmd_call(client: httpx.Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"method": args.method.upper(), "path": args.path}
    if args.query:
        body["query"] = dict(q.partition("=")[::2] for q in args.query)
    if args.header:
        body["headers"] = {h.partition(":")[0].strip(): h.partition(":")[2].strip()
                           for h in args.header}
    if args.data:
        text = Path(args.data[1:]).read_text() if args.data.startswith("@") else args.data
        body["body"] = json.loads(text)
    out = call(client, "POST", f"{_base(args)}/call", json=body)
    if args.json:
        _dump(out)
    else:
        print(f"HTTP {out['status']}")
        if out["body"] is not None:
            _dump(out["body"])
    return 0


def cmd_syncro(args: argparse.Namespace) -> int:
    return run(args, timeout=60)


def _common(p: argparse.ArgumentParser) -> None:
    add_connection_args(p)
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _writes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a field as text (firstname=Ada), or as JSON with := "
                        "(get_sms:=true, properties:='{\"Type\": \"MSP\"}'); repeatable")
    p.add_argument("--data", help="the fields as a JSON object, or @file.json")


def add_parser(sub: Any) -> None:
    """Add `syncro` and its actions to the CLI's subcommands."""
    top = sub.add_parser("syncro", help="customers, tickets and leads of a Syncro integration")
    kinds = top.add_subparsers(dest="syncro_kind", required=True)
    for kind in KINDS.values():
        group = kinds.add_parser(kind.plural, help=f"Syncro {kind.plural}")
        actions = group.add_subparsers(dest="syncro_action", required=True)

        def action(name: str, helptext: str, func: Any, record: bool = False,
                   actions: Any = actions, plural: str = kind.plural
                   ) -> argparse.ArgumentParser:
            p: argparse.ArgumentParser = actions.add_parser(name, help=helptext)
            p.add_argument("integration", help="the Syncro integration's id")
            if record:
                p.add_argument("id", help="the record's Syncro id")
            _common(p)
            p.set_defaults(func=cmd_syncro, action=func, kind=plural)
            return p

        ls = action("list", f"search {kind.plural} (every filter is Syncro's)", cmd_list)
        for name, what in kind.search.items():
            flag = "--" + name.replace("_", "-")
            said = f"Syncro's {name} filter"
            if what == "bool":
                ls.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                help=said)
            elif what == "list":
                ls.add_argument(flag, dest=name, action="append", help=f"{said}; repeatable")
            elif what == "order":
                ls.add_argument(flag, dest=name, choices=["asc", "desc"],
                                help="sort order (with --sort)")
            else:
                ls.add_argument(flag, dest=name, help=said + {
                    "id": " (a record id)", "date": " (a date, as Syncro takes it)",
                    "sort": " (the field to sort by)"}.get(what, ""))
        ls.add_argument("--limit", type=int, help="at most this many (default 100, max 500)")
        action("get", f"one {kind.one}", cmd_get, record=True)
        create = action("create", f"create a {kind.one}", cmd_create)
        _writes(create)
        create.add_argument("--idempotency-key", help="a retry with the same key creates "
                                                      "nothing more")
        _writes(action("update", f"change fields of a {kind.one}", cmd_update, record=True))
        if kind.deletable:
            action("delete", f"delete a {kind.one}", cmd_delete, record=True)
        if kind.plural == "tickets":
            c = action("comment", "comment on a ticket", cmd_comment, record=True)
            c.add_argument("--subject", default="Update", help="default: Update")
            c.add_argument("--body", required=True, help="the comment's text")
            c.add_argument("--hidden", action=argparse.BooleanOptionalAction,
                           help="default: the integration's commentHidden")
            c.add_argument("--do-not-email", action="store_true",
                           help="Syncro sends the customer no e-mail about it")
            c.add_argument("--idempotency-key", help="a retry with the same key comments once")

    call = kinds.add_parser("call", help="an authorised request to any Syncro API path")
    call.add_argument("integration", help="the Syncro integration's id")
    call.add_argument("method", choices=["GET", "POST", "PUT", "PATCH", "DELETE", "get",
                                         "post", "put", "patch", "delete"],
                      help="the HTTP method")
    call.add_argument("path", help="relative to the account's API base: /customers")
    call.add_argument("-q", "--query", action="append", metavar="NAME=VALUE",
                      help="a query parameter; repeatable")
    call.add_argument("-H", "--header", action="append", metavar="NAME: VALUE",
                      help="a request header; repeatable")
    call.add_argument("--data", help="the JSON body, or @file.json")
    _common(call)
    call.set_defaults(func=cmd_syncro, action=cmd_call)
