"""The two HTTP connectors against their fakes over real HTTP on 127.0.0.1: the platform
connector against the reference platform, the Syncro connector against the loopback
Syncro (through the shared-budget Syncro client, so a broker runs), and the planner
converging the two through them."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.errors import BadRequest
from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.channels.syncro_connector import SyncroConnector
from switchboard.services.http_client import HttpClient
from switchboard.services.platform_connector import PlatformConnector, platform_http
from switchboard.services.runtime import Runtime
from switchboard.sync.connector import Capability, Connector, all_records
from switchboard.sync.errors import (
    AuthFailed,
    ConnectorError,
    RateLimited,
    RecordConflict,
    RecordNotFound,
    Unsupported,
)
from switchboard.sync.matching import lookups
from switchboard.sync.ops import Create, Delete, Plan, Update, Watermark, created_pair
from switchboard.sync.options import ModuleOptions
from switchboard.sync.pairs import PairIndex
from switchboard.sync.plan import Changes, plan
from switchboard.sync.platform_wire import PlatformAuth
from switchboard.sync.records import KINDS, Account, Contact, EmailLog, Kind, Record, Task
from switchboard.sync.syncro_map import field_maps
from tests.conftest import make_settings
from tests.fakes.platform import Canned, FakePlatform
from tests.fakes.syncro import FakeSyncro

ALL = frozenset(Capability)


@dataclass
class Env:
    platform: FakePlatform
    syncro: FakeSyncro
    runtime: Runtime
    http: HttpClient

    def portal(self, who: str = "tok", caps: frozenset[Capability] = ALL,
               scheme: str = "bearer") -> PlatformConnector:
        return PlatformConnector(self.http, self.platform.url,
                                 PlatformAuth(scheme=scheme, token=who),  # type: ignore[arg-type]
                                 caps, allow_private=True, timeout_s=5.0, page_size=2)

    def syncro_side(self, who: str = "stok", **kw: Any) -> tuple[SyncroConnector, Any]:
        account = self.syncro.add_account("sync" + uuid.uuid4().hex[:8], "stok")
        return SyncroConnector(SyncroClient(self.runtime), account.subdomain, who,
                               **kw), account


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    platform = await FakePlatform().start()
    platform.add_user("tok", user_id="u1", email="pat@platform.test")
    platform.add_user("other", user_id="u2", email="sam@platform.test")
    syncro = await FakeSyncro(per_page=2).start()
    settings = make_settings(broker, syncro_api_url=syncro.api_url(), provider_timeout_s=2.0)
    runtime = Runtime(settings)
    await runtime.start()
    http = platform_http(settings)
    await http.start()
    try:
        yield Env(platform, syncro, runtime, http)
    finally:
        await http.close()
        await runtime.stop()
        await syncro.stop()
        await platform.stop()


# ---- the platform connector ----------------------------------------------------------------


async def test_platform_users_with_a_bearer_token_or_basic_auth(env: Env) -> None:
    for scheme in ("bearer", "basic"):
        me = await env.portal(scheme=scheme).get_me()
        assert (me.org_id, me.user_id, me.email) == ("org1", "u1", "pat@platform.test")
    found = await env.portal().users_by_email(["SAM@platform.test", "nobody@x.test"])
    assert [u.user_id for u in found] == ["u2"]
    with pytest.raises(AuthFailed):
        await env.portal(who="wrong").get_me()
    with pytest.raises(AuthFailed):
        await env.portal(who="wrong", scheme="basic").my_contacts()


async def test_platform_accounts_create_get_update_delete_and_lookups(env: Env) -> None:
    p = env.portal()
    tag = uuid.uuid4().hex[:6]
    made = await p.create_account(Account(id="new", modified_at=0, name=f"Acme {tag}",
                                          domain=f"{tag}.test", phone="1"))
    assert made.id != "new" and made.modified_at > 0 and made.phone == "1"
    assert await p.get_account(made.id) == made
    changed = await p.update_account(made.id, {"phone": "2", "industry": "Tools"})
    assert (changed.phone, changed.industry) == ("2", "Tools")
    assert changed.modified_at > made.modified_at
    assert [a.id for a in await p.accounts_by_name(f"ACME {tag}")] == [made.id]
    assert [a.id for a in await p.accounts_by_domain(f"{tag}.test")] == [made.id]
    await p.delete_account(made.id)
    with pytest.raises(RecordNotFound) as missing:
        await p.get_account(made.id)
    assert missing.value.record_id == made.id
    assert await p.accounts_by_name(f"Acme {tag}") == []


async def test_platform_contacts_create_get_update_delete_and_lookups(env: Env) -> None:
    p = env.portal()
    tag = uuid.uuid4().hex[:6]
    made = await p.create_contact(Contact(id="x", modified_at=0, first_name="Ada",
                                          last_name=tag, email=f"ada@{tag}.test"))
    assert await p.get_contact(made.id) == made
    changed = await p.update_contact(made.id, {"title": "Countess", "last_name": None})
    assert (changed.title, changed.last_name) == ("Countess", None)
    assert changed.field_modified_at["title"] > made.modified_at
    await p.update_contact(made.id, {"last_name": tag})
    assert [c.id for c in await p.contacts_by_name(f"ada {tag}")] == [made.id]
    assert [c.id for c in await p.contacts_by_email([f"ADA@{tag}.test", "x@y.test"])] == [
        made.id]
    assert [c.id for c in await p.contacts_by_email_domain(f"{tag}.test")] == [made.id]
    await p.delete_contact(made.id)
    with pytest.raises(RecordNotFound):
        await p.delete_contact(made.id)
    assert await p.contacts_by_email([f"ada@{tag}.test"]) == []


async def test_platform_listings_page_and_since_includes_deletes(env: Env) -> None:
    p = env.portal()
    since = env.platform.now() + 1
    made = [env.platform.add("contact", firstName=f"C{i}") for i in range(5)]
    env.platform.add("contact", owner_id="u2", firstName="Not mine")
    env.platform.remove("contact", made[1]["id"])
    env.platform.edit("contact", made[0]["id"], lastName="Edited")
    pages: list[int] = []

    async def listing(cursor: str | None) -> Any:
        page = await p.my_contacts(since, cursor)
        pages.append(len(page.records))
        return page

    changed = [r async for r in all_records(listing)]
    assert pages == [2, 2, 1]  # two a page (the connector's page size)
    by_id = {r.id: r for r in changed}
    assert set(by_id) == {r["id"] for r in made}
    assert by_id[made[1]["id"]].deleted and not by_id[made[2]["id"]].deleted
    assert by_id[made[0]["id"]].last_name == "Edited"
    assert [r.id for r in changed][-1] == made[0]["id"]  # edited last: read last
    everything = [r async for r in all_records(lambda c: p.my_contacts(None, c))]
    assert not any(r.deleted for r in everything)
    assert made[1]["id"] not in {r.id for r in everything}
    assert "Not mine" not in {r.first_name for r in everything}


async def test_platform_errors_each_map_to_their_kind(env: Env) -> None:
    p = env.portal()
    tag = uuid.uuid4().hex[:6]
    with pytest.raises(RecordNotFound):
        await p.get_contact("no-such-id")
    await p.create_contact(Contact(id="x", modified_at=0, email=f"dup@{tag}.test"))
    with pytest.raises(RecordConflict):
        await p.create_contact(Contact(id="x", modified_at=0, email=f"DUP@{tag}.test"))
    env.platform.answer_next.append(Canned(422, {"error": {"code": "invalid",
                                                           "message": "bad phone"}}))
    with pytest.raises(ConnectorError) as refused:
        await p.create_contact(Contact(id="x", modified_at=0, phone="?"))
    assert refused.value.code == "connector_refused"
    assert "bad phone" in refused.value.description
    env.platform.answer_next.append(Canned(500, {"error": {"message": "boom"}}))
    with pytest.raises(ConnectorError) as failed:
        await p.get_me()
    assert failed.value.code == "connector_unavailable"
    # Too long a wait to hold the run for: it surfaces, with the platform's wait.
    env.platform.answer_next.append(Canned(429, {}, {"Retry-After": "120"}))
    with pytest.raises(RateLimited) as limited:
        await p.get_me()
    assert limited.value.retry_after == 120
    env.platform.answer_next.append(Canned(200, {"records": [{"id": 5}]}))
    with pytest.raises(ConnectorError) as bad:
        await p.my_accounts()
    assert bad.value.code == "connector_bad_answer"


async def test_platform_429_is_waited_out_then_retried(env: Env) -> None:
    p = env.portal()
    env.platform.refuse_next, env.platform.retry_after = 2, 1
    before = len(env.platform.calls)
    started = time.monotonic()
    me = await p.get_me()
    assert me.user_id == "u1"
    assert time.monotonic() - started >= 2.0
    assert len(env.platform.calls) - before == 3


async def test_platform_optional_kinds_and_undeclared_capabilities(env: Env) -> None:
    p = env.portal()
    task = await p.create_task(Task(id="x", modified_at=0, title="Call Ada", due_at=5))
    assert (await p.update_task(task.id, {"status": "done"})).status == "done"
    assert task.id in {t.id async for t in all_records(lambda c: p.my_tasks(None, c))}
    await p.delete_task(task.id)
    mail = await p.create_email(EmailLog(id="x", modified_at=0, message_id="<1@x>",
                                         subject="Hi"))
    assert (await p.update_email(mail.id, {"subject": "Re: Hi"})).subject == "Re: Hi"
    opp = env.platform.add("opportunity", name="Deal", contactIds=["C9", "C10"])
    assert [o.id for o in await p.opportunities_for_contacts(["C10", "C11"])] == [opp["id"]]
    bare = env.portal(caps=frozenset())
    for call in (bare.my_tasks(), bare.accounts_by_domain("x.test"),
                 bare.update_account("a", {}), bare.users_by_email(["a@b.c"]),
                 bare.opportunities_for_contacts(["c"]), bare.my_events()):
        with pytest.raises(Unsupported):
            await call


async def test_a_platform_on_a_private_address_needs_private_destinations(env: Env) -> None:
    with pytest.raises(BadRequest):
        PlatformConnector(env.http, env.platform.url, PlatformAuth(scheme="bearer",
                                                                   token="tok"),
                          allow_private=False)
    guarded = HttpClient(timeout_s=2.0, allow_private=False)
    try:
        # Even if a URL got through, the client refuses the address it connects to.
        p = PlatformConnector(guarded, env.platform.url, PlatformAuth(
            scheme="bearer", token="tok"), allow_private=True)
        with pytest.raises(ConnectorError) as refused:
            await p.get_me()
        assert "destination_forbidden" in refused.value.description
    finally:
        await guarded.close()


# ---- the Syncro connector ------------------------------------------------------------------


async def test_syncro_customers_are_accounts(env: Env) -> None:
    s, account = env.syncro_side()
    assert s.capabilities == {Capability.ACCOUNTS_BY_DOMAIN, Capability.ACCOUNT_WRITES}
    me = await s.get_me()
    assert (me.org_id, me.user_id, me.name) == (account.subdomain, "7", "Tech Tina")
    made = await s.create_account(Account(id="p1", modified_at=0, name="Acme", phone="1"))
    assert account.customers[-1]["business_name"] == "Acme"
    assert await s.get_account(made.id) == made
    env.syncro.add_customer(account, business_name="Other", email="x@acme.test")
    changed = await s.update_account(made.id, {"address": "1 Road"})
    assert changed.address == "1 Road" and account.customers[0]["address"] == "1 Road"
    assert [a.id for a in await s.accounts_by_name(" acme ")] == [made.id]
    assert [a.name for a in await s.accounts_by_domain("ACME.test")] == ["Other"]
    await s.delete_account(made.id)
    with pytest.raises(RecordNotFound):
        await s.get_account(made.id)
    with pytest.raises(RecordNotFound):
        await s.get_account("P-not-syncro")


async def test_syncro_contacts_create_get_update_delete_and_lookups(env: Env) -> None:
    s, account = env.syncro_side()
    customer = env.syncro.add_customer(account, business_name="Acme")
    with pytest.raises(ConnectorError) as refused:
        await s.create_contact(Contact(id="x", modified_at=0, first_name="Ada"))
    assert refused.value.code == "connector_refused"
    s = SyncroConnector(SyncroClient(env.runtime), account.subdomain, "stok",
                        default_customer_id=customer["id"])
    made = await s.create_contact(Contact(id="x", modified_at=0, first_name="Ada",
                                          last_name="Lovelace", email="ada@acme.test",
                                          mobile_phone="9"))
    assert account.contacts[-1]["name"] == "Ada Lovelace"
    assert made.account_id == str(customer["id"]) and made.mobile_phone == "9"
    assert await s.get_contact(made.id) == made
    changed = await s.update_contact(made.id, {"first_name": "Augusta"})
    assert (changed.first_name, changed.last_name) == ("Augusta", "Lovelace")
    assert [c.id for c in await s.contacts_by_name("augusta  lovelace")] == [made.id]
    assert [c.id for c in await s.contacts_by_email(["ADA@acme.test"])] == [made.id]
    assert [c.id for c in await s.contacts_by_email_domain("acme.test")] == [made.id]
    await s.delete_contact(made.id)
    with pytest.raises(RecordNotFound):
        await s.get_contact(made.id)
    with pytest.raises(Unsupported):
        await s.my_tasks()
    with pytest.raises(Unsupported):
        await s.create_email(EmailLog(id="x", modified_at=0))


async def test_syncro_listings_page_and_since_reads_disabled_customers(env: Env) -> None:
    s, account = env.syncro_side()
    old = [env.syncro.add_customer(account, business_name=f"Old {i}",
                                   updated_at="2020-01-01T00:00:00.000-00:00")
           for i in range(3)]
    since = int(time.time() * 1000) - 1
    fresh = [await s.create_account(Account(id="x", modified_at=0, name=f"New {i}"))
             for i in range(3)]
    await s.update_account(fresh[0].id, {"phone": "5"})
    env.syncro.add_customer(account, business_name="Gone", disabled=True,
                            updated_at=old[0]["updated_at"].replace("2020", "2999"))
    everything = [a async for a in all_records(lambda c: s.my_accounts(None, c))]
    assert {a.name for a in everything} == {f"Old {i}" for i in range(3)} | {
        f"New {i}" for i in range(3)}
    before = len(account.calls)
    changed = [a async for a in all_records(lambda c: s.my_accounts(since, c))]
    assert [(a.name, a.deleted) for a in changed][:2] == [("Gone", True), ("New 0", False)]
    assert {a.name for a in changed[2:]} == {"New 1", "New 2"}
    assert not any(a.deleted for a in changed[1:])
    # Newest first, two a page: the old ones' page is read, and reading stops there.
    assert len(account.calls) - before == 3


async def test_syncro_errors_and_429(env: Env) -> None:
    s, account = env.syncro_side(who="wrong")
    with pytest.raises(AuthFailed):
        await s.get_me()
    s, account = env.syncro_side()
    with pytest.raises(RecordNotFound):
        await s.get_contact("424242")
    customer = env.syncro.add_customer(account)
    with pytest.raises(ConnectorError) as refused:
        await s.create_contact(Contact(id="x", modified_at=0, first_name="A",
                                           account_id="999999"))
    assert refused.value.code == "connector_refused"
    assert "Customer must exist" in refused.value.description
    env.syncro.refuse_next, env.syncro.retry_after = 1, 1
    started = time.monotonic()
    assert (await s.get_account(str(customer["id"]))).name == "Ada Lovelace"
    assert time.monotonic() - started >= 1.0
    env.syncro.fail_with = 503
    try:
        with pytest.raises(ConnectorError) as down:
            await s.get_me()
    finally:
        env.syncro.fail_with = None
    assert down.value.code == "connector_unavailable"


# ---- end to end: the planner through both connectors ---------------------------------------


async def _changed(side: Connector, kind: Kind, since: int) -> list[Record]:
    name = "my_contacts" if kind == "contact" else "my_accounts"
    return [r async for r in all_records(lambda c: getattr(side, name)(since, c))]


async def _lookup(side: Connector, kind: Kind, by: str, values: tuple[str, ...]
                  ) -> list[Record]:
    if kind == "contact":
        return list(await side.contacts_by_email(values))
    out: list[Record] = []
    for v in values:
        out += await (side.accounts_by_domain(v) if by == "domain"
                      else side.accounts_by_name(v))
    return out


async def _apply(result: Plan, sides: dict[str, Connector], index: PairIndex) -> PairIndex:
    for op in result.ops:
        side = sides[op.side]
        if isinstance(op, Create):
            record = KINDS[op.kind](id="new", modified_at=0, **op.values)
            made = await (side.create_contact(record) if op.kind == "contact"
                          else side.create_account(record))
            index = index.updated([created_pair(op, made.id, made.modified_at)])
        elif isinstance(op, Update):
            await (side.update_contact(op.id, op.values) if op.kind == "contact"
                   else side.update_account(op.id, op.values))
        elif isinstance(op, Delete):
            await (side.delete_contact(op.id) if op.kind == "contact"
                   else side.delete_account(op.id))
    return index.updated(result.pairs, result.unpaired)


class Runner:
    """The least a runner does: read since the watermark, look up, plan, apply."""

    def __init__(self, portal: Connector, mailbox: Connector, kind: Kind) -> None:
        self.sides: dict[str, Connector] = {"portal": portal, "mailbox": mailbox}
        self.kind: Kind = kind
        self.options = ModuleOptions(fields=field_maps(kind))
        self.index = PairIndex()
        self.watermark = Watermark()

    async def run(self) -> Plan:
        p = await _changed(self.sides["portal"], self.kind, self.watermark.portal)
        m = await _changed(self.sides["mailbox"], self.kind, self.watermark.mailbox)
        known: dict[str, list[Record]] = {"portal": [], "mailbox": []}
        for side, recs in (("portal", p), ("mailbox", m)):
            unpaired = [r for r in recs if self.index.find(self.kind, side, r.id) is None]
            for q in lookups(self.kind, side, unpaired):  # type: ignore[arg-type]
                known[q.side] += await _lookup(self.sides[q.side], self.kind, q.by, q.values)
        result = plan(self.kind, Changes(portal=p, mailbox=m, portal_known=known["portal"],
                                         mailbox_known=known["mailbox"]),
                      self.index, self.options, self.watermark)
        self.index = await _apply(result, self.sides, self.index)
        self.watermark = result.watermark
        return result


async def test_the_planner_converges_syncro_and_the_platform(env: Env) -> None:
    token = "e2e" + uuid.uuid4().hex[:6]
    env.platform.add_user(token, user_id=token)
    portal = env.portal(who=token)
    # The platform's lookups see every user's records: this test's are its own domain.
    tag = uuid.uuid4().hex[:6]
    syncro, account = env.syncro_side()
    home = env.syncro.add_customer(account, business_name="Unfiled", email=None)
    syncro = SyncroConnector(SyncroClient(env.runtime), account.subdomain, "stok",
                             default_customer_id=home["id"])
    pa = env.platform.add("account", owner_id=token, name="Acme", domain=f"acme{tag}.test",
                          phone="1")
    env.platform.add("account", owner_id=token, name=f"Initech {tag}")
    env.syncro.add_customer(account, business_name="ACME Corp", email=f"a@acme{tag}.test",
                            address="1 Road")
    env.syncro.add_customer(account, business_name=f"Globex {tag}")
    env.platform.add("contact", owner_id=token, firstName="Ada", lastName="Lovelace",
                     email=f"ada@{tag}.test", phone="1")
    env.platform.add("contact", owner_id=token, firstName="Grace", lastName="Hopper",
                     email=f"grace@{tag}.test")
    await syncro.create_contact(Contact(id="x", modified_at=0, first_name="Ada",
                                        last_name="Lovelace", email=f"ADA@{tag}.test",
                                        title="Countess"))
    await syncro.create_contact(Contact(id="x", modified_at=0, first_name="Alan",
                                        last_name="Turing", email=f"alan@{tag}.test"))

    for kind in ("account", "contact"):
        runner = Runner(portal, syncro, kind)  # type: ignore[arg-type]
        first = await runner.run()
        assert first.ops, kind
        second = await runner.run()
        assert second.ops == [] and second.empty, (kind, second.ops)
        p_live = [r async for r in all_records(
            lambda c, k=kind: _changed_page(portal, k, c))]
        s_live = [r async for r in all_records(
            lambda c, k=kind: _changed_page(syncro, k, c))]
        assert len(p_live) == len(s_live) == len(runner.index)
        fields = [f.portal for f in runner.options.field_maps(kind)]
        assert sorted(_values(r, fields) for r in p_live) == sorted(
            _values(r, fields) for r in s_live)

    accounts = {a["name"]: a for a in env.platform.live("account")
                if a.get("ownerId") == token}
    assert set(accounts) >= {f"Initech {tag}", f"Globex {tag}", "Unfiled"}
    # Matched by domain (not duplicated), the gap filled from Syncro.
    acme = [a for a in accounts.values() if a.get("domain") == pa["domain"]]
    assert len(acme) == 1 and acme[0]["address"] == "1 Road"
    assert len([c for c in account.customers if "acme" in c["business_name"].casefold()]
               ) == 1
    contacts = {c["email"].casefold(): c for c in env.platform.live("contact")
                if c.get("ownerId") == token}
    assert set(contacts) == {f"ada@{tag}.test", f"grace@{tag}.test", f"alan@{tag}.test"}
    assert contacts[f"ada@{tag}.test"]["title"] == "Countess"
    assert {c["name"] for c in account.contacts} == {"Ada Lovelace", "Alan Turing",
                                                     "Grace Hopper"}


async def _changed_page(side: Connector, kind: Kind, cursor: str | None) -> Any:
    return await (side.my_contacts(None, cursor) if kind == "contact"
                  else side.my_accounts(None, cursor))


def _values(record: Record, fields: list[str]) -> tuple[str, ...]:
    return tuple(str(getattr(record, f) or "").casefold() for f in fields)
