"""Module filters and seed 000's flat syncSettings on a real broker: settings over real
HTTP, runs on the `sync` worker group, both sides `testfile` connectors."""

from __future__ import annotations

from pathlib import Path

from switchboard.services.sync_testfile import TestFileSide
from switchboard.sync.records import CalendarEvent, Contact
from tests.conftest import RunningHub
from tests.integration.test_sync_runs import body, run_and_wait, sides, sync_hub

__all__ = ["sync_hub"]  # the fixture, shared with test_sync_runs


def names(side: TestFileSide) -> list[str]:
    return sorted(r.first_name or "" for r in side.live("contact") if isinstance(r, Contact))


def subjects(side: TestFileSide) -> list[str]:
    return sorted(r.subject or "" for r in side.live("event")
                  if isinstance(r, CalendarEvent))


async def test_tags_and_private_events_filter_what_a_run_syncs(
        sync_hub: RunningHub, tmp_path: Path) -> None:
    c = sync_hub.client
    hub_id, auth = await sync_hub.create_hub("a")
    portal, mailbox = sides(tmp_path)
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                     json=body(portal, mailbox, review=False,
                               modules=("contacts", "calendar")), headers=auth)
    assert r.status_code == 201, r.text
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"

    # The seed's flat settings: read, refused, set.
    r = await c.get(url + "/syncSettings", headers=auth)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["syncContacts"], got["contSyncDirection"], got["contMailboxSyncAll"],
            got["contMailboxSyncTags"], got["calSyncPrivate"], got["syncTasks"]) == (
        True, "BOTH", True, "", True, False)
    r = await c.put(url + "/syncSettings", json={"contMailboxTags": "x"}, headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "contMailboxTags", r.text
    r = await c.put(url + "/syncSettings", json={"calPastWeeks": "two"}, headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "calPastWeeks", r.text
    r = await c.put(url + "/syncSettings", content=b"[1", headers={
        **auth, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    r = await c.put(url + "/syncSettings", headers=auth, json={
        "contMailboxSyncAll": False, "contMailboxSyncTags": "CRM, Clients",
        "calSyncPrivate": False})
    assert r.status_code == 200, r.text
    assert r.json() == {**got, "contMailboxSyncAll": False,
                        "contMailboxSyncTags": "CRM,Clients", "calSyncPrivate": False}
    assert (await c.get(url + "/syncSettings", headers=auth)).json() == r.json()
    profile = (await c.get(url, headers=auth)).json()
    options = profile["modules"]["contacts"]["options"]
    assert options["mailboxFilter"] == {"syncAll": False, "syncTags": ["CRM", "Clients"]}
    assert profile["modules"]["contacts"]["needReview"] is False

    ada = mailbox.create("contact", first_name="Ada", email="ada@example.test", tags=["crm"])
    mailbox.create("contact", first_name="Bob", email="bob@example.test", tags=["family"])
    mailbox.create("contact", first_name="Cy", email="cy@example.test")
    portal.create("contact", first_name="Pat", email="pat@example.test")
    mailbox.create("event", subject="standup", start_at=1_000, end_at=2_000, ical_uid="u1")
    mailbox.create("event", subject="dentist", start_at=3_000, end_at=4_000, private=True,
                   ical_uid="u2")
    portal.create("event", subject="board", start_at=5_000, end_at=6_000, ical_uid="u3")
    portal.create("event", subject="doctor", start_at=7_000, end_at=8_000, private=True,
                  ical_uid="u4")

    done = await run_and_wait(c, url, auth, initial="true")
    assert done["status"].get("errMessage") is None, done["status"]
    assert names(portal) == ["Ada", "Pat"]
    # The portal syncs all: its contact reaches the mailbox.
    assert names(mailbox) == ["Ada", "Bob", "Cy", "Pat"]
    assert subjects(portal) == ["board", "doctor", "standup"]
    assert subjects(mailbox) == ["board", "dentist", "standup"]

    # Ada loses her tag and changes: she left the sync (the portal's copy stays as it
    # was, not deleted); a later tagged contact arrives, the untagged ones still do not.
    mailbox.update("contact", ada.id, tags=["family"], first_name="Ada L")
    mailbox.create("contact", first_name="Dee", email="dee@example.test",
                   tags=["Clients"])
    done = await run_and_wait(c, url, auth)
    assert done["status"].get("errMessage") is None, done["status"]
    assert names(portal) == ["Ada", "Dee", "Pat"]
    assert done["status"]["modules"]["contacts"]["deleted"] == 0
