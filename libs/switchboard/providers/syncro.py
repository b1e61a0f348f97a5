"""Syncro (PSA) REST API v1: URLs, wrapped records, pagination, errors. Pure, no I/O.

Syncro wraps what it answers: one record as ``{"customer": {…}}``, a list as
``{"customers": […], "meta": {"total_pages": 3, "page": 1, …}}``, followed with
``?page=N``. Errors come as ``{"error": "…"}``, ``{"message": "…"}`` or
``{"errors": ["…"]}`` (or ``{"errors": {"field": ["…"]}}``). The token goes in a Bearer
header. Webhooks in are in `switchboard.providers.syncro_webhooks`; the rate and
idempotency rules in `syncro_budget` and `syncro_idempotency`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from switchboard import jsonsafe
from switchboard.errors import BadRequest

__all__ = [
    "MAX_PAGES",
    "Page",
    "SyncroError",
    "api_base",
    "auth_headers",
    "decode_object",
    "next_page",
    "page_params",
    "parse_error",
    "parse_me",
    "unwrap_one",
    "unwrap_page",
]

# The most pages one listing follows (Syncro pages hold 25-100 records).
MAX_PAGES = 100
_ERROR_CAP = 512


def api_base(template: str, subdomain: str) -> str:
    """The account's API base: `template` (``SWITCHBOARD_SYNCRO_API_URL``) with
    ``{subdomain}`` replaced, without a trailing slash."""
    return template.replace("{subdomain}", subdomain).rstrip("/")


def auth_headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "accept": "application/json"}


class SyncroError(Struct, frozen=True):
    """What Syncro said when it refused a request (never the token)."""

    status: int
    message: str = ""

    def describe(self) -> str:
        return f"Syncro: {self.message or f'HTTP {self.status}'} (HTTP {self.status})"


_any_decoder = msgspec.json.Decoder(Any)


def _decode(body: bytes) -> Any:
    """Syncro's JSON, through the depth-limited decoder (BadRequest if not JSON)."""
    return jsonsafe.decode(body, _any_decoder, invalid="invalid_provider_answer")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [f"{k} {t}" if isinstance(k, str) else t
                for k, v in value.items() for t in _texts(v)]
    return []


def parse_error(status: int, body: bytes) -> SyncroError:
    """Syncro's own words for a refused request, whatever its error shape."""
    try:
        data = _decode(body[:16384])
    except BadRequest:
        data = None
    message = ""
    if isinstance(data, dict):
        for key in ("error", "message", "errors"):
            texts = _texts(data.get(key))
            if texts:
                message = "; ".join(texts)
                break
    return SyncroError(status=status, message=message[:_ERROR_CAP])


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON object answer (BadRequest if it is not one)."""
    data = _decode(body)
    if not isinstance(data, dict):
        raise BadRequest("invalid_provider_answer", "Syncro's answer is not an object")
    return data


def unwrap_one(body: bytes, key: str) -> dict[str, Any]:
    """The record of a ``{key: {…}}`` answer (BadRequest if it is not one)."""
    data = _decode(body)
    record = data.get(key) if isinstance(data, dict) else None
    if not isinstance(record, dict):
        raise BadRequest("invalid_provider_answer", f"Syncro's answer has no {key!r} record")
    return record


class Page(Struct, frozen=True):
    """One page of a listing: its records and where it sits."""

    records: list[dict[str, Any]]
    page: int
    total_pages: int


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return default


def unwrap_page(body: bytes, key: str, requested: int = 1) -> Page:
    """The records of a ``{key: […], "meta": {…}}`` answer to a request for page
    `requested` (a missing ``meta`` means a single page)."""
    data = _decode(body)
    records = data.get(key) if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest("invalid_provider_answer", f"Syncro's answer has no {key!r} list")
    meta = data.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    page = _int(meta.get("page"), requested)
    total = _int(meta.get("total_pages"), page)
    return Page(records=records, page=page, total_pages=total)


def next_page(page: Page, pages_read: int, max_pages: int = MAX_PAGES) -> int | None:
    """The page to ask for next, or None: after the last page, an empty page (a listing
    that shrank while it was read), or `max_pages` pages."""
    if not page.records or page.page >= page.total_pages or pages_read >= max_pages:
        return None
    return page.page + 1


def page_params(params: Mapping[str, str], page: int) -> dict[str, str]:
    """`params` with ``page`` set (the first page is asked for without it)."""
    out = dict(params)
    if page > 1:
        out["page"] = str(page)
    else:
        out.pop("page", None)
    return out


def parse_me(body: bytes) -> str:
    """Who a token acts as (``GET /me``): the user's name, or its id, or ``""``."""
    data = _decode(body)
    if not isinstance(data, dict):
        raise BadRequest("invalid_provider_answer", "Syncro's /me answer is not an object")
    for key in ("user_name", "name", "email"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:200]
    user_id = data.get("user_id")
    return str(user_id)[:200] if isinstance(user_id, int | str) else ""
