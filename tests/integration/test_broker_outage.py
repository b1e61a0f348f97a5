"""Acked means durable: with the broker gone the ingress answers 503, never 202."""

from __future__ import annotations

from pathlib import Path

from switchboard.brokers import start_broker
from tests.conftest import RunningHub, make_settings
from tests.support import message, sign_with_cryptography


async def test_ingress_answers_503_when_the_broker_is_down(tmp_path: Path) -> None:
    broker = start_broker("tansu", tmp_path)
    hub = await RunningHub(make_settings(broker, produce_timeout_s=1.0),
                           ["api", "ingress"]).start()
    try:
        hub_id, auth = await hub.create_hub()
        made = await hub.create_integration(hub_id, auth, channelId="Direct", name="c",
                                            configuration={"integrationType": "Customer"})
        key = made["configuration"]["privateSigningKey"]
        body = message("before")
        r = await hub.client.post(f"/ingress/{made['integrationId']}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 202
        broker.kill()
        body = message("during")
        r = await hub.client.post(f"/ingress/{made['integrationId']}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert r.json()["errors"][0]["code"] == "broker_unavailable"
        assert (await hub.client.get("/readyz")).status_code == 503
        assert (await hub.client.get("/healthz")).status_code == 200
    finally:
        await hub.stop()
        broker.stop()
