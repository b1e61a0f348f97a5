"""`/openapi.json` against a running hub (the statuses it documents are ones the routes
answer), and `/docs`, Swagger UI served by the hub, in a real headless Chromium."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningHub, make_settings
from tests.integration.test_webchat import CHROMIUM, CHROMIUM_ARGS

METHODS = ("get", "put", "post", "delete", "patch")
# Recorded before any page script runs: every CSP violation.
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture(scope="module")
async def docs_hub(broker: Any) -> AsyncIterator[RunningHub]:
    h = await RunningHub(make_settings(broker)).start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go (kept by CI when SWITCHBOARD_TEST_ARTIFACTS is set)."""
    root = Path(os.environ.get("SWITCHBOARD_TEST_ARTIFACTS", tmp_path)) / "docs"
    root.mkdir(parents=True, exist_ok=True)
    return root


async def _spec(hub: RunningHub) -> dict[str, Any]:
    r = await hub.client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    spec: dict[str, Any] = r.json()
    return spec


def _api_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items()
            if method in METHODS and path.startswith("/api/") and op.get("security")]


def _fill(path: str, ids: dict[str, str]) -> str:
    """`path` with its parameters filled from `ids` (made up for any other name)."""
    return re.sub(r"\{([^}]+)\}", lambda m: ids.get(m.group(1), "no" + m.group(1)), path)


async def test_documented_statuses_are_answered(docs_hub: RunningHub) -> None:
    """Each API operation, called as its documented statuses say: without a token (401),
    with made-up ids (404), with a body that is not JSON (415) and with broken JSON (400)."""
    hub = docs_hub
    spec = await _spec(hub)
    hub_id, auth = await hub.create_hub("docs-statuses")
    direct = await hub.create_integration(hub_id, auth, channelId="Direct", name="desk",
                                          configuration={"integrationType": "Agent"})
    made_up = {"hubId": "nohub", "id": "noid", "integrationId": "nointegration",
               "deliveryId": "nodelivery", "jobId": "nojob", "profileId": "noprofile",
               "recordId": "1"}
    real = {"hubId": hub_id, "id": hub_id, "integrationId": direct["integrationId"]}
    operations = _api_operations(spec)
    assert len(operations) > 30
    checked: dict[int, int] = {}

    async def call(method: str, path: str, headers: dict[str, str], **kw: Any) -> int:
        r = await hub.client.request(method.upper(), path, headers=headers, **kw)
        if r.status_code >= 400:
            assert r.json()["errors"][0]["code"], r.text  # the project's error shape
        return r.status_code

    for path, method, op in operations:
        documented = {int(c) for c in op["responses"]}
        where = f"{method.upper()} {path}"
        json_body = "application/json" in op.get("requestBody", {}).get("content", {})
        body: dict[str, Any] = {"json": {}} if json_body else {}
        status = await call(method, _fill(path, made_up), {}, **body)
        assert status == 401 and status in documented, where
        checked[401] = checked.get(401, 0) + 1
        if "{" in path:
            status = await call(method, _fill(path, made_up), hub.admin, **body)
            assert status == 404 and status in documented, (where, status)
            checked[404] = checked.get(404, 0) + 1
        # Bodies on ids that exist here (the Syncro actions need a Syncro integration).
        names = set(re.findall(r"\{([^}]+)\}", path))
        if json_body and "/syncro/" not in path and names <= {"hubId", "id", "integrationId"}:
            status = await call(method, _fill(path, real),
                                {**hub.admin, "content-type": "text/plain"}, content=b"hello")
            assert status == 415 and status in documented, (where, status)
            status = await call(method, _fill(path, real),
                                {**hub.admin, "content-type": "application/json"},
                                content=b'{"name": ')
            assert status == 400 and status in documented, (where, status)
            checked[415] = checked.get(415, 0) + 1
    assert checked[401] == len(operations) and checked[404] > 20 and checked[415] >= 5


async def test_what_any_route_answers_a_stranger_is_documented(docs_hub: RunningHub) -> None:
    """Every HTTP operation (websockets aside), called with made-up ids and no credential
    or signature, answers a status its document lists: the provider, WebChat, ingress,
    console and docs routes too."""
    hub = docs_hub
    spec = await _spec(hub)
    answered: dict[str, int] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS or "101" in op["responses"]:
                continue
            body = op.get("requestBody", {}).get("content", {})
            kw: dict[str, Any] = {"json": {}} if "application/json" in body else {}
            r = await hub.client.request(method.upper(), _fill(path, {}), **kw)
            where = f"{method.upper()} {path}"
            assert str(r.status_code) in op["responses"], (where, r.status_code, r.text[:200])
            answered[where] = r.status_code
    # The ones a stranger meets first, as the README says.
    assert answered["POST /ingress/{integrationId}"] == 401
    assert answered["POST /ingress/slack"] == 401
    assert answered["GET /ingress/meta"] == 403
    assert answered["GET /webchat/{integrationId}"] == 404
    assert answered["GET /docs"] == answered["GET /openapi.json"] == 200


async def test_docs_is_swagger_ui_from_the_hub_itself(docs_hub: RunningHub,
                                                      artifacts: Path) -> None:
    from playwright.async_api import async_playwright, expect

    hub = docs_hub
    spec = await _spec(hub)
    summaries = [op["summary"] for item in spec["paths"].values()
                 for m, op in item.items() if m in METHODS]
    requests: list[str] = []
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.add_init_script(WATCH)
            page.on("request", lambda req: requests.append(req.url))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            response = await page.goto(f"{hub.base_url}/docs")
            assert response is not None and response.status == 200
            csp = response.headers["content-security-policy"]
            assert "script-src 'self';" in csp and "unsafe" not in csp
            assert "default-src 'self'" in csp and "connect-src 'self'" in csp
            # Every operation is listed (Swagger UI renders one block per operation).
            blocks = page.locator(".opblock")
            await expect(blocks).to_have_count(len(summaries), timeout=30_000)
            await expect(page.locator(".info .title")).to_contain_text("Switchboard")
            await expect(page.locator("#operations-default-post_ingress__integrationId_")
                         ).to_be_visible()
            await page.screenshot(path=artifacts / "docs.png", full_page=False)
            # Open one operation: its parameters and its schema render from the document.
            await page.locator(".opblock-summary-path",
                               has_text="/api/v1/integrations/hubs/{id}").first.click()
            await expect(page.locator(".opblock.is-open .parameters")).to_contain_text("id")
            await page.screenshot(path=artifacts / "docs-operation.png", full_page=False)
            assert await page.evaluate("window.__violations") == []
        finally:
            await browser.close()
    assert errors == []
    # Nothing from anywhere but the hub: no CDN, no validator badge.
    assert requests and all(u.startswith(hub.base_url + "/") for u in requests), requests
    assert {u.removeprefix(hub.base_url) for u in requests} >= {
        "/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/docs.js",
        "/openapi.json"}


async def test_docs_files_are_only_the_pages_own(docs_hub: RunningHub) -> None:
    c = docs_hub.client
    r = await c.get("/docs/swagger-ui-bundle.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["x-content-type-options"] == "nosniff"
    again = await c.get("/docs/swagger-ui-bundle.js", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for name in ("swagger-editor-bundle.js", "index.html", "..%2Fdocs.py", "LICENSE"):
        r = await c.get(f"/docs/{name}")
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "not_found", name
