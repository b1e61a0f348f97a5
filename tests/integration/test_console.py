"""The web console in a real headless Chromium (Debian's package, driven by Playwright), on
a real broker, a real hub and a real receiver on loopback; its feed websocket and stats
endpoint with plain clients."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from switchboard.services.stream_feed import FEED_UNAUTHENTICATED_PER_ADDRESS
from tests.conftest import RunningHub, make_settings
from tests.integration.test_webchat import CHROMIUM, CHROMIUM_ARGS
from tests.support import Receiver, sign_with_cryptography

XSS = '<img src=x onerror="window.__xss=1">'
# Recorded before any page script runs: every CSP violation and every script error.
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


class State:
    failing = False


@pytest.fixture(scope="module")
async def console_hub(broker: Any) -> AsyncIterator[RunningHub]:
    h = await RunningHub(make_settings(broker)).start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def agent_receiver() -> AsyncIterator[tuple[Receiver, type[State]]]:
    state = type("S", (State,), {})
    r = await Receiver(lambda path, n: (503, {}, 0.0) if state.failing else (200, {}, 0.0)
                       ).start()
    try:
        yield r, state
    finally:
        await r.stop()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots of each page go (kept by CI when SWITCHBOARD_TEST_ARTIFACTS is set)."""
    root = Path(os.environ.get("SWITCHBOARD_TEST_ARTIFACTS", tmp_path)) / "console"
    root.mkdir(parents=True, exist_ok=True)
    return root


async def _send(hub: RunningHub, customer: dict[str, Any], text: str) -> None:
    body = json.dumps({"type": "message", "sender": {"id": "cust-1", "name": "Ada"},
                       "message": {"type": "text", "text": text}}).encode()
    key = customer["configuration"]["privateSigningKey"]
    r = await hub.client.post(f"/ingress/{customer['integrationId']}", content=body,
                              headers=sign_with_cryptography(key, body))
    assert r.status_code == 202, r.text


async def _browser(pw: Any) -> Any:
    return await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


async def _page(browser: Any, errors: list[str]) -> Any:
    page = await browser.new_page()
    await page.add_init_script(WATCH)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page


async def _login(page: Any, hub: RunningHub, token: str) -> None:
    await page.goto(f"{hub.base_url}/console")
    await page.locator("#token").fill(token)
    await page.locator("#login button[type=submit]").click()


async def test_console_end_to_end(console_hub: RunningHub, agent_receiver: Any,
                                  artifacts: Path) -> None:
    from playwright.async_api import async_playwright, expect

    hub = console_hub
    receiver, state = agent_receiver
    hub_id, auth = await hub.create_hub("console-a")
    token = auth["Authorization"].removeprefix("Bearer ")
    customer = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="website",
        configuration={"integrationType": "Customer"})
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await _browser(pw)
        try:
            page = await _page(browser, errors)
            response = await page.goto(f"{hub.base_url}/console")
            headers = response.headers
            csp = headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "script-src 'self';" in csp and "unsafe" not in csp
            assert headers["x-content-type-options"] == "nosniff"
            await page.screenshot(path=artifacts / "login.png", full_page=True)
            await page.locator("#token").fill("sbat_not-a-real-token")
            await page.locator("#login button[type=submit]").click()
            await expect(page.locator(".notice-error")).to_contain_text("not valid")
            # Chromium logs the refused request itself; that one error is the point here.
            assert [e for e in errors if "status of 401" not in e] == []
            errors.clear()
            await page.locator("#token").fill(token)
            await page.locator("#login button[type=submit]").click()

            # A hub owner lands on their hub; create the agent desk from the Direct form.
            await expect(page.locator("h2")).to_contain_text("console-a")
            await expect(page.locator("#role")).to_have_text("hub owner")
            await page.locator("#new-channel").select_option("Direct")
            await page.locator("#new-name").fill("desk")
            await page.locator("#cfg-integrationType").select_option("Agent")
            await page.locator("#cfg-webhookUrl").fill(f"{receiver.url}/agent")
            await page.locator("#new-integration button[type=submit]").click()
            key = page.locator("#shown-once code[data-name=privateSigningKey]")
            await expect(key).to_have_text(lambda_prefix("whsk_"))
            row = page.locator("#integrations tr[data-name=desk]")
            await expect(row).to_contain_text("Active")
            await page.screenshot(path=artifacts / "hub.png", full_page=True)
            desk_id = await row.get_attribute("data-integration-id")
            assert desk_id
            got = await hub.client.get(f"/api/v1/integrations/{desk_id}", headers=auth)
            assert got.json()["configuration"]["webhookUrl"] == f"{receiver.url}/agent"
            assert "privateSigningKey" not in got.json()["configuration"]

            # Pause and resume from the list.
            await row.locator("button.toggle").click()
            await expect(row).to_contain_text("Paused")
            await row.locator("button.toggle").click()
            await expect(row).to_contain_text("Active")

            # The live feed: a signed activity appears; an HTML text stays text.
            await row.locator("a.int-link").click()
            await expect(page.locator("#feed-state")).to_have_text("live", timeout=20_000)
            await _send(hub, customer, "hello console")
            items = page.locator("#feed .feed-text")
            await expect(items.first).to_have_text("hello console", timeout=20_000)
            first = (await receiver.wait_for("/agent", 1))[0]
            assert first.json["activity"]["message"]["text"] == "hello console"
            await _send(hub, customer, XSS)
            await expect(items.first).to_have_text(XSS, timeout=20_000)
            assert await page.locator("#feed img").count() == 0
            assert await page.evaluate("window.__xss") is None
            await receiver.wait_for("/agent", 2)

            # Paused: what arrives waits, and shows on resume (newest first).
            await page.locator("#feed-pause").click()
            await _send(hub, customer, "while paused")
            await expect(page.locator("#feed-state")).to_contain_text("1 waiting",
                                                                      timeout=20_000)
            assert await items.first.text_content() == XSS
            await page.locator("#feed-pause").click()
            await expect(items.first).to_have_text("while paused")
            await page.screenshot(path=artifacts / "integration.png", full_page=True)

            # Deliveries and their attempts.
            await receiver.wait_for("/agent", 3)
            await page.locator("#deliveries-refresh").click()
            listed = page.locator("#deliveries tbody tr")
            await expect(listed).to_have_count(3)
            await page.locator("#status-filter").select_option("delivered")
            await expect(listed).to_have_count(3)
            await page.locator("#status-filter").select_option("failed")
            await expect(listed).to_have_count(0)
            await page.locator("#status-filter").select_option("")
            await page.locator(f"#deliveries tr[data-delivery-id='{first.headers['webhook-id']}'] a"
                               ).click()
            await expect(page.locator("#attempts tr.attempt td.http").first).to_have_text("200")
            await expect(page.locator("#attempts tr.attempt").first).to_contain_text(" ms")
            await page.screenshot(path=artifacts / "delivery.png", full_page=True)

            # A failing receiver: the delivery is dead-lettered after its four attempts.
            state.failing = True
            await _send(hub, customer, "this one fails")
            await page.goto(f"{hub.base_url}/console#/hubs/{hub_id}")
            dead = page.locator("#dead tr[data-delivery-id]")
            for _ in range(40):
                if await dead.count():
                    break
                await asyncio.sleep(0.5)
                await page.reload()
            await expect(dead).to_have_count(1)
            await page.screenshot(path=artifacts / "dead-letters.png", full_page=True)
            failed_id = await dead.get_attribute("data-delivery-id")
            await dead.locator("a").click()
            await expect(page.locator("dd[data-field=status]")).to_have_text("failed")
            await expect(page.locator("#attempts td.http").first).to_have_text("503")

            # Fixed: redeliver from the console; the receiver gets the same webhook-id.
            state.failing = False
            await page.locator("#redeliver").click()
            await expect(page.locator(".job[data-state=done]")).to_have_count(1, timeout=20_000)
            again = await receiver.wait_until(
                "/agent", lambda got: any(r.headers["webhook-id"] == failed_id for r in got))
            assert [r.json["activity"]["message"]["text"] for r in again
                    if r.headers["webhook-id"] == failed_id] == ["this one fails"]
            await expect(page.locator("dd[data-field=status]")).to_have_text("delivered",
                                                                             timeout=20_000)
            await expect(page.locator("#attempts td.http").first).to_have_text("200")

            # Replay the last hour: everything to the desk comes again, same webhook-ids.
            await page.goto(f"{hub.base_url}/console#/integrations/{desk_id}")
            before = len(receiver.at("/agent"))
            await page.locator("#replay button[type=submit]").click()
            await expect(page.locator("#replay .job[data-state=done]")).to_have_count(
                1, timeout=20_000)
            replayed = await receiver.wait_for("/agent", before + 4)
            ids = [r.headers["webhook-id"] for r in replayed[before:]]
            assert first.headers["webhook-id"] in ids and failed_id in ids

            # The charts count this hub's own traffic: four messages, and the hub's own
            # event:delivery_failed of the dead letter.
            await page.goto(f"{hub.base_url}/console#/hubs/{hub_id}")
            total = page.locator("#charts [data-series=activitiesIn]")
            await expect(total).to_have_attribute("data-total", "5")
            attempts_total = page.locator("#charts [data-series=deliveriesOut]")
            assert int(await attempts_total.get_attribute("data-total") or 0) >= 4 + 4 + 1
            await page.screenshot(path=artifacts / "charts.png", full_page=True)

            # Regenerate keys: the new private key is shown once, and it signs.
            desk_row = page.locator("#integrations tr[data-name=website]")
            await desk_row.locator("button.regen").click()
            await desk_row.locator("button.regen").click()
            await expect(page.locator("#shown-once code[data-name=privateSigningKey]")
                         ).to_have_text(lambda_prefix("whsk_"))
            new_key = await page.locator(
                "#shown-once code[data-name=privateSigningKey]").text_content()
            assert new_key and new_key != customer["configuration"]["privateSigningKey"]
            await _send(hub, {**customer, "configuration": {"privateSigningKey": new_key}},
                        "with the new key")

            # Delete, in two clicks.
            await page.locator("#integrations tr[data-name=desk] button.delete").click()
            await page.locator("#integrations tr[data-name=desk] button.delete").click()
            await expect(page.locator("#integrations tr[data-name=desk]")).to_have_count(0)
            r = await hub.client.get(f"/api/v1/integrations/{desk_id}", headers=auth)
            assert r.status_code == 404
            assert await page.evaluate("window.__violations") == []
            assert errors == []
        finally:
            await browser.close()


def lambda_prefix(prefix: str) -> Any:
    import re

    return re.compile("^" + re.escape(prefix) + r"\S+$")


async def test_console_tenancy_and_operator(console_hub: RunningHub, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    hub = console_hub
    a_id, a_auth = await hub.create_hub("tenant-a")
    _, b_auth = await hub.create_hub("tenant-b")
    a_int = await hub.create_integration(a_id, a_auth, channelId="Direct", name="a-desk",
                                         configuration={"integrationType": "Agent"})
    artifacts = Path(os.environ.get("SWITCHBOARD_TEST_ARTIFACTS", tmp_path)) / "console"
    artifacts.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await _browser(pw)
        try:
            page = await _page(browser, errors)
            await _login(page, hub, b_auth["Authorization"].removeprefix("Bearer "))
            await expect(page.locator("h2")).to_contain_text("tenant-b")
            await expect(page.locator("#integrations")).to_have_text("No integrations yet.")
            await expect(page.locator("#dead")).to_contain_text("None")
            await page.goto(f"{hub.base_url}/console#/integrations/{a_int['integrationId']}")
            await expect(page.locator(".notice-error")).to_contain_text("no such integration")
            await page.goto(f"{hub.base_url}/console#/hubs/{a_id}")
            await expect(page.locator(".notice-error")).to_contain_text("no such hub")
            # Chromium logs each refused request (404: exactly as for an unknown id).
            assert errors and all("status of 404" in e for e in errors)
            errors.clear()
            await page.goto(f"{hub.base_url}/console#/hubs")
            await expect(page.locator("h2")).to_contain_text("tenant-b")
            assert "a-desk" not in await page.content()
            assert "tenant-a" not in await page.content()

            # The operator sees every hub, and may open either.
            await page.locator("#logout").click()
            await _login(page, hub, hub.settings.admin_token)
            await expect(page.locator("#role")).to_have_text("operator (every hub)")
            links = page.locator("#hubs a.hub-link")
            await expect(links.filter(has_text="tenant-a")).to_have_count(1)
            await expect(links.filter(has_text="tenant-b")).to_have_count(1)
            await links.filter(has_text="tenant-a").click()
            await expect(page.locator("#integrations tr[data-name=a-desk]")).to_have_count(1)
            await page.screenshot(path=artifacts / "operator.png", full_page=True)
            assert await page.evaluate("window.__violations") == []
            assert errors == []
        finally:
            await browser.close()


async def test_console_files_and_headers(console_hub: RunningHub) -> None:
    c = console_hub.client
    page = await c.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert f"ws://127.0.0.1:{console_hub.port}" in page.headers["content-security-policy"]
    js = await c.get("/console/app.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["x-content-type-options"] == "nosniff"
    assert js.headers["cache-control"] == "no-cache"
    again = await c.get("/console/app.js", headers={"if-none-match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    css = await c.get("/console/console.css")
    assert css.headers["content-type"].startswith("text/css")
    for bad in ("/console/nope.js", "/console/..%2Fconsole.py", "/console/console.py"):
        r = await c.get(bad)
        assert r.status_code == 404, bad
    # A forged Host never reaches the policy unchecked.
    odd = await c.get("/console", headers={"host": "x; script-src *"})
    assert "script-src *" not in odd.headers["content-security-policy"]
    # Nothing the console loads comes from elsewhere.
    for name in ("index.html", "app.js", "views_hub.js", "views_integration.js", "feed.js"):
        text = (await c.get(f"/console/{name}" if name != "index.html" else "/console")).text
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
        assert "innerHTML" not in text and "eval(" not in text


async def test_stats_endpoint_is_per_hub(console_hub: RunningHub) -> None:
    hub = console_hub
    a_id, a_auth = await hub.create_hub("stats-a")
    b_id, b_auth = await hub.create_hub("stats-b")
    customer = await hub.create_integration(a_id, a_auth, channelId="Direct", name="web",
                                            configuration={"integrationType": "Customer"})
    await _send(hub, customer, "count me")
    for _ in range(100):
        r = await hub.client.get(f"/api/v1/hubs/{a_id}/stats", headers=a_auth)
        assert r.status_code == 200, r.text
        if sum(b["activitiesIn"] for b in r.json()["buckets"]) == 1:
            break
        await asyncio.sleep(0.1)
    body = r.json()
    assert body["hubId"] == a_id and body["bucketMs"] == 60_000 and len(body["buckets"]) == 60
    assert sum(b["activitiesIn"] for b in body["buckets"]) == 1
    other = await hub.client.get(f"/api/v1/hubs/{b_id}/stats", headers=b_auth)
    assert sum(b["activitiesIn"] for b in other.json()["buckets"]) == 0
    # Another hub's stats answer as an unknown hub's; no token is a 401.
    assert (await hub.client.get(f"/api/v1/hubs/{a_id}/stats", headers=b_auth)).status_code \
        == 404
    assert (await hub.client.get(f"/api/v1/hubs/{a_id}/stats")).status_code == 401
    assert (await hub.client.get(f"/api/v1/hubs/{a_id}/stats", headers=hub.admin)
            ).status_code == 200


async def _closed(ws: Any) -> int | None:
    try:
        async with asyncio.timeout(15):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_feed_socket_auth_and_limits(console_hub: RunningHub) -> None:
    hub = console_hub
    a_id, a_auth = await hub.create_hub("feed-a")
    _, b_auth = await hub.create_hub("feed-b")
    agent = await hub.create_integration(a_id, a_auth, channelId="Direct", name="agent",
                                         configuration={"integrationType": "Agent"})
    url = f"ws://127.0.0.1:{hub.port}/v1/integrations/{agent['integrationId']}/feed"
    token_a = a_auth["Authorization"].removeprefix("Bearer ")
    token_b = b_auth["Authorization"].removeprefix("Bearer ")

    async def opened(token: str | None, first: str | None = None) -> Any:
        ws = await connect(url)
        await ws.send(first if first is not None
                      else json.dumps({"type": "auth", "token": token}))
        return ws

    for token, code in ((token_b, 4404), ("sbat_unknown", 4401), ("nonsense", 4401)):
        async with await opened(token) as ws:
            assert await _closed(ws) == code, token
    async with await opened(None, "{not json") as ws:
        assert await _closed(ws) == 4400
    async with await opened(None, json.dumps({"type": "hello"})) as ws:
        assert await _closed(ws) == 4401
    async with await opened(None, json.dumps({"type": "auth", "token": "x" * 5000})) as ws:
        assert await _closed(ws) == 4400  # a frame over 4096 characters
    # Before auth: at most 16 sockets per address, each closed 5 s later without a frame.
    silent = [await connect(url) for _ in range(FEED_UNAUTHENTICATED_PER_ADDRESS)]
    async with connect(url) as ws:
        assert await _closed(ws) == 4429  # refused before it could even authenticate
    assert [await _closed(ws) for ws in silent] == [4408] * len(silent)
    # Sockets per integration are bounded; the feeds share the gateway's one consumer.
    gateway = next(w for w in hub.app.state.workers if type(w).__name__ == "StreamGateway")
    limit = hub.settings.stream_max_connections_per_integration
    socks = []
    for _ in range(limit):
        ws = await opened(token_a)
        assert json.loads(await ws.recv()) == {"type": "ready"}
        socks.append(ws)
    assert gateway.feed.count(agent["integrationId"]) == limit
    assert gateway.consumer_count() == 1
    async with await opened(hub.settings.admin_token) as ws:
        assert await _closed(ws) == 4429
    for ws in socks:
        await ws.close()
    # Rotating the token closes the feeds it opened; deleting the integration, every feed.
    ws = await opened(token_a)
    assert json.loads(await ws.recv()) == {"type": "ready"}
    r = await hub.client.post(f"/api/v1/hubs/{a_id}/rotateToken", headers=a_auth)
    assert r.status_code == 200, r.text
    a_auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
    assert await _closed(ws) == 4401
    ws = await opened(hub.settings.admin_token)
    assert json.loads(await ws.recv()) == {"type": "ready"}
    r = await hub.client.delete(f"/api/v1/integrations/{agent['integrationId']}",
                                headers=a_auth)
    assert r.status_code == 204
    assert await _closed(ws) == 4404
