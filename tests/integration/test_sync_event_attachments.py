"""Calendar attachments (``calFetchAttachments``) on a real broker: an Outlook event's
file attachment reaches the reference platform with its bytes intact when the event is
created there; one past SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES is skipped, never read,
and counted; a re-run reads no attachment again and writes nothing; an update of the
event sends its files again; with the option off an event goes without them."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.graph import FakeGraph
from tests.integration.graph_platform import GraphPlatform as Setup
from tests.integration.graph_platform import create_profile, graph_platform, writes
from tests.integration.test_sync_runs import run_and_wait

CAP = 256 * 1024


@pytest.fixture
async def setup(broker: Any) -> AsyncIterator[Setup]:
    async with graph_platform(broker, sync_attachment_max_bytes=CAP) as s:
        yield s


def event(graph: FakeGraph, subject: str, days: int) -> str:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    fmt = "%Y-%m-%dT%H:%M:%S"
    made = graph.add("events", {
        "subject": subject, "start": {"dateTime": at.strftime(fmt), "timeZone": "UTC"},
        "end": {"dateTime": (at + timedelta(hours=1)).strftime(fmt), "timeZone": "UTC"}})
    return str(made["id"])


async def test_event_files_reach_the_platform_within_the_cap(setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth = await s.hub.create_hub("eventfiles")
    s.platform.add_user("ptok", email="pat@platform.test")
    review = event(s.graph, "Review", 2)
    agenda = os.urandom(100_000) + "Grüße".encode()
    files = s.graph.attachments
    files.attach(review, "agenda.bin", agenda, "application/octet-stream")
    big = files.attach(review, "deck.pptx", os.urandom(CAP + 1), "application/x-ppt")
    event(s.graph, "Plain", 3)

    url = await create_profile(s, hub_id, auth, "calendar", "BOTH", ["events"])
    r = await c.put(url + "/syncSettings", headers=auth, json={"calFetchAttachments": True})
    assert r.status_code == 200 and r.json()["calFetchAttachments"] is True, r.text

    done = await run_and_wait(c, url, auth, initial=True, timeout=180.0)
    status = done["status"]
    assert status.get("errMessage") is None, status
    assert status["modules"]["calendar"]["created"] == 2, status
    assert status["modules"]["calendar"]["attachments"] == {"copied": 1, "skipped": 1}
    events = {e["subject"]: e for e in s.platform.live("event")}
    assert set(events) == {"Review", "Plain"}
    [got] = events["Review"]["attachments"]
    assert got["name"] == "agenda.bin" and got["size"] == len(agenda)
    assert base64.b64decode(got["contentBytes"]) == agenda
    assert not events["Plain"].get("attachments")
    assert big["id"] not in files.reads and len(files.reads) == 1

    # A re-run reading everything again reads no attachment and writes nothing.
    before = len(writes(s.platform))
    done = await run_and_wait(c, url, auth, initial=True, timeout=180.0)
    assert done["status"]["modules"]["calendar"]["created"] == 0, done["status"]
    assert done["status"]["modules"]["calendar"]["updated"] == 0, done["status"]
    assert len(files.reads) == 1 and len(writes(s.platform)) == before

    # An update in Outlook sends the event's files again (they replace the platform's).
    s.graph.edit("events", review, subject="Review (moved)")
    done = await run_and_wait(c, url, auth, timeout=180.0)
    assert done["status"]["modules"]["calendar"]["updated"] == 1, done["status"]
    events = {e["subject"]: e for e in s.platform.live("event")}
    [got] = events["Review (moved)"]["attachments"]
    assert base64.b64decode(got["contentBytes"]) == agenda and len(files.reads) == 2

    # Off: a new event goes without its files, none read, no counts.
    r = await c.put(url + "/syncSettings", headers=auth, json={"calFetchAttachments": False})
    assert r.status_code == 200, r.text
    later = event(s.graph, "Later", 4)
    files.attach(later, "notes.txt", b"notes", "text/plain")
    done = await run_and_wait(c, url, auth, timeout=180.0)
    assert "attachments" not in done["status"]["modules"]["calendar"], done["status"]
    events = {e["subject"]: e for e in s.platform.live("event")}
    assert not events["Later"].get("attachments") and len(files.reads) == 2
