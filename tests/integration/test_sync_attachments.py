"""E-mail attachments on a real broker: with ``emailFetchAttachments`` (set through seed
000's syncSettings) an Outlook message logged to the reference platform carries its file
attachments with their bytes intact — one larger than the HTTP client's default read
cap too — while one past SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES and an attached Outlook
item are skipped, never read, and counted in the module's counts; inline pictures are
left out; a message without attachments is logged as before."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.graph import FakeGraph
from tests.integration.graph_platform import GraphPlatform as Setup
from tests.integration.graph_platform import create_profile, graph_platform
from tests.integration.test_sync_runs import run_and_wait

CAP = 2 * 1024 * 1024


@pytest.fixture
async def setup(broker: Any) -> AsyncIterator[Setup]:
    async with graph_platform(broker, sync_attachment_max_bytes=CAP) as s:
        yield s


def message(graph: FakeGraph, subject: str, sender: str, at_ms: int) -> str:
    at = datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    made = graph.add("messages", {
        "subject": subject, "internetMessageId": f"<{subject}.{at_ms}@x.test>",
        "receivedDateTime": at, "sentDateTime": at,
        "body": {"contentType": "text", "content": subject},
        "from": {"emailAddress": {"address": sender}},
        "toRecipients": [{"emailAddress": {"address": graph.me["mail"]}}]})
    return str(made["id"])


async def test_attachments_are_logged_with_their_bytes_within_the_cap(setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth = await s.hub.create_hub("attach")
    s.platform.add_user("ptok", email="pat@platform.test")
    ada = s.platform.add("contact", firstName="Ada", lastName="Lovelace",
                         email="ada@example.test")
    now = int(time.time() * 1000)
    with_files = message(s.graph, "report", "ada@example.test", now - 60_000)
    message(s.graph, "plain", "ada@example.test", now - 50_000)
    notes = "Grüße — notes\n".encode()
    scan = os.urandom(1_500_000)  # past the HTTP client's 1 MiB default read cap
    files = s.graph.attachments
    files.attach(with_files, "notes.txt", notes, "text/plain")
    files.attach(with_files, "logo.png", b"\x89PNG tiny", "image/png", inline=True)
    video = files.attach(with_files, "video.mp4", os.urandom(CAP + 1), "video/mp4")
    item = files.attach_item(with_files, "Fwd: minutes")
    files.attach(with_files, "scan.pdf", scan, "application/pdf")

    url = await create_profile(s, hub_id, auth, "email", "TO_PORTAL", ["email"])
    r = await c.put(url + "/syncSettings", headers=auth,
                    json={"emailFetchAttachments": True})
    assert r.status_code == 200 and r.json()["emailFetchAttachments"] is True, r.text

    done = await run_and_wait(c, url, auth, initial=True, timeout=180.0)
    status = done["status"]
    assert status.get("errMessage") is None, status
    assert status["modules"]["email"]["created"] == 2, status
    # The video (past the cap) and the Outlook item (no bytes) skipped; the logo left out.
    assert status["modules"]["email"]["attachments"] == {"copied": 2, "skipped": 2}

    logged = {e["subject"]: e for e in s.platform.live("email")}
    assert set(logged) == {"report", "plain"}
    assert logged["report"]["contactIds"] == [ada["id"]]
    got = {a["name"]: a for a in logged["report"]["attachments"]}
    assert set(got) == {"notes.txt", "scan.pdf"}
    assert base64.b64decode(got["notes.txt"]["contentBytes"]) == notes
    assert got["notes.txt"]["contentType"] == "text/plain"
    assert got["notes.txt"]["size"] == len(notes)
    assert base64.b64decode(got["scan.pdf"]["contentBytes"]) == scan
    assert got["scan.pdf"]["size"] == len(scan)
    assert "attachments" not in logged["plain"] or logged["plain"]["attachments"] == []
    # What was skipped was never loaded: only the two copied were read.
    assert video["id"] not in files.reads and item["id"] not in files.reads
    assert len(files.reads) == 2

    # A second run logs nothing again (and reads no attachment again).
    again = await run_and_wait(c, url, auth, timeout=180.0)
    assert again["status"]["modules"]["email"]["created"] == 0, again["status"]
    assert len(files.reads) == 2 and len(s.platform.live("email")) == 2
