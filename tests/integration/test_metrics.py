"""GET /metrics on a real hub: what an operator scrapes, and who may scrape it."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningHub, make_settings
from tests.integration.test_resilience import Service, _stop_all
from tests.support import Receiver, message, sign_with_cryptography


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


async def _scrape(hub: RunningHub) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await hub.client.get("/metrics", headers=hub.admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return _samples(r.text)


async def test_metrics_count_what_the_hub_did(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/c"})
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/a"})
        other = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="other",
            configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/o"})
        before = await _scrape(hub)
        assert _value(before, "switchboard_ingress_requests_total") == 0

        body = message("hello")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202, r.text
        # Signed with another integration's key: one more 401, counted by its reason.
        bad = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(other["configuration"]["privateSigningKey"], body))
        assert bad.status_code == 401
        await receiver.wait_for("/a", 1)

        after = await _scrape(hub)
        assert _value(after, "switchboard_ingress_requests_total",
                      channel="Direct", status="202") == 1
        assert _value(after, "switchboard_ingress_requests_total",
                      channel="Direct", status="401") == 1
        assert _value(after, "switchboard_signature_failures_total") == 1
        assert _value(after, "switchboard_produce_seconds_count") == 1
        assert _value(after, "switchboard_activities_total", hub=hub_id) == 1
        assert _value(after, "switchboard_deliveries_total", hub=hub_id,
                      outcome="delivered") >= 1
        assert _value(after, "switchboard_delivery_attempt_seconds_count",
                      outcome="delivered") >= 1
        assert _value(after, "switchboard_dead_letters_total") == 0
        assert _value(after, "switchboard_open_circuits") == 0
        sockets = {dict(ls)["endpoint"] for (n, ls) in after
                   if n == "switchboard_websocket_connections"}
        assert sockets == {"stream", "console_feed", "webchat"}
        groups = {dict(ls).get("group") for (n, ls) in after if n == "switchboard_consumer_lag"}
        assert {"switchboard-router", "switchboard-deliverer"} <= groups
    finally:
        await receiver.stop()


async def test_metrics_need_the_metrics_token(hub: RunningHub) -> None:
    assert (await hub.client.get("/metrics")).status_code == 401
    _hub_id, auth = await hub.create_hub()
    # A hub's own token reads its own hub, never the deployment's metrics.
    assert (await hub.client.get("/metrics", headers=auth)).status_code == 401
    wrong = {"Authorization": "Bearer " + hub.settings.admin_token + "x"}
    assert (await hub.client.get("/metrics", headers=wrong)).status_code == 401


async def test_a_metrics_token_replaces_the_admin_token(broker: object) -> None:
    settings = make_settings(broker, metrics_token="m-" + "x" * 40)
    h = await RunningHub(settings, ["api"]).start()
    try:
        ok = await h.client.get("/metrics", headers={"Authorization": "Bearer m-" + "x" * 40})
        assert ok.status_code == 200
        assert (await h.client.get("/metrics", headers=h.admin)).status_code == 401
    finally:
        await h.stop()


async def test_sigterm_fails_readiness_first_then_stops(broker: object, tmp_path: Path
                                                        ) -> None:
    """`serve` on SIGTERM: /readyz answers 503 at once while the process keeps serving,
    then it stops by itself and exits 0. It logs JSON lines, as asked."""
    settings = make_settings(broker, shutdown_drain_s=2.0, log_format="json")
    svc = Service("router", settings, tmp_path)
    try:
        await svc.wait_ready()
        async with httpx.AsyncClient(base_url=svc.url, timeout=2) as client:
            svc.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            for _ in range(20):
                r = await client.get("/readyz")
                if r.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 503 and r.json()["detail"] == "draining"
            assert time.monotonic() - sent < 1.5  # within the drain, still serving
            assert (await client.get("/healthz")).status_code == 200
        for _ in range(200):
            if svc.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert svc.proc.returncode == 0, svc.log_tail()
        assert time.monotonic() - sent >= 2.0  # not before the drain ended
        lines = [orjson.loads(line) for line in svc.log_path.read_text().splitlines()]
        assert lines and all(line["service"] == "router" for line in lines)
        assert any("readiness fails now" in line["message"] for line in lines)
        assert any(line["logger"].startswith("uvicorn") for line in lines)
    finally:
        await _stop_all([svc])
