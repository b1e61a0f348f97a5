"""`switchboard doctor` against a real hub on the test broker: healthy is all ok, a wrong
secret key is a FAIL naming the key, an unreachable broker a FAIL within the bound."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from switchboard.keys import generate_secret_key_b64, key_id
from tests.conftest import RunningHub

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
