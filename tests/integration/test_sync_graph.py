"""The Graph connector against the loopback Graph over real HTTP: every method it claims,
paging, deletes from delta rounds, each error mapping, 429 waited out; and contacts
converging both ways with the planner and the in-memory portal."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchboard.services.graph_connector import GraphConnector
from switchboard.services.http_client import HttpClient
from switchboard.settings import Settings
from switchboard.sync.connector import Capability, all_records
from switchboard.sync.errors import (
    AuthFailed,
    ConnectorError,
    RateLimited,
    RecordConflict,
    RecordNotFound,
    Unsupported,
)
from switchboard.sync.ops import Create, Delete, Update, created_pair
from switchboard.sync.plan import Changes, plan
from switchboard.sync.records import Account, CalendarEvent, Contact, EmailLog, Task
from tests.fakes.graph import FakeGraph
from tests.unit.sync.memory import Sync

DAY = 86_400_000


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    fake = FakeGraph(page_size=3)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(timeout_s=10)
    await client.start()
    yield client
    await client.close()


def connector(graph: FakeGraph, http: HttpClient, **kw: Any) -> GraphConnector:
    settings = Settings.from_env({"SWITCHBOARD_GRAPH_API_URL": graph.url})
    return GraphConnector.from_settings(settings, http, graph.token, page_size=3, **kw)


async def every(listing: Any) -> list[Any]:
    return [r async for r in all_records(listing)]


async def test_contacts_crud_paging_and_delta_deletes(graph: FakeGraph,
                                                      http: HttpClient) -> None:
    conn = connector(graph, http)
    assert conn.capabilities == {Capability.TASKS, Capability.EVENTS}
    for i in range(7):
        graph.add("contacts", {"givenName": f"P{i}", "surname": "Doe",
                               "emailAddresses": [{"address": f"p{i}@example.com"}]})
    first = await every(lambda c: conn.my_contacts(None, c))
    assert sorted(c.first_name for c in first) == [f"P{i}" for i in range(7)]
    pages = [r for r in graph.requests if r[1].startswith("me/contacts/delta")]
    assert len(pages) == 3  # 7 records, 3 a page
    assert "contacts" in conn.delta_links

    made = await conn.create_contact(Contact(id="x", modified_at=0, first_name="Ada",
                                             last_name="Lovelace", email="ada@example.com",
                                             phone="+1 555", tags=["vip"]))
    assert graph.items["contacts"][made.id]["displayName"] == "Ada Lovelace"
    got = await conn.get_contact(made.id)
    assert (got.first_name, got.email, got.phone, got.tags) == ("Ada", "ada@example.com",
                                                               "+1 555", ["vip"])
    updated = await conn.update_contact(made.id, {"title": "Countess", "phone": None})
    assert (updated.title, updated.phone) == ("Countess", None)
    gone = first[0].id
    await conn.delete_contact(gone)

    since = first[0].modified_at
    changes = await every(lambda c: conn.my_contacts(since, c))
    assert {(c.id, c.deleted) for c in changes} == {(made.id, False), (gone, True)}
    assert await every(lambda c: conn.my_contacts(since, c)) == []  # nothing since

    assert [c.id for c in await conn.contacts_by_email(["ADA@example.com"])] == [made.id]
    assert [c.id for c in await conn.contacts_by_name("Ada Lovelace")] == [made.id]
    by_domain = await conn.contacts_by_email_domain("example.com")
    assert len(by_domain) == 7  # six left of the seven, and Ada
    with pytest.raises(RecordNotFound):
        await conn.get_contact(gone)
    with pytest.raises(Unsupported):
        await conn.update_contact(made.id, {"account_id": "a1"})


async def test_a_fresh_connector_without_delta_links_reads_everything_newer_than_since(
        graph: FakeGraph, http: HttpClient) -> None:
    old = graph.add("contacts", {"givenName": "Old"})
    cut = graph.now_ms()
    new = graph.add("contacts", {"givenName": "New"})
    conn = connector(graph, http)
    assert [c.id for c in await every(lambda c: conn.my_contacts(cut, c))] == [new["id"]]
    assert old["id"] in graph.items["contacts"]


async def test_events_window_time_zones_all_day_and_recurring_left_out(
        graph: FakeGraph, http: HttpClient) -> None:
    conn = connector(graph, http)
    now = int(time.time() * 1000)
    berlin = graph.add("events", {"subject": "Standup", "start": {
        "dateTime": "2030-01-15T09:00:00.0000000", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2030-01-15T09:30:00.0000000", "timeZone": "Europe/Berlin"}})
    graph.add("events", {"subject": "Series", "type": "seriesMaster",
                         "start": {"dateTime": "2030-01-16T09:00:00", "timeZone": "UTC"},
                         "end": {"dateTime": "2030-01-16T10:00:00", "timeZone": "UTC"}})
    graph.add("events", {"subject": "Long ago",
                         "start": {"dateTime": "2001-01-16T09:00:00", "timeZone": "UTC"},
                         "end": {"dateTime": "2001-01-16T10:00:00", "timeZone": "UTC"}})
    conn.future_days = 365 * 10
    events = await every(lambda c: conn.my_events(None, c))
    assert [e.subject for e in events] == ["Standup"]
    assert events[0].start_at == 1_894_694_400_000  # 08:00 UTC
    assert events[0].ical_uid == berlin["iCalUId"]

    day = 1_894_665_600_000  # 2030-01-15T00:00Z
    made = await conn.create_event(CalendarEvent(
        id="x", modified_at=0, subject="Offsite", all_day=True, start_at=day,
        end_at=day + DAY, attendees=["bob@example.com"], private=True, ical_uid="ignored"))
    stored = graph.items["events"][made.id]
    assert stored["isAllDay"] and stored["start"]["dateTime"].startswith("2030-01-15T00:00")
    assert stored["sensitivity"] == "private" and stored["iCalUId"] != "ignored"
    assert (made.start_at, made.end_at, made.all_day) == (day, day + DAY, True)
    moved = await conn.update_event(made.id, {"start_at": day + DAY, "end_at": day + 2 * DAY})
    assert moved.start_at == day + DAY
    await conn.delete_event(berlin["id"])
    changes = await every(lambda c: conn.my_events(now - DAY, c))
    assert {(e.id, e.deleted) for e in changes} == {(made.id, False), (berlin["id"], True)}
    assert (await conn.get_event(made.id)).subject == "Offsite"


async def test_tasks_on_the_default_list_with_deletes(graph: FakeGraph,
                                                      http: HttpClient) -> None:
    conn = connector(graph, http)
    graph.add("tasks", {"title": "Elsewhere"}, list_id="AAMkTasksOther")
    t = graph.add("tasks", {"title": "Call Ada", "importance": "high",
                            "dueDateTime": {"dateTime": "2030-01-15T00:00:00.0000000",
                                            "timeZone": "UTC"}})
    tasks = await every(lambda c: conn.my_tasks(None, c))
    assert [(x.title, x.priority, x.due_at) for x in tasks] == [
        ("Call Ada", "high", 1_894_665_600_000)]
    made = await conn.create_task(Task(id="x", modified_at=0, title="Send quote",
                                       notes="by Friday"))
    assert graph.items["tasks:AAMkTasksDefault"][made.id]["body"]["content"] == "by Friday"
    done = await conn.update_task(made.id, {"status": "done"})
    assert done.status == "done"
    assert graph.items["tasks:AAMkTasksDefault"][made.id]["status"] == "completed"
    await conn.delete_task(t["id"])
    changes = await every(lambda c: conn.my_tasks(tasks[0].modified_at, c))
    assert {(x.id, x.deleted) for x in changes} == {(made.id, False), (t["id"], True)}
    assert (await conn.get_task(made.id)).title == "Send quote"
    other = connector(graph, http, task_list_id="AAMkTasksOther")
    assert [x.title for x in await every(lambda c: other.my_tasks(None, c))] == ["Elsewhere"]


async def test_mail_is_read_since_a_time_drafts_left_out(graph: FakeGraph,
                                                         http: HttpClient) -> None:
    conn = connector(graph, http)

    def mail(n: int, sender: str, **kw: Any) -> None:
        graph.add("messages", {
            "subject": f"m{n}", "internetMessageId": f"<m{n}@example.com>",
            "receivedDateTime": f"2030-01-0{n}T10:00:00Z",
            "sentDateTime": f"2030-01-0{n}T09:59:00Z",
            "body": {"contentType": "text", "content": f"body {n}"},
            "from": {"emailAddress": {"address": sender}},
            "toRecipients": [{"emailAddress": {"address": "x@example.com"}}], **kw})

    mail(1, "ada@example.com")
    mail(2, "ada@example.com")
    mail(3, "megan@contoso.com")
    mail(4, "ada@example.com", isDraft=True)
    for n in range(5, 9):
        mail(n, "bob@example.com")
    since = 1_893_578_400_000  # 2030-01-02T10:00Z
    got = await every(lambda c: conn.my_emails(since, c))
    assert [m.subject for m in got] == ["m2", "m3", "m5", "m6", "m7", "m8"]
    assert [m.direction for m in got[:2]] == ["in", "out"]
    assert got[0].message_id == "<m2@example.com>" and got[0].to == ["x@example.com"]
    assert got[0].sent_at == since - 60_000 and got[0].body == "body 2"


async def test_what_a_mailbox_does_not_have_is_unsupported(graph: FakeGraph,
                                                           http: HttpClient) -> None:
    conn = connector(graph, http)
    me = await conn.get_me()
    assert (me.user_id, me.email, me.org_id) == (graph.me["id"], "megan@contoso.com",
                                                 "contoso.onmicrosoft.com")
    calls = [conn.users_by_email(["a@b.c"]), conn.create_account(Account(id="a",
             modified_at=0)), conn.get_account("a"), conn.update_account("a", {}),
             conn.delete_account("a"), conn.my_accounts(), conn.accounts_by_name("A"),
             conn.accounts_by_domain("a.com"), conn.opportunities_for_contacts(["c"]),
             conn.create_email(EmailLog(id="e", modified_at=0)), conn.update_email("e", {})]
    for call in calls:
        with pytest.raises(Unsupported):
            await call


async def test_errors_map_to_the_connector_errors(graph: FakeGraph, http: HttpClient) -> None:
    with pytest.raises(AuthFailed):
        await connector(graph, http).graph.call("GET", "/me", headers={
            "authorization": "Bearer wrong"})
    bad = GraphConnector(http, "expired", base_url=graph.url)
    with pytest.raises(AuthFailed):
        await bad.get_me()
    conn = connector(graph, http)
    with pytest.raises(RecordNotFound) as nf:
        await conn.update_contact("nope", {"title": "x"})
    assert nf.value.record_id == "nope"
    c = graph.add("contacts", {"givenName": "Ada"})
    await conn.get_contact(c["id"])  # remembers the etag
    graph.edit("contacts", c["id"], jobTitle="changed in Outlook")
    with pytest.raises(RecordConflict):
        await conn.update_contact(c["id"], {"title": "from the portal"})
    with pytest.raises(RecordConflict):
        await conn.delete_contact(c["id"])
    assert graph.requests[-1][3]["if-match"] == graph.requests[-2][3]["if-match"]
    await conn.get_contact(c["id"])  # the new etag: now it goes through
    assert (await conn.update_contact(c["id"], {"title": "ok"})).title == "ok"
    with pytest.raises(ConnectorError, match="outside"):  # the token stays on Graph's host
        await conn.graph.call("GET", "https://elsewhere.example/v1.0/me")


async def test_429_is_waited_out_and_a_long_one_is_rate_limited(graph: FakeGraph,
                                                                http: HttpClient) -> None:
    conn = connector(graph, http)
    graph.throttle(2, "1")
    started = time.monotonic()
    assert (await conn.get_me()).email == "megan@contoso.com"
    assert time.monotonic() - started >= 2.0
    assert [r[1] for r in graph.requests] == ["me", "me", "me"]
    graph.throttle(1, "120")
    with pytest.raises(RateLimited) as rl:
        await conn.get_me()
    assert rl.value.retry_after == 120


async def test_contacts_converge_both_ways_through_the_connector(
        graph: FakeGraph, http: HttpClient) -> None:
    """The planner between the in-memory portal and the Graph fake, a tiny runner
    applying each op through the connector: both sides end equal, a rerun plans nothing."""
    conn = connector(graph, http)
    s = Sync("contact")
    s.portal.create("contact", first_name="Ada", email="ada@example.com", phone="1")
    s.portal.create("contact", first_name="Bob", email="bob@example.com")
    graph.add("contacts", {"givenName": "Ada", "emailAddresses": [
        {"address": "ADA@example.com"}], "jobTitle": "Countess"})
    graph.add("contacts", {"givenName": "Cy", "surname": "Young",
                           "emailAddresses": [{"address": "cy@example.com"}]})

    async def run() -> Any:
        since = s.watermark.mailbox or None
        mailbox = await every(lambda c: conn.my_contacts(since, c))
        portal = s.portal.changed_since("contact", s.watermark.portal)
        result = plan("contact", Changes(portal=portal, mailbox=mailbox), s.index,
                      s.options, s.watermark)
        for op in result.ops:
            if op.side == "portal":
                if isinstance(op, Create):
                    rec = s.portal.create("contact", **op.values)
                    s.index = s.index.updated([created_pair(op, rec.id, rec.modified_at)])
                elif isinstance(op, Update):
                    s.portal.update(op.id, **op.values)
                elif isinstance(op, Delete):
                    s.portal.delete(op.id)
            elif isinstance(op, Create):
                made = await conn.create_contact(Contact(id="new", modified_at=0,
                                                         **op.values))  # type: ignore[arg-type]
                s.index = s.index.updated([created_pair(op, made.id, made.modified_at)])
            elif isinstance(op, Update):
                await conn.update_contact(op.id, op.values)
            elif isinstance(op, Delete):
                await conn.delete_contact(op.id)
        s.index = s.index.updated(result.pairs, result.unpaired)
        s.watermark = result.watermark
        return result

    first = await run()
    assert [m.by for m in first.matched] == ["email"]
    live = {c["emailAddresses"][0]["address"].casefold(): c for c in graph.live("contacts")}
    assert set(live) == {"ada@example.com", "bob@example.com", "cy@example.com"}
    portal = {r.email.casefold(): r for r in s.portal.live() if isinstance(r, Contact)
              and r.email}
    assert set(portal) == set(live)
    assert portal["ada@example.com"].title == "Countess"
    assert live["ada@example.com"]["businessPhones"] == ["1"]
    assert portal["cy@example.com"].last_name == "Young"
    second = await run()
    assert second.ops == [] and second.empty

    # An edit in Outlook and a delete in the portal travel; then quiet again.
    graph.edit("contacts", live["cy@example.com"]["id"], jobTitle="Pitcher")
    s.portal.delete(portal["bob@example.com"].id)
    third = await run()
    assert {type(op).__name__ for op in third.ops} == {"Update", "Delete"}
    assert portal["cy@example.com"].id in {op.id for op in third.ops}
    assert {c["emailAddresses"][0]["address"] for c in graph.live("contacts")} == {
        "ADA@example.com", "cy@example.com"}
    assert (await run()).ops == []
