"""Syncro's API client against the loopback fake, in the hub's own process: each
account kept within its budget (shared by processes: `test_syncro_budget`), 429 with
Retry-After honoured, every page followed, and writes made once (a POST that times out
after creating is not repeated)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from switchboard.errors import BadRequest
from switchboard.providers.syncro_budget import Rule
from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.channels.syncro_slots import SyncroSlots
from tests.integration.test_syncro import Env, env

__all__ = ["env"]  # the module's own hub and fake (a module-scoped fixture)


# ---- the client: rate, 429, pagination, idempotent writes ----------------------------------


def most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] + window <= t:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_the_client_keeps_each_account_within_its_budget(env: Env) -> None:
    account = env.syncro.add_account("rate" + uuid.uuid4().hex[:6], "tok")
    # Six in any second (the hub's own budget is Syncro's 180 a minute): ticks of 0.24 s.
    slots = SyncroSlots(env.runtime, Rule.for_budget(6, 1.0))
    env.runtime.on_stop(slots.stop)
    client = SyncroClient(env.runtime, slots)
    started = time.monotonic()
    await asyncio.gather(*(client.me(account.subdomain, "tok") for _ in range(12)))
    assert time.monotonic() - started >= 2.0  # one a tick: 12 ticks
    assert len(account.requests) == 12
    assert most_in_window(account.requests, 1.0) <= 6


async def test_a_429_is_honoured_with_its_retry_after(env: Env) -> None:
    account = env.syncro.add_account("busy" + uuid.uuid4().hex[:6], "tok")
    env.syncro.limit, env.syncro.window, env.syncro.retry_after = 2, 1.0, 1
    try:
        client = SyncroClient(env.runtime)
        started = time.monotonic()
        names = [await client.me(account.subdomain, "tok") for _ in range(4)]
    finally:
        env.syncro.limit = None
    assert names == ["Tech Tina"] * 4
    assert time.monotonic() - started >= 1.0
    assert len(account.requests) == 5  # one 429, sent again after Retry-After


async def test_listings_follow_every_page(env: Env) -> None:
    account = env.syncro.add_account("pages" + uuid.uuid4().hex[:6], "tok")
    made = [env.syncro.add_customer(account, firstname=f"c{i}") for i in range(60)]
    client = SyncroClient(env.runtime)
    got = await client.list_all(account.subdomain, "tok", "/customers", "customers")
    assert [c["id"] for c in got] == [c["id"] for c in made]
    assert len(account.requests) == 3


async def test_a_comment_that_times_out_after_being_written_exists_once(env: Env) -> None:
    account = env.syncro.add_account("idem" + uuid.uuid4().hex[:6], "tok")
    customer = env.syncro.add_customer(account)
    client = env.plugin().client
    env.syncro.timeout_after_create, env.syncro.hold_s = 1, 2.0  # the hub waits 1 s
    ticket = await client.create_ticket(
        account.subdomain, "tok", {"customer_id": customer["id"], "subject": "Printer"},
        comment_subject="Initial Issue", comment_body="It jams", key="activity-1")
    assert len(account.tickets) == 1 and ticket["id"] == account.tickets[0]["id"]
    env.syncro.timeout_after_create = 1
    comment = await client.add_comment(account.subdomain, "tok", str(ticket["id"]),
                                       subject="Update", body="Still jams", key="activity-2")
    comments = account.tickets[0]["comments"]
    assert len(comments) == 2 and comment["id"] == comments[1]["id"]
    assert comments[1]["body"].startswith("Still jams\n\n[sb:")
    # Without a timeout a new key writes a new comment, and the same key again would not
    # be looked for (an answered POST is not ambiguous).
    await client.add_comment(account.subdomain, "tok", str(ticket["id"]), subject="Update",
                             body="Fixed", key="activity-3")
    assert len(account.tickets[0]["comments"]) == 3
    # A redelivery of a write an earlier call may have made (`retried`) looks first: the
    # comment an earlier call wrote is found, not written again.
    first = await client.add_comment(account.subdomain, "tok", str(ticket["id"]),
                                     subject="Update", body="Slow", key="activity-4")
    again = await client.add_comment(account.subdomain, "tok", str(ticket["id"]),
                                     subject="Update", body="Slow", key="activity-4",
                                     retried=True)
    assert again["id"] == first["id"]
    assert len(account.tickets[0]["comments"]) == 4


async def test_a_refused_write_is_a_400_with_syncros_words(env: Env) -> None:
    account = env.syncro.add_account("ref" + uuid.uuid4().hex[:6], "tok")
    client = env.plugin().client
    with pytest.raises(BadRequest) as e:
        await client.create_ticket(account.subdomain, "tok", {"customer_id": 1},
                                   comment_subject="s", comment_body="b", key="k")
    assert "Subject can't be blank" in e.value.description
    assert account.tickets == []


async def test_http_client_is_not_httpx(env: Env) -> None:
    # The hub's outbound calls go through the process's aiohttp client.
    assert not isinstance(env.runtime.http, httpx.AsyncClient)
