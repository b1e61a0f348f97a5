"""`switchboard hubs|integrations list|show` and `deliveries … --json` against a real hub:
readable tables, the API's JSON with --json, names or ids, secrets masked, no token."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from switchboard.kafka import DELIVERIES, make_producer
from switchboard.model import Activity, Delivery, Sender
from tests.conftest import RunningHub, make_settings
from tests.fakes.twilio import FakeTwilio

EXE = str(Path(sys.executable).parent / "switchboard")


@pytest.fixture
async def world(broker: Any) -> AsyncIterator[tuple[RunningHub, FakeTwilio]]:
    twilio = await FakeTwilio().start()
    hub = await RunningHub(make_settings(broker, twilio_api_url=twilio.url), ["api"]).start()
    try:
        yield hub, twilio
    finally:
        await hub.stop()
        await twilio.stop()


async def sb(token: str, hub: RunningHub | None, *args: str, **env_extra: str
             ) -> tuple[int, str, str]:
    """The CLI in a subprocess (the hub serves on this event loop): code, stdout, stderr.
    No hub: no --url (the command finds it)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SWITCHBOARD_TOKEN", "SWITCHBOARD_DATA_DIR")}
    env.update(env_extra)
    url = ["--url", hub.base_url] if hub is not None else []
    proc = await asyncio.create_subprocess_exec(
        EXE, *args, *url, "--token", token, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_hubs_and_integrations_as_tables_and_json(
        world: tuple[RunningHub, FakeTwilio], tmp_path: Path) -> None:
    hub, twilio = world
    admin = hub.settings.admin_token
    acme, acme_auth = await hub.create_hub("Acme")
    other, _ = await hub.create_hub("other")
    token = acme_auth["Authorization"][7:]
    desk = await hub.create_integration(
        acme, acme_auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/desk"})
    sid, auth_token = twilio.add_account()
    number = twilio.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
    shared = "twilio-shared-" + uuid.uuid4().hex
    sms = await hub.create_integration(
        acme, acme_auth, channelId="TwilioSMS", name="sms",
        configuration={"accountSid": sid, "authToken": auth_token, "numberSid": number.sid,
                       "sharedKeySecret": shared})
    never = [token, admin, auth_token, shared, desk["configuration"]["privateSigningKey"]]

    code, out, err = await sb(admin, hub, "hubs", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["HUB", "ID", "NAME", "INTEGRATIONS", "CREATED", "(UTC)",
                                "TOKEN", "ISSUED", "(UTC)"]
    assert [line.split()[:3] for line in lines[1:]] == [[acme, "Acme", "2"], [other, "other", "0"]]
    # No --url: the hub of the `switchboard dev` whose dev.json is in the data dir.
    (tmp_path / "dev.json").write_text(json.dumps({
        "pid": os.getpid(), "url": hub.base_url, "broker": hub.settings.broker_kind,
        "bootstrap": hub.settings.kafka_bootstrap_servers, "brokerPid": None}))
    code, found, err = await sb(admin, None, "hubs", "list", SWITCHBOARD_DATA_DIR=str(tmp_path))
    assert (code, found) == (0, out), err
    code, out, _ = await sb(admin, hub, "hubs", "list", "--json")
    assert code == 0 and {h["hubId"] for h in json.loads(out)} == {acme, other}
    # A hub token sees its own hub only.
    code, out, _ = await sb(token, hub, "hubs", "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [acme]

    code, out, err = await sb(token, hub, "hubs", "show", "ACME")  # a name, any case
    assert code == 0, err
    assert f"hub:          {acme}" in out and "name:         Acme" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(
        (desk["integrationId"], sms["integrationId"]))]
    assert rows == [[desk["integrationId"], "desk", "Direct", "Agent", "active",
                     "http://127.0.0.1:9/desk"],
                    [sms["integrationId"], "sms", "TwilioSMS", "Customer", "active", "-"]]
    code, out, _ = await sb(token, hub, "hubs", "show", acme, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["hubId"] == acme
    assert [i["name"] for i in shown["integrations"]] == ["desk", "sms"]

    code, out, _ = await sb(token, hub, "integrations", "list", "--hub", "acme")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["INTEGRATION", "ID", "NAME"]
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["desk", "sms"]
    code, same, _ = await sb(token, hub, "integrations", "list")  # a hub token: its hub
    assert (code, same) == (0, out)
    code, _, err = await sb(admin, hub, "integrations", "list")
    assert code == 1 and "this token sees 2 hubs: pass --hub" in err
    code, out, _ = await sb(token, hub, "integrations", "list", "--hub", acme, "--json")
    assert code == 0 and [i["integrationId"] for i in json.loads(out)] == [
        desk["integrationId"], sms["integrationId"]]

    code, out, err = await sb(token, hub, "integrations", "show", sms["integrationId"])
    assert code == 0, err
    assert "channel:      TwilioSMS" in out
    config_lines = {k: v.strip() for k, v in (
        line.strip().split(": ", 1) for line in out.splitlines() if line.startswith("  "))}
    assert config_lines["authToken"] == config_lines["sharedKeySecret"] == "********"
    assert config_lines["accountSid"] == sid
    code, out_json, _ = await sb(token, hub, "integrations", "show", sms["integrationId"],
                                 "--json")
    config = json.loads(out_json)["configuration"]
    assert (config["authToken"], config["sharedKeySecret"]) == ("********", "********")
    assert config["accountSid"] == sid
    for text in (out, out_json):
        assert not [s for s in never if s in text]

    # Names that match nothing, or someone else's hub: a clear line, exit 1.
    code, _, err = await sb(token, hub, "hubs", "show", "other")
    assert code == 1 and "no hub with id or name 'other' that this token can see" in err
    code, _, err = await sb(token, hub, "integrations", "show", str(uuid.uuid4()))
    assert code == 1 and err.startswith("error 404")


def _read_pty(fd: int) -> bytes:
    """What a terminal got, b"" once it is all read (Linux: EIO when the writer is gone)."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


async def test_deliveries_json_and_replay_progress(world: tuple[RunningHub, FakeTwilio]) -> None:
    hub, _ = world
    hub_id, auth = await hub.create_hub("acme")
    token = auth["Authorization"][7:]
    x = (await hub.create_integration(
        hub_id, auth, channelId="Direct", name="x",
        configuration={"integrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/x"})
    )["integrationId"]
    producer = make_producer(hub.settings)
    await producer.start()
    t0 = int(time.time() * 1000) - 60_000
    try:
        for n in range(3):
            activity = Activity(activity_id=f"act-{n}", hub_id=hub_id, integration_id="src",
                                channel_id="Direct", type="message:customer",
                                conversation_id="c1", sender=Sender(id="u1"), timestamp=t0)
            d = Delivery(delivery_id=f"msg_{n}", hub_id=hub_id, destination_id=x,
                         conversation_id="c1", activity=activity, created_at=t0)
            await producer.send_and_wait(hub.settings.topic(DELIVERIES),
                                         msgspec.json.encode(d), key=x.encode(),
                                         timestamp_ms=t0 + n)
    finally:
        await producer.stop()

    code, out, err = await sb(token, hub, "deliveries", "replay", x, "--since", str(t0),
                              "--until", str(t0 + 10))
    assert code == 0, err
    assert out.splitlines()[0].startswith("job ")
    # Not a terminal: one progress line per change on stderr, the last one says done.
    progress = err.splitlines()
    assert progress[0].startswith("replay: deliveries ")
    assert progress[-1] == "replay: deliveries 3/3 (100 %) done", err

    # On a terminal: one line, rewritten in place, ended once the job is.
    leader, follower = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            EXE, "deliveries", "replay", x, "--since", str(t0), "--until", str(t0 + 10),
            "--url", hub.base_url, "--token", token, stdout=asyncio.subprocess.PIPE,
            stderr=follower)
        out_bytes, _ = await asyncio.wait_for(proc.communicate(), 60)
        os.close(follower)
        follower = -1
        shown = b""
        while chunk := await asyncio.to_thread(_read_pty, leader):
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0 and out_bytes.decode().startswith("job "), shown
    text = shown.decode()
    assert text.startswith("\r\x1b[Kreplay: deliveries ") and "\n" not in text[:-2], text
    assert text.endswith("\r\x1b[Kreplay: deliveries 3/3 (100 %) done\r\n"), text

    code, out, err = await sb(token, hub, "deliveries", "replay", x, "--since", str(t0),
                              "--until", str(t0 + 10), "--json")
    job = json.loads(out)
    assert code == 0 and (job["state"], job["done"], job["total"]) == ("done", 3, 3), err

    code, out, err = await sb(token, hub, "deliveries", "list", x, "--json")
    assert code == 0, err
    page = json.loads(out)
    assert set(page) >= {"items", "nextCursor"}
    code, out, err = await sb(token, hub, "deliveries", "show", "msg_nope", "--json")
    assert code == 1 and "404" in err
