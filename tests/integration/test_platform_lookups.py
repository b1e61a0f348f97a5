"""An initial sync asks the platform about every unpaired contact by e-mail: thousands of
addresses, sent a few per request (one query string of them all is refused by HTTP
servers: uvicorn answers 400 past ~64 KiB of request line)."""

from __future__ import annotations

import msgspec

from switchboard.services.platform_connector import (
    EMAILS_PER_LOOKUP,
    PlatformConnector,
    platform_http,
)
from switchboard.settings import Settings
from switchboard.sync.platform_wire import PlatformAuth
from tests.fakes.platform import FakePlatform


async def test_thousands_of_emails_are_looked_up_in_chunks() -> None:
    platform = await FakePlatform().start()
    http = platform_http(msgspec.structs.replace(Settings.from_env({}),
                                                 allow_private_destinations=True))
    try:
        platform.add_user("tok")
        wanted = [f"person{i}.with.a.long.address@example-{i % 7}.test" for i in range(3000)]
        found = {wanted[i]: platform.add("contact", firstName=f"P{i}", email=wanted[i])["id"]
                 for i in (0, 49, 50, 1234, 2999)}
        conn = PlatformConnector(http, platform.url, PlatformAuth(scheme="bearer",
                                                                  token="tok"),
                                 frozenset(), allow_private=True)
        before = len(platform.calls)
        got = await conn.contacts_by_email(wanted)
        assert sorted(c.id for c in got) == sorted(found.values())
        lookups = platform.calls[before:]
        assert len(lookups) == -(-len(wanted) // EMAILS_PER_LOOKUP)
        assert {sum(k == "email" for k, _v in q) for _m, _p, q in lookups} == {
            EMAILS_PER_LOOKUP}
        assert await conn.contacts_by_email([]) == []
        assert len(platform.calls) == before + len(lookups)  # none for no address
    finally:
        await http.close()
        await platform.stop()
