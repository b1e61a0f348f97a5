"""Syncro's REST API through the process's aiohttp client: the I/O shell around
`switchboard.providers.syncro*`.

- Every request of an account waits for a slot of the account's budget, shared by every
  process through Kafka (180 in any 60 s, `syncro_slots`); a 429 blocks the account for
  every process until its ``Retry-After`` and the request is sent again (up to `MAX_429`
  times).
- Listings follow ``meta.total_pages``.
- `create_idempotent` writes a record at most once (`syncro_idempotency`): after an
  ambiguous failure it looks for the marker before it POSTs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from switchboard.errors import BadRequest, SwitchboardError, Unavailable
from switchboard.providers import syncro
from switchboard.providers import syncro_idempotency as idem
from switchboard.retry import parse_retry_after
from switchboard.services.channels.syncro_slots import SyncroSlots
from switchboard.services.http_client import HttpAnswer, HttpError, HttpTimeout
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

MAX_429 = 3
# A Retry-After longer than this is not waited for inline: the caller gets 503.
MAX_INLINE_WAIT_S = 60.0
Lookup = Callable[[], Awaitable[list[dict[str, Any]]]]


def refusal(status: int, body: bytes, field: str | None = None) -> SwitchboardError:
    """Syncro's error answer as ours: 429 and 5xx → 503 (retry), another 4xx → 400 with
    Syncro's own words."""
    answer = syncro.parse_error(status, body)
    if status == 429 or status >= 500:
        return Unavailable("provider_unavailable", f"{answer.describe()}; retry",
                           retry_after=5)
    return BadRequest("provider_error", answer.describe(), field)


def _not_sent(exc: HttpError) -> bool:
    # A refused connection or a bad/forbidden URL: the request never reached Syncro.
    return (type(exc) is HttpError and exc.reason == "connection_error") \
        or exc.reason in ("invalid_url", "destination_forbidden")


class SyncroClient:
    """Calls Syncro within the budget every process shares (the runtime's `SyncroSlots`).

    There is no per-process fallback: when the budget cannot be reached (the broker is
    down) a request fails with 503 rather than risk more than Syncro allows."""

    def __init__(self, runtime: Runtime, slots: SyncroSlots | None = None) -> None:
        self.runtime = runtime
        self.slots = slots or SyncroSlots.for_runtime(runtime)

    async def request(self, subdomain: str, token: str, method: str, path: str, *,
                      params: Mapping[str, str] | None = None, json: Any = None,
                      headers: Mapping[str, str] | None = None) -> HttpAnswer:
        """One request within the account's budget; HttpError if there is no answer,
        Unavailable if the budget cannot be reached. `headers` are the caller's, already
        checked (the token's header always wins)."""
        settings = self.runtime.settings
        url = syncro.api_base(settings.syncro_api_url, subdomain) + path
        sent = syncro.auth_headers(token)  # lower-case names: the caller's never repeat them
        if headers:
            sent = {**{k: v for k, v in headers.items() if k.casefold() not in sent}, **sent}
        account = subdomain.casefold()
        resp: HttpAnswer | None = None
        for _ in range(MAX_429 + 1):
            await self.slots.acquire(account)
            resp = await self.runtime.http.request(
                method, url, headers=sent, params=params, json=json,
                timeout_s=settings.provider_timeout_s)
            if resp.status_code != 429:
                return resp
            wait = parse_retry_after(resp.headers.get("retry-after"), time.time())
            wait = 1.0 if wait is None else wait
            # Every process waits it out; the next claim is decided after this record.
            await self.slots.block(account, wait)
            if wait > MAX_INLINE_WAIT_S:
                break
        assert resp is not None
        return resp

    async def call(self, subdomain: str, token: str, method: str, path: str, *,
                   params: Mapping[str, str] | None = None, json: Any = None,
                   field: str | None = None) -> HttpAnswer:
        """`request`, with no answer → Unavailable and an error answer → `refusal`."""
        try:
            resp = await self.request(subdomain, token, method, path, params=params, json=json)
        except HttpError as exc:
            log.warning("syncro: %s %s: %s", method, path.split("?", 1)[0], exc.reason)
            raise Unavailable("provider_unavailable", "Syncro could not be reached; retry",
                              retry_after=5) from None
        if not resp.is_success:
            raise refusal(resp.status_code, resp.content, field)
        return resp

    async def me(self, subdomain: str, token: str, field: str | None = None) -> str:
        """Check a token (``GET /me``): who it acts as."""
        resp = await self.call(subdomain, token, "GET", "/me", field=field)
        return syncro.parse_me(resp.content)

    async def get_one(self, subdomain: str, token: str, path: str, key: str
                      ) -> dict[str, Any]:
        resp = await self.call(subdomain, token, "GET", path)
        return syncro.unwrap_one(resp.content, key)

    async def list_all(self, subdomain: str, token: str, path: str, key: str,
                       params: Mapping[str, str] | None = None,
                       max_pages: int = syncro.MAX_PAGES) -> list[dict[str, Any]]:
        """Every record of a listing, page after page (at most `max_pages`)."""
        out: list[dict[str, Any]] = []
        number: int | None = 1
        read = 0
        while number is not None:
            resp = await self.call(subdomain, token, "GET", path,
                                   params=syncro.page_params(params or {}, number))
            page = syncro.unwrap_page(resp.content, key, number)
            read += 1
            out.extend(page.records)
            number = syncro.next_page(page, read, max_pages)
        return out

    async def create_idempotent(self, subdomain: str, token: str, path: str,
                                body: dict[str, Any], key: str, lookup: Lookup,
                                *, max_posts: int = 3, retried: bool = False
                                ) -> dict[str, Any]:
        """POST `body` (already carrying the marker) at most once in effect: after an
        ambiguous failure `lookup` lists where the record would be, and a record carrying
        the marker is taken as the earlier try's. `retried`: an earlier call for the same
        `key` may have written it (a redelivery), so look before the first POST too.
        Returns Syncro's answer (or the found record); BadRequest if refused, Unavailable
        if out of tries."""
        token_ = idem.token_for(key)
        state = idem.PostState(max_posts=max_posts,
                               last=idem.PostResult.AMBIGUOUS if retried else None)
        found: dict[str, Any] | None = None
        answer: dict[str, Any] = {}
        while True:
            step = idem.decide(state)
            if step is idem.Decision.DONE:
                return found if found is not None else answer
            if step is idem.Decision.FAIL:
                raise Unavailable("provider_unavailable",
                                  "Syncro did not confirm the write; retry", retry_after=5)
            if step is idem.Decision.LOOK:
                hit = idem.find_marked(await lookup(), token_)
                found = dict(hit) if hit is not None else None
                state = idem.after_look(state, found is not None)
                continue
            try:
                resp = await self.request(subdomain, token, "POST", path, json=body)
            except HttpTimeout:
                state = idem.after_post(state, idem.PostResult.AMBIGUOUS)
                continue
            except HttpError as exc:
                state = idem.after_post(state, idem.classify(None, sent=not _not_sent(exc)))
                continue
            result = idem.classify(resp.status_code, sent=True)
            if result is idem.PostResult.REFUSED:
                raise refusal(resp.status_code, resp.content)
            if result is idem.PostResult.CREATED:
                try:
                    answer = syncro.decode_object(resp.content)
                except BadRequest:
                    answer = {}
            state = idem.after_post(state, result)

    async def add_comment(self, subdomain: str, token: str, ticket_id: str, *,
                          subject: str, body: str, key: str, hidden: bool = False,
                          do_not_email: bool = True, retried: bool = False
                          ) -> dict[str, Any]:
        """``POST /tickets/{id}/comment`` once, whatever times out."""
        tag = idem.token_for(key)
        payload = {"subject": subject, "body": idem.mark(body, tag), "hidden": hidden,
                   "do_not_email": do_not_email}
        path = f"/tickets/{ticket_id}/comment"

        async def lookup() -> list[dict[str, Any]]:
            ticket = await self.get_one(subdomain, token, f"/tickets/{ticket_id}", "ticket")
            comments = ticket.get("comments")
            return [c for c in comments if isinstance(c, dict)] if isinstance(
                comments, list) else []

        answer = await self.create_idempotent(subdomain, token, path, payload, key, lookup,
                                              retried=retried)
        comment = answer.get("comment")
        return comment if isinstance(comment, dict) else answer

    async def create_ticket(self, subdomain: str, token: str, fields: dict[str, Any], *,
                            comment_subject: str, comment_body: str, key: str,
                            hidden: bool = False, retried: bool = False) -> dict[str, Any]:
        """``POST /tickets`` once, its first comment carrying the marker; after an
        ambiguous failure the customer's tickets are searched for it."""
        tag = idem.token_for(key)
        payload = dict(fields)
        payload["comments_attributes"] = [{
            "subject": comment_subject, "body": idem.mark(comment_body, tag),
            "hidden": hidden, "do_not_email": True}]
        params = {"customer_id": str(fields.get("customer_id", ""))}

        async def lookup() -> list[dict[str, Any]]:
            return await self.list_all(subdomain, token, "/tickets", "tickets", params,
                                       max_pages=5)

        answer = await self.create_idempotent(subdomain, token, "/tickets", payload, key,
                                              lookup, retried=retried)
        ticket = answer.get("ticket")
        return ticket if isinstance(ticket, dict) else answer
