"""Microsoft Graph over the process's aiohttp client: one user's bearer token, Graph's
answers mapped onto the connector errors, paging links kept on Graph's host.

The access token (OAuth2, delegated: Contacts.ReadWrite, Calendars.ReadWrite,
Tasks.ReadWrite, Mail.Read) is the caller's, or comes from a `GraphTokens` that refreshes
it (`switchboard.services.graph_token`): then a 401 refreshes it once and the request is
sent again. A 401 otherwise (or again) is `AuthFailed`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from switchboard.retry import parse_retry_after
from switchboard.services.http_client import (
    DEFAULT_READ_CAP,
    HttpAnswer,
    HttpClient,
    HttpError,
)
from switchboard.sync.errors import (
    AuthFailed,
    ConnectorError,
    RateLimited,
    RecordConflict,
    RecordNotFound,
)
from switchboard.sync.graph_wire import decode_error

if TYPE_CHECKING:
    from switchboard.services.graph_token import GraphTokens

log = logging.getLogger(__name__)

__all__ = ["MAX_INLINE_WAIT_S", "MAX_THROTTLED", "GraphHttp", "GraphServerError",
           "GraphUnavailable", "graph_error"]

# A 429/503 with a Retry-After up to this long is waited for and the request sent again
# (at most MAX_THROTTLED times); a longer one is the caller's `RateLimited`.
MAX_INLINE_WAIT_S = 30.0
MAX_THROTTLED = 3


class GraphUnavailable(RateLimited):
    """Graph's 429, 503 or 504, or no answer: `advised_s` is the wait Graph asked for
    (its ``Retry-After``), None when it gave none (`retry_after` is then a guess)."""

    def __init__(self, description: str, advised_s: float | None) -> None:
        super().__init__(description, 5.0 if advised_s is None else advised_s)
        self.advised_s = advised_s


class GraphServerError(ConnectorError):
    """Graph's other 5xx: its own failure, worth trying again later."""

    def __init__(self, description: str) -> None:
        super().__init__("graph_error", description)


def graph_error(status: int, headers: Mapping[str, str], content: bytes,
                record_id: str | None = None) -> ConnectorError:
    """Graph's error answer as the connector error of its kind."""
    err = decode_error(content)
    text = f"Graph {status} {err.code}: {err.message}".rstrip(": ")
    if status in (429, 503, 504):
        wait = parse_retry_after(headers.get("retry-after"), time.time())
        return GraphUnavailable(text, wait)
    if status in (401, 403):
        # 403: the token lacks a scope; either way the user has to grant access again.
        return AuthFailed(text)
    if status == 404:
        return RecordNotFound(text, record_id)
    if status in (409, 412):
        # 412: If-Match held an older @odata.etag (changed in the mailbox meanwhile).
        return RecordConflict(text, record_id)
    if status >= 500:
        return GraphServerError(text)
    return ConnectorError("graph_error", text)


class GraphHttp:
    """Requests to one Graph base URL with one access token."""

    def __init__(self, http: HttpClient, token: str | GraphTokens, base_url: str, *,
                 timeout_s: float = 10.0, page_size: int = 100) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        # Times in UTC, bodies as text (what the mapping expects), pages of page_size.
        self._prefer = ('outlook.timezone="UTC", outlook.body-content-type="text", '
                        f"odata.maxpagesize={page_size}")

    def url(self, path_or_link: str) -> str:
        """A path under the base URL, or a paging link Graph gave. A link elsewhere is
        refused: following it would hand the user's token to another host."""
        if path_or_link.startswith("/"):
            return self.base_url + path_or_link
        if path_or_link.startswith(self.base_url + "/"):
            return path_or_link
        raise ConnectorError("graph_bad_link", "a paging link outside the Graph base URL")

    async def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   json: Any = None, headers: Mapping[str, str] | None = None,
                   record_id: str | None = None, read_cap: int | None = None
                   ) -> HttpAnswer:
        """One request, throttling waited out; an error answer raises its connector error.
        With `read_cap`, a longer answer is read that far only (`truncated` says so)."""
        tokens = None if isinstance(self._token, str) else self._token
        token = await tokens.current() if tokens is not None else str(self._token)
        sent = {"authorization": f"Bearer {token}", "accept": "application/json",
                "prefer": self._prefer}
        if headers:
            sent.update(headers)
        url = self.url(path)
        refreshed = False
        for attempt in range(MAX_THROTTLED + 2):
            try:
                resp = await self.http.request(
                    method, url, params=params, json=json, headers=sent,
                    timeout_s=self._timeout_s,
                    read_cap=DEFAULT_READ_CAP if read_cap is None else read_cap)
            except HttpError as exc:
                log.warning("graph: %s %s: %s", method, path.split("?", 1)[0], exc.reason)
                raise GraphUnavailable("Graph could not be reached; retry", None
                                       ) from None
            if resp.is_success:
                return resp
            if resp.status_code == 401 and tokens is not None and not refreshed:
                # Expired or revoked early: one new token, the request once more.
                refreshed = True
                token = await tokens.refresh(token)
                sent["authorization"] = f"Bearer {token}"
                continue
            error = graph_error(resp.status_code, resp.headers, resp.content, record_id)
            if (isinstance(error, RateLimited) and error.retry_after is not None
                    and attempt - refreshed < MAX_THROTTLED):
                wait = parse_retry_after(resp.headers.get("retry-after"), time.time())
                if wait is not None and wait <= MAX_INLINE_WAIT_S:
                    await asyncio.sleep(wait)
                    continue
            raise error
        raise AssertionError("unreachable")

