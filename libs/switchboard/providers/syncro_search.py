"""Searching Syncro's customers, tickets and leads: the REST actions' query parameters
(Syncro's own names, plus ``limit`` and ``order``) checked and turned into Syncro's query.
Pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from msgspec import Struct

from switchboard.errors import BadRequest
from switchboard.providers.syncro_records import Kind, ParamKind

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Search", "parse_search"]

# How many records a search returns unless asked (`limit`), and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 500


# ---- searching ---------------------------------------------------------------------------


class Search(Struct, frozen=True):
    """Syncro's query for a listing, and how many records to return at most."""

    params: dict[str, str]
    limit: int


_SORT_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _digits(value: str, name: str) -> str:
    if not (value.isascii() and value.isdigit()) or len(value) > 16 or int(value) < 1:
        raise BadRequest("invalid_query", f"{name} must be a positive integer id", name)
    return str(int(value))


def _date(value: str, name: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("invalid_query",
                         f"{name} must be an ISO 8601 date or time (2025-05-01)", name) from None
    return value


def _one(kind: ParamKind, name: str, value: str) -> str:
    if kind == "id":
        return _digits(value, name)
    if kind == "bool":
        low = value.casefold()
        if low not in _TRUE | _FALSE:
            raise BadRequest("invalid_query", f"{name} must be true or false", name)
        return "true" if low in _TRUE else "false"
    if kind == "date":
        return _date(value, name)
    if kind == "sort":
        if not _SORT_FIELD.match(value):
            raise BadRequest("invalid_query", "sort must be a field name such as firstname",
                             name)
        return value
    if kind == "order":
        if value.casefold() not in ("asc", "desc"):
            raise BadRequest("invalid_query", "order must be asc or desc", name)
        return value.upper()
    return value


def _limit(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 6 \
            or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest("invalid_query", f"limit must be an integer from 1 to {MAX_LIMIT}",
                         "limit")
    return int(value)


def parse_search(kind: Kind, items: Iterable[tuple[str, str]]) -> Search:
    """Our query parameters (Syncro's names, plus `limit`, and `order` beside `sort`)
    as Syncro's query. Unknown or repeated parameters are refused (400 naming them);
    list parameters may repeat or be comma-separated and go to Syncro comma-separated."""
    given: dict[str, list[str]] = {}
    for name, value in items:
        if name != "limit" and name not in kind.search:
            known = ", ".join([*kind.search, "limit"])
            raise BadRequest("invalid_query", f"unknown parameter {name[:50]!r}; one of "
                             f"{known}", name[:100])
        if len(value) > 1000:
            raise BadRequest("invalid_query", f"{name} is too long", name)
        given.setdefault(name, []).append(value)
    params: dict[str, str] = {}
    limit = DEFAULT_LIMIT
    for name, values in given.items():
        what = "limit" if name == "limit" else kind.search[name]
        if len(values) > 1 and what != "list":
            raise BadRequest("invalid_query", f"{name} is given more than once", name)
        if what == "limit":
            limit = _limit(values[0])
            continue
        if what == "list":
            parts = [p.strip() for v in values for p in v.split(",") if p.strip()]
            if len(parts) > 100:
                raise BadRequest("invalid_query", f"{name}: at most 100 values", name)
            if parts:
                params[name] = ",".join(parts)
            continue
        if values[0] == "":
            continue
        params[name] = _one(what, name, values[0])
    if "order" in params:
        order = params.pop("order")
        if "sort" not in params:
            raise BadRequest("invalid_query", "order needs sort (the field to sort by)",
                             "order")
        params["sort"] = f"{params['sort']} {order}"
    return Search(params=params, limit=limit)
