"""`switchboard tail` as an operator runs it: a subprocess following a real hub's topics
on the test broker (Tansu or Apache Kafka) while signed activities go through the hub."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.kafka import ACTIVITIES, make_producer
from switchboard.keys import generate_secret_key_b64
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.support import Receiver, message, sign_with_cryptography

EXE = str(Path(sys.executable).parent / "switchboard")


class Tail:
    """`switchboard tail …` in a subprocess, ready once it says what it follows."""

    def __init__(self, hub: RunningHub, *args: str, bootstrap: bool = True) -> None:
        self.hub = hub
        self.args = [*args, *(["--bootstrap", hub.settings.kafka_bootstrap_servers]
                              if bootstrap else [])]
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = ""

    async def start(self, env: dict[str, str] | None = None) -> Tail:
        s = self.hub.settings
        base = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        base.update({"SWITCHBOARD_TOPIC_PREFIX": s.topic_prefix,
                     "SWITCHBOARD_SECRET_KEY": s.secret_key,
                     "SWITCHBOARD_BROKER_KIND": s.broker_kind})
        base.update(env or {})
        self.proc = await asyncio.create_subprocess_exec(
            EXE, "tail", *self.args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=base)
        assert self.proc.stderr is not None
        line = await asyncio.wait_for(self.proc.stderr.readline(), 60)
        self.ready = line.decode()
        assert self.ready.startswith("following "), (self.ready + (
            await self.proc.stderr.read()).decode())
        return self

    async def finish(self, timeout: float = 60) -> tuple[int, list[str], str]:
        """Exit code, stdout lines and the rest of stderr, once it has stopped by itself."""
        assert self.proc is not None
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        return self.proc.returncode or 0, out.decode().splitlines(), err.decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def hub1(broker: Any) -> AsyncIterator[RunningHub]:
    """A hub whose topics have one partition: every record in one order, so a later
    record of the right hub proves an earlier one of another hub was read and dropped."""
    h = await RunningHub(make_settings(broker, partitions=1)).start()
    try:
        yield h
    finally:
        await h.stop()


async def _customer(hub: RunningHub, hub_name: str, name: str, **config: Any
                    ) -> tuple[str, dict[str, Any]]:
    hub_id, auth = await hub.create_hub(hub_name)
    made = await hub.create_integration(
        hub_id, auth, channelId="Direct", name=name,
        configuration={"integrationType": "Customer", **config})
    return hub_id, made


async def _send(hub: RunningHub, integration: dict[str, Any], text: str,
                conversation: str | None = None) -> str:
    body = message(text, conversation=conversation)
    r = await hub.client.post(
        f"/ingress/{integration['integrationId']}", content=body,
        headers=sign_with_cryptography(integration["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text
    activity_id: str = r.json()["activityId"]
    return activity_id


async def test_tail_activities_of_one_hub_by_name_as_lines_and_json(hub1: RunningHub) -> None:
    acme, site = await _customer(hub1, "Acme", "site")
    _, web = await _customer(hub1, "other", "web")
    lines = Tail(hub1, "activities", "--hub", "acme", "--max", "2")
    as_json = Tail(hub1, "activities", "--hub", acme, "--json", "--max", "2")
    try:
        await asyncio.gather(lines.start(), as_json.start())
        assert f"following {hub1.settings.topic(ACTIVITIES)} (1 partitions)" in lines.ready
        first = await _send(hub1, site, "hello\x1b[31m there")
        await _send(hub1, web, "not for acme")
        second = await _send(hub1, site, "second")  # the sentinel: after the other hub's
        code, out, err = await lines.finish()
        assert code == 0, err
        assert len(out) == 2, out
        for line, ident, text in ((out[0], first, '"hello?[31m there"'),
                                  (out[1], second, '"second"')):
            # time (UTC, ms), hub name, integration name, type, id, preview
            date, clock, *rest = line.split("  ")[0].split(" ") + line.split("  ")[1:]
            assert len(date) == 10 and len(clock) == 12, line
            assert rest == ["Acme", "site", "message:customer", ident, text], line
        code, out, err = await as_json.finish()
        assert code == 0, err
        got = [json.loads(line) for line in out]
        assert [g["activityId"] for g in got] == [first, second]
        assert {g["hubId"] for g in got} == {acme}
        assert got[0]["message"] == {"type": "text", "text": "hello\x1b[31m there"}
    finally:
        lines.kill()
        as_json.kill()


async def test_tail_deliveries_and_dead_letters_of_one_integration(broker: Any) -> None:
    # The agent's endpoint answers 410 Gone: its deliveries fail at once, for good.
    receiver = await Receiver(lambda path, n: (410 if path == "/gone" else 200, {}, 0.0)).start()
    hub = await RunningHub(make_settings(broker, partitions=1)).start()
    tails: list[Tail] = []
    try:
        hub_id, auth = await hub.create_hub("acme")
        site = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/site"})
        gone = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/gone"})
        audit = await hub.create_integration(
            hub_id, auth, channelId="System", name="audit",
            configuration={"webhookUrl": receiver.url + "/audit", "events": ["message:*"]})
        deliveries = Tail(hub, "deliveries", "--integration", "Desk", "--max", "2")
        dead = Tail(hub, "dead", "--hub", hub_id, "--json", "--max", "1")
        dead_lines = Tail(hub, "dead", "--integration", gone["integrationId"], "--max", "1")
        tails += [deliveries, dead, dead_lines]
        await asyncio.gather(deliveries.start(), dead.start(), dead_lines.start())
        first = await _send(hub, site, "to the desk")
        # The audit sees both; its second delivery follows the desk's first on the topic.
        await _send(hub, site, "again")
        await receiver.wait_for("/audit", 2)
        code, out, err = await deliveries.finish()
        assert code == 0, err
        assert len(out) == 2, out
        rows = [line.split("  ") for line in out]
        assert [r[1:4] + r[5:] for r in rows] == [
            ["acme", "→ desk", "message:customer", '"to the desk"'],
            ["acme", "→ desk", "message:customer", '"again"']], out
        code, out, err = await dead.finish()
        assert code == 0, err
        letter = json.loads(out[0])
        assert (letter["reason"], letter["lastStatus"]) == ("gone", 410), letter
        assert letter["delivery"]["destinationId"] == gone["integrationId"]
        assert letter["delivery"]["activity"]["activityId"] == first
        assert letter["delivery"]["deliveryId"] == rows[0][4]
        code, out, err = await dead_lines.finish()
        assert code == 0, err
        assert out[0].split("  ")[1:] == [
            "acme", "→ desk", "dead:gone (1 attempts, last 410)", rows[0][4], '"to the desk"']
        assert audit["integrationId"] != gone["integrationId"]
    finally:
        for t in tails:
            t.kill()
        await hub.stop()
        await receiver.stop()


async def test_tail_from_the_beginning_marks_records_the_hub_did_not_write(
        hub1: RunningHub, tmp_path: Path) -> None:
    _, site = await _customer(hub1, "acme", "site")
    first = await _send(hub1, site, "one")
    second = await _send(hub1, site, "two")
    # A record on `activities` without the hub's MAC: shown, but marked.
    producer = make_producer(Settings(
        kafka_bootstrap_servers=hub1.settings.kafka_bootstrap_servers,
        broker_kind=hub1.settings.broker_kind, topic_prefix=hub1.settings.topic_prefix))
    await producer.start()
    try:
        forged = dict(json.loads(await _first_value(hub1)), activityId="act_forged")
        await producer.send_and_wait(hub1.settings.topic(ACTIVITIES),
                                     json.dumps(forged).encode(), key=b"x")
    finally:
        await producer.stop()
    # The broker named by `switchboard dev`'s file, found through SWITCHBOARD_DATA_DIR.
    (tmp_path / "dev.json").write_text(json.dumps({
        "pid": os.getpid(), "url": hub1.base_url, "broker": hub1.settings.broker_kind,
        "bootstrap": hub1.settings.kafka_bootstrap_servers, "brokerPid": None}))
    t = Tail(hub1, "activities", "--from-beginning", "--max", "3", bootstrap=False)
    try:
        await t.start({"SWITCHBOARD_DATA_DIR": str(tmp_path)})
        assert tmp_path.name not in t.ready and "from the beginning" in t.ready
        code, out, err = await t.finish()
        assert code == 0, err
        assert [line.split("  ")[4] for line in out] == [first, second, "act_forged"]
        assert not out[0].endswith("]") and not out[1].endswith("]")
        assert out[2].endswith("[not written by this hub: unsigned]"), out[2]
    finally:
        t.kill()
    # --since: from the first record written at or after that time (the second activity's
    # acceptance; its record was written after it, the first one's before).
    from tests.topics import read_topics

    accepted = [json.loads(v or b"")["timestamp"] for _, _, v in
                await read_topics(hub1.settings, [ACTIVITIES])]
    t = Tail(hub1, "activities", "--since", str(accepted[1]), "--max", "2")
    try:
        await t.start()
        assert f"(ms {accepted[1]})" in t.ready
        code, out, err = await t.finish()
        assert code == 0, err
        assert [line.split("  ")[4] for line in out] == [second, "act_forged"]
    finally:
        t.kill()


async def test_tail_stops_cleanly_on_ctrl_c_and_sigterm(hub1: RunningHub) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        t = Tail(hub1, "deliveries")
        try:
            await t.start()
            assert t.proc is not None
            t.proc.send_signal(sig)
            code, out, err = await t.finish(timeout=30)
            assert (code, out, err) == (0, [], ""), (sig, err)
        finally:
            t.kill()


async def _first_value(hub: RunningHub) -> bytes:
    from tests.topics import read_topics

    records = await read_topics(hub.settings, [ACTIVITIES])
    return records[0][2] or b""


async def test_tail_says_what_is_wrong(hub1: RunningHub, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(SWITCHBOARD_TOPIC_PREFIX=hub1.settings.topic_prefix,
               SWITCHBOARD_DATA_DIR=str(tmp_path / "nothing"))

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            EXE, "tail", *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode()

    code, out = await run("activities")
    assert code == 2 and "pass --bootstrap" in out and "switchboard dev" in out, out
    await hub1.create_hub("acme")
    code, out = await run("activities", "--hub", "nope",
                          "--bootstrap", hub1.settings.kafka_bootstrap_servers)
    assert code == 2 and "no hub with id or name 'nope'" in out, out
    code, out = await run("activities", "--bootstrap", hub1.settings.kafka_bootstrap_servers,
                          "--since", "yesterday")
    assert code == 2 and "not ms, an ISO 8601 time or an age" in out, out
    # Another deployment's key: the hub's records are refused, and the error says why.
    env["SWITCHBOARD_SECRET_KEY"] = generate_secret_key_b64()
    code, out = await run("activities", "--hub", "acme",
                          "--bootstrap", hub1.settings.kafka_bootstrap_servers)
    assert code == 2 and "no hub with id or name 'acme'" in out, out
    assert "do not carry this key's MAC: is SWITCHBOARD_SECRET_KEY the hub's?" in out, out
    # A broker that is not there: one line, exit 1.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    try:
        code, out = await run("deliveries", "--bootstrap",
                              f"127.0.0.1:{held.getsockname()[1]}")
    finally:
        held.close()
    assert code == 1 and "cannot reach the broker at 127.0.0.1:" in out, out
