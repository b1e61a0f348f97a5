"""The SSRF policy end to end: refused at create/update for literal private addresses,
refused at connect time for names that resolve to one.

Nothing here leaves 127.0.0.1: the hub runs the API alone (no deliverer, so no webhook
is ever attempted), the refused URLs are never requested, and the HTTP client only talks
to a receiver on loopback (through "localhost", resolved from /etc/hosts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchboard.services.http_client import DestinationForbidden, HttpClient
from tests.conftest import RunningHub, make_settings
from tests.support import Receiver

FIELD = "configuration.webhookUrl"


@pytest.fixture
async def strict_hub(broker: Any) -> AsyncIterator[RunningHub]:
    """A hub as `switchboard serve` runs it: private destinations not allowed."""
    settings = make_settings(broker, allow_private_destinations=False)
    hub = await RunningHub(settings, services=["api"]).start()
    try:
        yield hub
    finally:
        await hub.stop()


def _error(r: Any) -> tuple[str, str | None]:
    assert r.status_code == 400, r.text
    (err,) = r.json()["errors"]
    return err["code"], err.get("field")


async def test_private_webhook_urls_are_refused_and_nothing_is_created(
        strict_hub: RunningHub) -> None:
    hub = strict_hub
    hub_id, auth = await hub.create_hub("ssrf")
    path = f"/api/v1/integrations/hubs/{hub_id}"
    refused = {
        "http://127.0.0.1:9/x": "destination_forbidden",
        "http://10.0.0.1/": "destination_forbidden",
        "http://169.254.169.254/latest/meta-data/": "destination_forbidden",
        "http://[::1]:8080/": "destination_forbidden",
        "http://": "invalid_url",
        "http://exa mple.com/": "invalid_url",
        "http://2130706433/": "invalid_url",
    }
    for url, code in refused.items():
        r = await hub.client.post(path, headers=auth, json={
            "channelId": "Direct", "name": "desk",
            "configuration": {"integrationType": "Agent", "webhookUrl": url}})
        assert _error(r) == (code, FIELD), url
        r = await hub.client.post(path, headers=auth, json={
            "channelId": "System", "name": "audit",
            "configuration": {"webhookUrl": url, "events": ["message:*"]}})
        assert _error(r) == (code, FIELD), url
    # Nothing was created by any of them.
    r = await hub.client.get(path, headers=auth)
    assert r.status_code == 200 and r.json() == []

    # A public URL is accepted (never requested here: no deliverer runs) ...
    made = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": "https://example.com/hook"})
    iid = made["integrationId"]
    # ... and an update to a private one is refused on both update paths, unchanged after.
    for method, url in (("POST", f"/api/v1/integrations/hubs/{iid}"),
                        ("PATCH", f"/api/v1/integrations/{iid}")):
        r = await hub.client.request(method, url, headers=auth, json={
            "configuration": {"integrationType": "Agent",
                              "webhookUrl": "http://192.168.1.1/hook"}})
        assert _error(r) == ("destination_forbidden", FIELD), method
    got = (await hub.client.get(f"/api/v1/integrations/{iid}", headers=auth)).json()
    assert got["configuration"]["webhookUrl"] == "https://example.com/hook"
    r = await hub.client.get(path, headers=auth)
    assert [i["integrationId"] for i in r.json()] == [iid]


async def test_dev_settings_allow_private_webhook_urls(broker: Any) -> None:
    hub = await RunningHub(make_settings(broker, allow_private_destinations=True),
                           services=["api"]).start()
    try:
        hub_id, auth = await hub.create_hub("dev")
        made = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/x"})
        assert made["configuration"]["webhookUrl"] == "http://127.0.0.1:9/x"
        # Malformed URLs are refused whatever the policy.
        r = await hub.client.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
            "channelId": "Direct", "name": "other",
            "configuration": {"integrationType": "Agent", "webhookUrl": "http://exa mple.com/"}})
        assert _error(r) == ("invalid_url", FIELD)
    finally:
        await hub.stop()


async def test_the_client_refuses_private_addresses_at_connect_time() -> None:
    receiver = await Receiver().start()
    # "localhost" is a name, so it passes the create-time check; it resolves to loopback
    # and is refused on the address actually connected to.
    by_name = f"http://localhost:{receiver.port}/by-name"
    literal = f"{receiver.url}/literal"
    strict = HttpClient(timeout_s=5, allow_private=False)
    lax = HttpClient(timeout_s=5, allow_private=True)
    await strict.start()
    await lax.start()
    try:
        for url in (by_name, literal):
            with pytest.raises(DestinationForbidden) as info:
                await strict.request("POST", url, json={"hello": "world"})
            assert info.value.reason == "destination_forbidden"
        assert receiver.received == [] and receiver.attempts == {}

        for url, path in ((by_name, "/by-name"), (literal, "/literal")):
            answer = await lax.request("POST", url, json={"hello": "world"})
            assert answer.status_code == 200 and answer.is_success
            (got,) = receiver.at(path)
            assert got.json == {"hello": "world"}
    finally:
        await strict.close()
        await lax.close()
        await receiver.stop()
