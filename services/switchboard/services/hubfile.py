"""Apply a hub.yaml to a running hub through its own REST API (idempotent by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from switchboard.hubfile import parse_hub_file


def apply_file(path: Path, base_url: str, admin_token: str) -> list[dict[str, Any]]:
    """Create missing hubs and integrations, update existing ones; print what was made.

    Access tokens and private signing keys exist only in create responses, so they are
    printed here once; re-applying does not show them again.
    """
    declared = parse_hub_file(path.read_text())
    headers = {"Authorization": f"Bearer {admin_token}"}
    created: list[dict[str, Any]] = []
    # Answers in the default shapes whatever a hub's compat mode (names, camelCase keys).
    with httpx.Client(base_url=base_url, headers=headers, timeout=30,
                      params={"compat": "none"}) as client:
        hubs = {h["name"]: h for h in _ok(client.get("/api/v1/hubs"))}
        for hub in declared.hubs:
            if hub.name in hubs:
                hub_id = hubs[hub.name]["hubId"]
                current = hubs[hub.name].get("compat") or "none"
                if hub.compat is not None and hub.compat != current:
                    _ok(client.patch(f"/api/v1/hubs/{hub_id}", json={"compat": hub.compat}))
                    print(f"hub {hub.name!r}: {hub_id} (compat {hub.compat})")
            else:
                body: dict[str, Any] = {"name": hub.name}
                if hub.compat is not None:
                    body["compat"] = hub.compat
                made = _ok(client.post("/api/v1/hubs", json=body))
                hub_id = made["hubId"]
                created.append(made)
                print(f"hub {hub.name!r}: {hub_id}  accessToken={made['accessToken']}")
            existing = {i["name"]: i for i in
                        _ok(client.get(f"/api/v1/integrations/hubs/{hub_id}"))}
            for integ in hub.integrations:
                body = {"channelId": integ.channel_id, "name": integ.name,
                        "statusId": integ.status_id, "configuration": integ.configuration}
                if integ.name in existing:
                    iid = existing[integ.name]["integrationId"]
                    _ok(client.post(f"/api/v1/integrations/hubs/{iid}", json=body))
                    print(f"  integration {integ.name!r}: {iid} (updated)")
                    continue
                made = _ok(client.post(f"/api/v1/integrations/hubs/{hub_id}", json=body))
                created.append(made)
                cfg = made["configuration"]
                print(f"  integration {integ.name!r}: {made['integrationId']} (created)"
                      + (f"\n    publicSigningKey={cfg['publicSigningKey']}"
                         f"\n    privateSigningKey={cfg['privateSigningKey']}"
                         if "privateSigningKey" in cfg else ""))
    return created


def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: "
                           f"{resp.status_code} {resp.text}")
    return resp.json()
