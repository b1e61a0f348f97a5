"""The control plane through real HTTP on a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import RunningHub, make_settings


async def test_hub_and_integration_lifecycle(hub: RunningHub) -> None:
    c = hub.client
    # Only the admin token creates hubs.
    assert (await c.post("/api/v1/hubs", json={"name": "x"})).status_code == 401
    r = await c.post("/api/v1/hubs", json={"name": "x"},
                     headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "invalid_token"
    hub_id, auth = await hub.create_hub("acme")
    r = await c.post("/api/v1/hubs", json={"name": "y"}, headers=auth)
    assert r.status_code == 403

    made = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="My agent",
        configuration={"integrationType": "Agent", "echo": True,
                       "webhookUrl": "https://example.test/hook"})
    assert made["integrationTypeId"] == "Agent" and made["channelId"] == "Direct"
    assert made["statusId"] == 3000
    cfg = made["configuration"]
    assert cfg["publicSigningKey"].startswith("whpk_")
    assert cfg["privateSigningKey"].startswith("whsk_")
    iid = made["integrationId"]

    # GET never shows the private key.
    got = (await c.get(f"/api/v1/integrations/{iid}", headers=auth)).json()
    assert "privateSigningKey" not in got["configuration"]
    assert got["configuration"]["publicSigningKey"] == cfg["publicSigningKey"]
    assert got["name"] == "My agent"

    # Numeric codes are accepted; names come back.
    sys_ = await hub.create_integration(
        hub_id, auth, channelId=3, integrationTypeId=5, name="audit",
        configuration={"webhookUrl": "https://example.test/sys", "events": ["message:agent"]})
    assert sys_["channelId"] == "System" and sys_["integrationTypeId"] == "System"

    listed = (await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)).json()
    assert [i["name"] for i in listed] == ["My agent", "audit"]

    # Duplicate name (case-insensitive) → 409.
    r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
        "channelId": "Direct", "name": "my AGENT", "configuration": {"integrationType": "Bot"}})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "name"

    # Update through the seed's path; regenerate keys returns a new private key once.
    r = await c.post(f"/api/v1/integrations/hubs/{iid}", headers=auth, json={
        "name": "Renamed", "configuration": {"integrationType": "Agent", "regenerateKeys": True,
                                             "webhookUrl": "https://example.test/new"}})
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["name"] == "Renamed"
    assert up["configuration"]["webhookUrl"] == "https://example.test/new"
    assert up["configuration"]["privateSigningKey"] != cfg["privateSigningKey"]
    assert up["configuration"]["publicSigningKey"] != cfg["publicSigningKey"]

    # Another hub sees nothing of this one.
    _, other = await hub.create_hub("other")
    assert (await c.get(f"/api/v1/integrations/{iid}", headers=other)).status_code == 404
    # ... not even that the hub exists: its listing answers as an unknown hub's.
    assert (await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=other)).status_code \
        == 404
    r = await c.patch(f"/api/v1/integrations/{iid}", headers=other, json={"name": "pwn"})
    assert r.status_code == 404
    assert (await c.delete(f"/api/v1/integrations/{iid}", headers=other)).status_code == 404

    assert (await c.delete(f"/api/v1/integrations/{iid}", headers=auth)).status_code == 204
    assert (await c.get(f"/api/v1/integrations/{iid}", headers=auth)).status_code == 404
    # The name is free again.
    await hub.create_integration(hub_id, auth, channelId="Direct", name="my agent",
                                 configuration={"integrationType": "Bot"})


async def test_validation_errors_are_hubster_shaped(hub: RunningHub) -> None:
    hub_id, auth = await hub.create_hub()
    url = f"/api/v1/integrations/hubs/{hub_id}"
    cases: list[tuple[Any, int, str]] = [
        ({"channelId": "Fax", "name": "a", "configuration": {}}, 400, "invalid_channel"),
        ({"channelId": "Direct", "name": "a", "configuration": {"integrationType": "Boss"}},
         400, "invalid_configuration"),
        ({"channelId": "System", "name": "a",
          "configuration": {"webhookUrl": "https://x.test", "events": ["message:nobody"]}},
         400, "invalid_event_filter"),
        ({"channelId": "System", "name": "a", "configuration": {"events": ["message:*"]}},
         400, "invalid_configuration"),
        ({"channelId": "Direct", "name": "a", "statusId": 1,
          "configuration": {"integrationType": "Agent"}}, 400, "invalid_status"),
        ({"channelId": "Direct", "name": "", "configuration": {"integrationType": "Agent"}},
         400, "invalid_request"),
    ]
    for body, status, code in cases:
        r = await hub.client.post(url, json=body, headers=auth)
        assert r.status_code == status, (body, r.text)
        err = r.json()
        assert err["status"] == status and err["errors"][0]["code"] == code, err
    r = await hub.client.post(url, content=b"{not json", headers={**auth,
                              "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_json"
    r = await hub.client.post(url, content=b"name=x", headers={**auth,
                              "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await hub.client.post(url, content=b"{" + b" " * 70_000 + b"}", headers={
        **auth, "content-type": "application/json"})
    assert r.status_code == 413
    assert (await hub.client.get("/api/v1/integrations/nope", headers=auth)).status_code == 404
    assert (await hub.client.get("/openapi.json")).json()["openapi"].startswith("3.")
    assert (await hub.client.get("/healthz")).status_code == 200
    assert (await hub.client.get("/readyz")).json()["status"] == "ready"


async def test_two_api_processes_race_for_one_name(broker: Any) -> None:
    settings = make_settings(broker)
    a = await RunningHub(settings, ["api"]).start()
    b = await RunningHub(settings, ["api"]).start()
    try:
        hub_id, auth = await a.create_hub()
        # b reads its own view: the hub created through a is visible (linearizable read).
        assert (await b.client.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 200
        for round_ in range(5):
            body = {"channelId": "Direct", "name": f"race-{round_}",
                    "configuration": {"integrationType": "Agent"}}
            url = f"/api/v1/integrations/hubs/{hub_id}"
            ra, rb = await asyncio.gather(a.client.post(url, json=body, headers=auth),
                                          b.client.post(url, json=body, headers=auth))
            assert sorted([ra.status_code, rb.status_code]) == [201, 409], (ra.text, rb.text)
        for h in (a, b):
            names = [i["name"] for i in
                     (await h.client.get(f"/api/v1/integrations/hubs/{hub_id}",
                                         headers=auth)).json()]
            assert sorted(names) == [f"race-{i}" for i in range(5)]
        # Hub names too: the registry's fold refuses the later hub of a name, so two API
        # processes (no lock in common) end with one hub per name, whatever the case.
        for round_ in range(10):
            ra, rb = await asyncio.gather(
                a.client.post("/api/v1/hubs", json={"name": f"Hub-race-{round_}"},
                              headers=a.admin),
                b.client.post("/api/v1/hubs", json={"name": f"hub-RACE-{round_}"},
                              headers=b.admin))
            assert sorted([ra.status_code, rb.status_code]) == [201, 409], (ra.text, rb.text)
            lost = ra if ra.status_code == 409 else rb
            assert lost.json()["errors"][0]["code"] == "hub_name_taken"
        for h in (a, b):
            raced = [x["name"].casefold() for x in
                     (await h.client.get("/api/v1/hubs", headers=h.admin)).json()
                     if x["name"].casefold().startswith("hub-race-")]
            assert sorted(raced) == sorted(f"hub-race-{i}" for i in range(10))
    finally:
        await a.stop()
        await b.stop()

    # A restarted API rebuilds everything from the registry topic.
    c = await RunningHub(settings, ["api"]).start()
    try:
        names = [i["name"] for i in (await c.client.get(
            f"/api/v1/integrations/hubs/{hub_id}", headers=auth)).json()]
        assert sorted(names) == [f"race-{i}" for i in range(5)]
        raced = [x["name"].casefold() for x in
                 (await c.client.get("/api/v1/hubs", headers=c.admin)).json()
                 if x["name"].casefold().startswith("hub-race-")]
        assert sorted(raced) == sorted(f"hub-race-{i}" for i in range(10))
    finally:
        await c.stop()


async def test_a_hub_sets_its_own_retry_schedule(hub: RunningHub) -> None:
    c = hub.client
    r = await c.post("/api/v1/hubs", json={"name": "sched", "retrySchedule": "0,60,3600"},
                     headers=hub.admin)
    assert r.status_code == 201 and r.json()["retrySchedule"] == "0,60,3600"
    hub_id = r.json()["hubId"]
    auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
    other_id, other_auth = await hub.create_hub("other")
    for bad in ("", "0,x", "0,-1", "0," + "1," * 25 + "1", "0,999999999"):
        r = await c.patch(f"/api/v1/hubs/{hub_id}", json={"retrySchedule": bad}, headers=auth)
        assert r.status_code == 400, bad
        assert r.json()["errors"][0]["field"] == "retrySchedule"
    r = await c.patch(f"/api/v1/hubs/{hub_id}", json={"retrySchedule": "0,1"}, headers=auth)
    assert r.status_code == 200 and r.json()["retrySchedule"] == "0,1"
    assert (await c.get(f"/api/v1/hubs/{hub_id}", headers=auth)).json()["retrySchedule"] == "0,1"
    # Another hub's token cannot see or change it.
    r = await c.patch(f"/api/v1/hubs/{hub_id}", json={"retrySchedule": "0"},
                      headers=other_auth)
    assert r.status_code == 404
    r = await c.patch(f"/api/v1/hubs/{hub_id}", json={"retrySchedule": None}, headers=auth)
    assert r.status_code == 200 and "retrySchedule" not in r.json()
    assert other_id != hub_id
