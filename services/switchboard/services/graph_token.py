"""A Microsoft Graph access token that stays valid for a run: refreshed from the mailbox
side's refresh token (`switchboard.sync.graph_token`) before the first request when there
is none, before it expires, and once when Graph answers 401 (`GraphHttp` asks for that).

Microsoft rotates refresh tokens: the new one is handed to `save`, which the sync worker
points at the profile (sealed, `SyncStore.replace_credential`). The authority is
``SWITCHBOARD_GRAPH_AUTHORITY_URL`` (default https://login.microsoftonline.com).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable

import msgspec

from switchboard.clock import now_ms
from switchboard.retry import parse_retry_after
from switchboard.services.http_client import HttpClient, HttpError
from switchboard.sync.errors import RateLimited
from switchboard.sync.graph_token import (
    GraphCredentials,
    needs_refresh,
    parse_token_answer,
    token_request,
)

log = logging.getLogger(__name__)

__all__ = ["GraphTokens", "SaveRefreshToken"]

# (old refresh token, new refresh token): persist the rotation.
SaveRefreshToken = Callable[[str, str], Awaitable[None]]


class GraphTokens:
    """The access token source of one mailbox connector."""

    def __init__(self, http: HttpClient, authority: str, creds: GraphCredentials, *,
                 save: SaveRefreshToken | None = None, timeout_s: float = 10.0,
                 now: Callable[[], int] = now_ms) -> None:
        self.http = http
        self.authority = authority
        self.creds = creds
        self.save = save
        self.timeout_s = timeout_s
        self.refreshes = 0
        self._now = now
        self._lock = asyncio.Lock()

    async def current(self) -> str:
        """A token to send (refreshed first if there is none or it is about to expire)."""
        if needs_refresh(self.creds, self._now()):
            return await self.refresh(self.creds.access_token)
        assert self.creds.access_token is not None
        return self.creds.access_token

    async def refresh(self, stale: str | None) -> str:
        """A new access token in place of `stale` (one refresh for concurrent callers:
        whoever comes second gets the token the first one fetched)."""
        async with self._lock:
            if self.creds.access_token is not None and self.creds.access_token != stale:
                return self.creds.access_token
            url, form = token_request(self.authority, self.creds)
            try:
                resp = await self.http.request(
                    "POST", url, content=urllib.parse.urlencode(form).encode(),
                    headers={"content-type": "application/x-www-form-urlencoded",
                             "accept": "application/json"},
                    timeout_s=self.timeout_s)
            except HttpError as exc:
                log.warning("graph token: %s", exc.reason)
                raise RateLimited("the Microsoft identity platform could not be reached; "
                                  "retry", 5.0) from None
            now = self._now()
            grant = parse_token_answer(
                resp.status_code, resp.content, now,
                parse_retry_after(resp.headers.get("retry-after"), now / 1000))
            old = self.creds.refresh_token
            self.creds = msgspec.structs.replace(
                self.creds, access_token=grant.access_token, expires_at=grant.expires_at,
                refresh_token=grant.refresh_token or old)
            self.refreshes += 1
            if grant.refresh_token and grant.refresh_token != old and self.save is not None:
                await self.save(old, grant.refresh_token)
            return grant.access_token
