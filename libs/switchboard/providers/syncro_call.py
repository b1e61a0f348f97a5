"""A raw, authorised call to any path of a Syncro account's API (the seed's "Make an API
call"): the body, and the checks that keep the account's token on its own API base.
Pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from switchboard.errors import BadRequest
from switchboard.providers.syncro_records import Short

__all__ = ["FORBIDDEN_HEADERS", "RawCall", "call_path", "call_query", "check_call_headers"]

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
QueryValue = Short | int | float | bool


class RawCall(Struct, forbid_unknown_fields=True, kw_only=True):
    """An authorised request to any path of the account's API (``POST /syncro/call``)."""

    method: Method
    path: Annotated[str, Meta(min_length=1, max_length=2000)]
    query: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=100)], QueryValue],
                     Meta(max_length=50)] | None = None
    headers: Annotated[dict[str, Short], Meta(max_length=20)] | None = None
    body: Any = None


# ---- a raw call --------------------------------------------------------------------------

_SEGMENT = re.compile(r"[A-Za-z0-9_\-.]+")
# Set by the hub itself: the account's token and the API's address, and the framing.
FORBIDDEN_HEADERS = frozenset({
    "authorization", "proxy-authorization", "host", "cookie", "content-length",
    "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive",
    "x-forwarded-for", "x-forwarded-host", "forwarded",
})
# The hub sends and reads JSON: these may be given only with JSON values.
JSON_HEADERS = {"accept": "application/json", "content-type": "application/json"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110)


def call_path(path: str) -> str:
    """A path under the account's API base (``/customers/12``; ``/v1/customers`` as the
    seed writes it is the same). Refused (400): absolute URLs, other hosts, a query or
    fragment (use `query`), ``.`` and ``..`` segments, empty segments, anything but
    letters, digits, ``_``, ``-`` and ``.`` in a segment."""
    if not path.startswith("/") or path.startswith("//"):
        raise BadRequest("invalid_path", "path must be relative to the account's API base, "
                         "starting with one /", "path")
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:] or "/"
    segments = path[1:].split("/")
    for seg in segments:
        if seg in ("", ".", "..") or not _SEGMENT.fullmatch(seg):
            if seg == "" and len(segments) == 1:
                break
            raise BadRequest("invalid_path", "path segments are letters, digits, _, - and . "
                             "(no .., no //, no query: use query)", "path")
    return path


def check_call_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers to send with the call. Refused (400): headers the hub sets
    (Authorization, Host, …), a non-JSON Accept or Content-Type, names that are not
    header names and values with control characters (no header injection)."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        low = name.casefold()
        field = f"headers.{name[:50]}"
        if low in FORBIDDEN_HEADERS:
            raise BadRequest("forbidden_header", f"{name[:50]} is set by the hub (the "
                             "account's token goes only to its own API)", field)
        if not _TOKEN.fullmatch(name) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise BadRequest("invalid_header", "a header name is letters, digits and "
                             "!#$%&'*+-.^_`|~; a value has no control characters", field)
        wanted = JSON_HEADERS.get(low)
        if wanted is not None and value.split(";", 1)[0].strip().casefold() != wanted:
            raise BadRequest("unsupported_header", f"{name[:50]} must be {wanted}: the hub "
                             "sends and reads Syncro's JSON", field)
        out[name] = value
    return out


def call_query(query: Mapping[str, Any] | None) -> dict[str, str]:
    """The raw call's query as strings (booleans as true/false)."""
    out: dict[str, str] = {}
    for name, value in (query or {}).items():
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out
