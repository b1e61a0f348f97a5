"""`switchboard doctor` against a real hub on the test broker: healthy is all ok, a wrong
secret key is a FAIL naming the key, an unreachable broker a FAIL within the bound."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiokafka.admin import NewTopic

from switchboard.kafka import make_admin
from switchboard.keys import generate_secret_key_b64, key_id
from tests.conftest import RunningHub, make_settings
from tests.integration.test_sync_runs import body as sync_body
from tests.integration.test_sync_runs import sides as sync_sides

EXE = str(Path(sys.executable).parent / "switchboard")


async def doctor(hub: RunningHub, *args: str, **env: str) -> tuple[int, list[list[str]], str]:
    """Exit code, each line as (status, check, text), and stderr."""
    s = hub.settings
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("SWITCHBOARD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    full.update({"SWITCHBOARD_TOPIC_PREFIX": s.topic_prefix, "SWITCHBOARD_SECRET_KEY":
                 s.secret_key, "SWITCHBOARD_ADMIN_TOKEN": s.admin_token,
                 "SWITCHBOARD_BROKER_KIND": s.broker_kind,
                 "SWITCHBOARD_PARTITIONS": str(s.partitions)})
    full.update(env)
    proc = await asyncio.create_subprocess_exec(
        EXE, "doctor", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=full)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    rows = [[line[:5].strip(), line[6:17].strip(), line[18:]] for line in out.decode().splitlines()]
    return proc.returncode or 0, rows, err.decode()


async def _populate(hub: RunningHub) -> None:
    hub_id, auth = await hub.create_hub("acme")
    for name in ("desk", "site"):
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name=name,
            configuration={"integrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/x"})


async def test_a_healthy_hub_is_all_ok(hub: RunningHub) -> None:
    await _populate(hub)
    code, rows, err = await doctor(hub, "--bootstrap", hub.settings.kafka_bootstrap_servers,
                                   "--url", hub.base_url)
    assert code == 0, (rows, err)
    assert [(r[0], r[1]) for r in rows] == [
        ("ok", "config"), ("ok", "broker"), ("ok", "topics"), ("ok", "clock"),
        ("ok", "secret key")], rows
    assert hub.settings.kafka_bootstrap_servers in rows[1][2]
    assert "opens all 2 sealed values" in rows[4][2]
    assert key_id(base64.b64decode(hub.settings.secret_key)) in rows[4][2]
    assert hub.settings.secret_key not in str(rows) + err


async def test_a_wrong_secret_key_fails_naming_the_key(hub: RunningHub) -> None:
    await _populate(hub)
    wrong = generate_secret_key_b64()
    code, rows, _ = await doctor(hub, "--bootstrap", hub.settings.kafka_bootstrap_servers,
                                 "--url", hub.base_url, SWITCHBOARD_SECRET_KEY=wrong)
    assert code == 1
    failing = [r for r in rows if r[0] == "FAIL"]
    assert [r[1] for r in failing] == ["secret key"], rows
    text = failing[0][2]
    assert "2 of 2 sealed values do not open" in text
    assert f"with key {key_id(base64.b64decode(wrong))} from SWITCHBOARD_SECRET_KEY" in text
    # The key that sealed them, by its id (never the key itself), and the ways out.
    assert key_id(base64.b64decode(hub.settings.secret_key)) in text
    assert "switchboard reseal" in text
    assert wrong not in text and hub.settings.secret_key not in text
    assert [r[0] for r in rows if r[1] != "secret key"] == ["ok"] * 4


async def test_an_unreachable_broker_fails_within_the_bound(hub: RunningHub, broker: Any
                                                            ) -> None:
    # A port that is bound but not listening: nothing else can take it meanwhile.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    try:
        address = f"127.0.0.1:{held.getsockname()[1]}"
        started = time.monotonic()
        code, rows, err = await doctor(hub, "--bootstrap", address, "--timeout", "2")
        took = time.monotonic() - started
    finally:
        held.close()
    assert code == 1, (rows, err)
    assert ("FAIL", "broker") in [(r[0], r[1]) for r in rows], rows
    line = next(r[2] for r in rows if r[1] == "broker")
    assert f"cannot reach {address} (from --bootstrap)" in line
    assert "KAFKA_BOOTSTRAP_SERVERS" in line
    assert took < 30, took
    # Nothing that needs the broker is claimed to be fine.
    assert not [r for r in rows if r[1] in ("topics", "secret key")], rows


async def test_topics_that_are_not_what_the_hub_creates(broker: Any) -> None:
    """A registry with 2 partitions (not compacted, on Kafka) and parked lanes that do not
    match `deliveries`: each a FAIL naming the topic; the rest missing is a warn."""
    settings = make_settings(broker)
    p = settings.topic_prefix
    admin = make_admin(settings)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(p + "registry", 2, 1, topic_configs={"cleanup.policy": "delete"}),
            NewTopic(p + "deliveries", 4, 1), NewTopic(p + "deliveries.parked", 2, 1)])
    finally:
        await admin.close()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHBOARD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(SWITCHBOARD_TOPIC_PREFIX=p, SWITCHBOARD_SECRET_KEY=settings.secret_key,
               SWITCHBOARD_BROKER_KIND=settings.broker_kind, SWITCHBOARD_PARTITIONS="4")
    proc = await asyncio.create_subprocess_exec(
        EXE, "doctor", "--bootstrap", settings.kafka_bootstrap_servers, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 1, err
    topics = [(c["status"], c["text"]) for c in json.loads(out) if c["check"] == "topics"]
    assert topics[0][0] == "warn" and "missing" in topics[0][1]
    fails = [text for status, text in topics if status == "FAIL"]
    assert any(t.startswith(f"{p}registry has 2 partitions, a table needs exactly 1")
               for t in fails), fails
    assert any("same deliverer" in t and f"{p}deliveries.parked 2" in t for t in fails), fails
    warns = [text for status, text in topics if status == "warn"]
    assert any(t.startswith(f"{p}deliveries.parked has 2 partitions") for t in warns), topics
    if settings.broker_kind == "kafka":
        assert any(f"topic {p}registry: cleanup.policy delete, needs compact" in t
                   for t in fails), fails


async def test_a_tansu_dev_found_through_its_dev_json(hub: RunningHub, tmp_path: Path) -> None:
    """`switchboard dev` without SWITCHBOARD_SECRET_KEY: its key is in its memory only, so
    the key is not checked (a warn), and the rest is found through dev.json."""
    (tmp_path / "dev.json").write_text(json.dumps({
        "pid": os.getpid(), "url": hub.base_url, "broker": hub.settings.broker_kind,
        "bootstrap": hub.settings.kafka_bootstrap_servers, "brokerPid": None}))
    code, rows, err = await doctor(hub, "--data-dir", str(tmp_path), SWITCHBOARD_SECRET_KEY="")
    assert code == 0, (rows, err)
    assert [(r[0], r[1]) for r in rows] == [
        ("ok", "config"), ("ok", "broker"), ("ok", "topics"), ("ok", "clock"),
        ("warn", "secret key")], rows
    assert f"(from {tmp_path / 'dev.json'})" in rows[1][2]
    assert hub.base_url in rows[3][2]


async def test_a_skewed_clock_is_a_warn_then_a_fail(broker: Any) -> None:
    """A hub whose clock is 10 s ahead is a warn; 400 s (past the 300 s signatures are
    accepted within) a FAIL. The "hub" is a loopback HTTP server with that clock."""
    ahead = [0.0]  # seconds this "hub" is ahead of us

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        date = formatdate(time.time() + ahead[0], usegmt=True)
        writer.write(f"HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = make_settings(broker)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHBOARD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(SWITCHBOARD_TOPIC_PREFIX=settings.topic_prefix,
               SWITCHBOARD_SECRET_KEY=settings.secret_key,
               SWITCHBOARD_BROKER_KIND=settings.broker_kind)
    try:
        found = []
        for ahead[0] in (10.0, 400.0):
            proc = await asyncio.create_subprocess_exec(
                EXE, "doctor", "--bootstrap", settings.kafka_bootstrap_servers, "--url", url,
                "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=env)
            out, err = await asyncio.wait_for(proc.communicate(), 90)
            assert out, err
            [clock] = [c for c in json.loads(out) if c["check"] == "clock"]
            found.append((proc.returncode, clock["status"], clock["text"]))
    finally:
        server.close()
        await server.wait_closed()
    (code_warn, warn, warn_text), (code_fail, fail, fail_text) = found
    assert (warn, fail) == ("warn", "FAIL"), found
    # The Date header has whole seconds: 10 s ahead reads as 9.5 to 10.5 (and the trip).
    said = warn_text.removeprefix(f"{url} is ").split(" s ahead:")
    assert len(said) == 2 and 9.0 <= float(said[0]) <= 11.0, warn_text
    assert "NTP" in warn_text
    assert "SWITCHBOARD_TIMESTAMP_TOLERANCE_S" in fail_text and code_fail == 1
    assert code_warn == 0  # a warn alone (the other checks: no topics yet is a warn)


async def test_the_key_check_opens_the_sync_profiles_too(broker: Any, tmp_path: Path) -> None:
    h = await RunningHub(make_settings(broker, sync_test_connectors=True), ["api"]).start()
    try:
        hub_id, auth = await h.create_hub("doctor-sync")
        portal, mailbox = sync_sides(tmp_path)
        r = await h.client.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth,
                                json=sync_body(portal, mailbox, modules=("contacts",)))
        assert r.status_code == 201, r.text
        target = ("--bootstrap", h.settings.kafka_bootstrap_servers, "--url", h.base_url)
        code, rows, err = await doctor(h, *target)
        assert code == 0, (rows, err)
        # No integration: the profile's token each side and its webhook secret.
        assert "opens all 3 sealed values" in rows[4][2], rows
        code, rows, _ = await doctor(h, *target,
                                     SWITCHBOARD_SECRET_KEY=generate_secret_key_b64())
        assert code == 1 and "3 of 3 sealed values do not open" in rows[4][2], rows
    finally:
        await h.stop()
