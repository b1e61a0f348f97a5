"""`switchboard apply` (hub.yaml) against a real hub: it says what it did per item, writes
nothing when everything is as declared (the registry topic does not grow), sets a hub's
Hubster compatibility mode, and hub names are unique."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from switchboard.brokers import free_port
from switchboard.kafka import REGISTRY
from switchboard.services.hubfile import ApplyReport, apply_file
from tests.conftest import RunningHub
from tests.topics import partitions

HUB_YAML = """
hubs:
  - name: ported
    compat: hubster
    integrations:
      - name: desk
        channelId: Direct
        configuration: {integrationType: Agent, webhookUrl: "http://127.0.0.1:9/desk"}
      - name: audit
        channelId: 3
        configuration: {webhookUrl: "http://127.0.0.1:9/audit", events: ["message:*"]}
  - name: plain
    integrations:
      - name: site
        channelId: direct
        configuration: {integrationType: Customer, echo: true}
      - name: chat
        channelId: WebChat
        configuration: {allowedOrigins: ["example.test"]}
"""


async def _registry_end(hub: RunningHub) -> int:
    """How many records the hub's registry topic holds (every write adds at least one)."""
    topic = hub.settings.topic(REGISTRY)
    parts = (await partitions(hub.settings, [topic]))[topic]
    consumer = AIOKafkaConsumer(bootstrap_servers=hub.settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _apply(hub: RunningHub, path: Path) -> tuple[ApplyReport, list[str]]:
    lines: list[str] = []
    report = await asyncio.to_thread(apply_file, path, hub.base_url, hub.settings.admin_token,
                                     lines.append)
    return report, lines


async def test_apply_creates_then_writes_nothing_then_updates_only_what_changed(
        hub: RunningHub, tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(HUB_YAML)
    made, lines = await _apply(hub, path)
    assert len(made.created) == 6 and made.updated == made.unchanged == []
    assert [line.split("]")[0] + "]" for line in lines] == [f"[{n}/6]" for n in range(1, 7)]
    assert all(": created " in line for line in lines)
    hubs = {h["name"]: h for h in (await hub.client.get("/api/v1/hubs",
                                                        headers=hub.admin)).json()}
    assert hubs["ported"]["compat"] == "hubster" and "compat" not in hubs["plain"]
    # The compat hub answers as Hubster does; apply read it in the default shapes anyway.
    listed = (await hub.client.get(f"/api/v1/integrations/hubs/{hubs['ported']['hubId']}",
                                   headers=hub.admin)).json()
    assert [i["channelId"] for i in listed] == [1, 3]

    # The same file again: everything is as declared, and not one record is written.
    before = await _registry_end(hub)
    again, lines = await _apply(hub, path)
    assert again.created == again.updated == [] and len(again.unchanged) == 6
    assert all(": unchanged " in line for line in lines), lines
    assert await _registry_end(hub) == before

    # The mode turned off and one webhook moved: those two are written, nothing else.
    path.write_text(HUB_YAML.replace("compat: hubster", "compat: none")
                    .replace("9/audit", "9/audit2"))
    changed, lines = await _apply(hub, path)
    assert changed.created == [] and changed.updated == ["ported", "audit"]
    assert "[1/6] hub 'ported': updated" in lines[0] and "(compat)" in lines[0]
    assert "integration 'audit': updated" in lines[2] and "(configuration)" in lines[2]
    assert await _registry_end(hub) == before + 2
    hubs = {h["name"]: h for h in (await hub.client.get("/api/v1/hubs",
                                                        headers=hub.admin)).json()}
    assert "compat" not in hubs["ported"] and len(hubs) == 2
    audit = next(i for i in (await hub.client.get(
        f"/api/v1/integrations/hubs/{hubs['ported']['hubId']}", headers=hub.admin)).json()
        if i["name"] == "audit")
    assert audit["configuration"]["webhookUrl"] == "http://127.0.0.1:9/audit2"


async def test_hub_names_are_unique_whatever_their_case(hub: RunningHub) -> None:
    acme, acme_auth = await hub.create_hub("Acme")
    taken = await hub.client.post("/api/v1/hubs", json={"name": "ACME"}, headers=hub.admin)
    assert taken.status_code == 409
    assert taken.json()["errors"][0]["code"] == "hub_name_taken"
    other, _ = await hub.create_hub("other")
    renamed = await hub.client.patch(f"/api/v1/hubs/{other}", json={"name": "acme"},
                                     headers=hub.admin)
    assert renamed.status_code == 409
    assert renamed.json()["errors"][0]["code"] == "hub_name_taken"
    # Renaming is the admin's; a hub's own token may not (it would learn others' names).
    own = await hub.client.patch(f"/api/v1/hubs/{acme}", json={"name": "acme2"},
                                 headers=acme_auth)
    assert own.status_code == 403
    # A hub may change its own name's case, and take a free name.
    for name in ("ACME", "acme-corp"):
        ok = await hub.client.patch(f"/api/v1/hubs/{acme}", json={"name": name},
                                    headers=hub.admin)
        assert ok.status_code == 200 and ok.json()["name"] == name
    names = sorted(h["name"] for h in (await hub.client.get("/api/v1/hubs",
                                                            headers=hub.admin)).json())
    assert names == ["acme-corp", "other"]
    # The old name is free again.
    again = await hub.client.post("/api/v1/hubs", json={"name": "Acme"}, headers=hub.admin)
    assert again.status_code == 201


async def test_creates_racing_for_one_name_in_one_api_process_make_one_hub(hub: RunningHub
                                                                           ) -> None:
    answers = await asyncio.gather(*(
        hub.client.post("/api/v1/hubs", json={"name": name}, headers=hub.admin)
        for name in ("race", "Race", "RACE", "race", "rAce", "race")))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409]
    listed = (await hub.client.get("/api/v1/hubs", headers=hub.admin)).json()
    assert len(listed) == 1


async def test_apply_matches_a_hub_name_whatever_its_case(hub: RunningHub, tmp_path: Path
                                                          ) -> None:
    await hub.create_hub("demo")
    path = tmp_path / "hub.yaml"
    path.write_text("hubs:\n  - name: Demo\n")
    report, lines = await _apply(hub, path)
    assert report.created == [] and report.updated == ["Demo"]
    assert lines == [lines[0]] and "hub 'Demo': updated" in lines[0] and "(name)" in lines[0]
    names = [h["name"] for h in (await hub.client.get("/api/v1/hubs",
                                                      headers=hub.admin)).json()]
    assert names == ["Demo"]


async def test_a_large_file_shows_progress(hub: RunningHub, tmp_path: Path) -> None:
    integrations = "".join(
        f"      - {{name: i{n}, channelId: Direct, configuration: {{integrationType: Bot}}}}\n"
        for n in range(40))
    path = tmp_path / "hub.yaml"
    path.write_text(f"hubs:\n  - name: big\n    integrations:\n{integrations}")
    report, lines = await _apply(hub, path)
    assert len(report.created) == 41
    assert [line.split(" ")[0] for line in lines] == [f"[{n}/41]" for n in range(1, 42)]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_ADMIN_TOKEN"}
    return subprocess.run([sys.executable, "-m", "switchboard.services.cli", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})


async def test_apply_command_says_what_it_needs_and_what_it_did(hub: RunningHub,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("hubs:\n  - name: cli\n    integrations:\n"
                    "      - {name: web, channelId: Direct, "
                    "configuration: {integrationType: Customer}}\n")
    no_token = await asyncio.to_thread(_cli, "apply", str(path), "--url", hub.base_url)
    assert no_token.returncode == 2 and no_token.stdout == "", no_token.stderr
    assert no_token.stderr.strip().splitlines() == [
        "switchboard apply: apply needs the admin token: set SWITCHBOARD_ADMIN_TOKEN or pass "
        "--admin-token (`switchboard dev` prints it when it starts)"]

    token = {"SWITCHBOARD_ADMIN_TOKEN": hub.settings.admin_token}
    done = await asyncio.to_thread(_cli, "apply", str(path), "--url", hub.base_url, env=token)
    assert done.returncode == 0, done.stderr
    assert "[1/2] hub 'cli': created " in done.stdout and "accessToken=sbat_" in done.stdout
    assert "[2/2]   integration 'web': created " in done.stdout
    assert "privateSigningKey=whsk_" in done.stdout
    assert done.stdout.rstrip().endswith("2 created, 0 updated, 0 unchanged")
    again = await asyncio.to_thread(_cli, "apply", str(path), "--url", hub.base_url,
                                    "--admin-token", hub.settings.admin_token)
    assert again.returncode == 0 and "0 created, 0 updated, 2 unchanged" in again.stdout
    assert "whsk_" not in again.stdout and "sbat_" not in again.stdout

    wrong = await asyncio.to_thread(_cli, "apply", str(path), "--url", hub.base_url,
                                    "--admin-token", "not-the-token")
    assert wrong.returncode == 2 and "refused the admin token" in wrong.stderr

    path.write_text("hubs:\n  - name: cli\n    integrations:\n      - name: [\n")
    bad = await asyncio.to_thread(_cli, "apply", str(path), "--url", hub.base_url, env=token)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("switchboard apply: not valid YAML: line 5, column 1: ")
    assert len(bad.stderr.strip().splitlines()) == 1

    path.write_text("hubs:\n  - name: cli\n    integrations:\n      - {name: x}\n")
    invalid = await asyncio.to_thread(_cli, "apply", str(path), "--url", hub.base_url,
                                      env=token)
    assert invalid.returncode == 2 and "Traceback" not in invalid.stderr
    assert "missing required field `channelId`" in invalid.stderr

    path.write_text("hubs:\n  - name: cli\n")
    down = f"http://127.0.0.1:{free_port()}"
    gone = await asyncio.to_thread(_cli, "apply", str(path), "--url", down, env=token)
    assert gone.returncode == 1 and gone.stderr.startswith(
        f"switchboard apply: cannot reach {down}: is the hub running? (switchboard dev)")

    missing = await asyncio.to_thread(_cli, "apply", str(tmp_path / "nope.yaml"), env=token)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"switchboard apply: no such file: {tmp_path / 'nope.yaml'}"
