"""`switchboard apply` (hub.yaml) against a real hub: idempotent, and it sets a hub's
Hubster compatibility mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchboard.services.hubfile import apply_file
from tests.conftest import RunningHub

HUB_YAML = """
hubs:
  - name: ported
    compat: hubster
    integrations:
      - name: desk
        channelId: Direct
        configuration: {integrationType: Agent, webhookUrl: "http://127.0.0.1:9/desk"}
  - name: plain
    integrations:
      - name: site
        channelId: Direct
        configuration: {integrationType: Customer}
"""


async def test_apply_creates_then_updates_and_sets_compat(hub: RunningHub, tmp_path: Path
                                                          ) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(HUB_YAML)
    made = await asyncio.to_thread(apply_file, path, hub.base_url, hub.settings.admin_token)
    assert len(made) == 4  # two hubs, two integrations
    hubs = {h["name"]: h for h in (await hub.client.get("/api/v1/hubs",
                                                        headers=hub.admin)).json()}
    assert hubs["ported"]["compat"] == "hubster" and "compat" not in hubs["plain"]
    # The compat hub answers as Hubster does; apply read it in the default shapes anyway.
    listed = (await hub.client.get(f"/api/v1/integrations/hubs/{hubs['ported']['hubId']}",
                                   headers=hub.admin)).json()
    assert [i["channelId"] for i in listed] == [1]

    # Again, with the mode turned off: nothing new is made, the hub is switched back.
    path.write_text(HUB_YAML.replace("compat: hubster", "compat: none"))
    again = await asyncio.to_thread(apply_file, path, hub.base_url, hub.settings.admin_token)
    assert again == []
    hubs = {h["name"]: h for h in (await hub.client.get("/api/v1/hubs",
                                                        headers=hub.admin)).json()}
    assert "compat" not in hubs["ported"] and len(hubs) == 2
