"""A hub (api + sync) between the Graph fake and the reference platform fake, for the
sync tests that run a Microsoft 365 mailbox against a platform portal."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.platform import FakePlatform


@dataclass
class GraphPlatform:
    hub: RunningHub
    platform: FakePlatform
    graph: FakeGraph


@contextlib.asynccontextmanager
async def graph_platform(broker: Any, **settings: Any) -> AsyncIterator[GraphPlatform]:
    """Both fakes and a hub whose Graph API is the fake; `settings` go to the hub."""
    platform = await FakePlatform().start()
    graph = FakeGraph()
    await graph.start()
    hub_settings = make_settings(broker, graph_api_url=graph.url, provider_timeout_s=30.0,
                                 **settings)
    hub = await RunningHub(hub_settings, ["api", "sync"]).start()
    try:
        yield GraphPlatform(hub, platform, graph)
    finally:
        await hub.stop()
        await graph.stop()
        await platform.stop()


async def create_profile(s: GraphPlatform, hub_id: str, auth: dict[str, str], module: str,
                         direction: str, capabilities: list[str]) -> str:
    """A profile between the platform (portal, user ``ptok``) and the Graph mailbox with one
    module on, out of review; the URL of the profile."""
    c: httpx.AsyncClient = s.hub.client
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth, json={
        "name": "outlook",
        "portal": {"kind": "platform", "configuration": {
            "instanceUrl": s.platform.url, "capabilities": capabilities},
            "credentials": {"accessToken": "ptok"}},
        "mailbox": {"kind": "graph", "configuration": {},
                    "credentials": {"accessToken": s.graph.token}},
        "modules": {module: {"options": {"direction": direction}, "needReview": False}}})
    assert r.status_code == 201, r.text
    return f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"


def writes(platform: FakePlatform) -> list[tuple[str, str]]:
    """The platform calls that change something, in order."""
    return [(m, p) for m, p, _ in platform.calls if m in ("POST", "PATCH", "DELETE")]
