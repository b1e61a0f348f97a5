"""Apply a hub.yaml to a running hub through its own REST API (idempotent by name).

Each hub and integration is compared with what the API answers before anything is
written: one line per item says `created`, `updated` or `unchanged`, and a file applied
twice writes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from msgspec import Struct, field

from switchboard.hubfile import (
    find_by_name,
    hub_patch,
    integration_body,
    integration_differences,
    parse_hub_file,
)
from switchboard.services.cli_errors import RUNTIME, CliError


class ApplyReport(Struct):
    """What an apply did: the create answers (with the tokens and keys shown once) and
    the names of what was updated or already as declared."""

    created: list[dict[str, Any]] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.created)} created, {len(self.updated)} updated, "
                f"{len(self.unchanged)} unchanged")


def apply_file(path: Path, base_url: str, admin_token: str,
               out: Callable[[str], None] = print) -> ApplyReport:
    """Create missing hubs and integrations, update those that differ; `out` gets one
    line per item, prefixed `[n/total]`.

    Access tokens and private signing keys exist only in create responses, so they are
    printed here once; re-applying does not show them again.
    """
    declared = parse_hub_file(path.read_text())
    total = declared.steps()
    report = ApplyReport()
    step = 0

    def say(text: str) -> None:
        out(f"[{step}/{total}] {text}")

    # Answers in the default shapes whatever a hub's compat mode (names, camelCase keys).
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin_token}"},
                      timeout=30, params={"compat": "none"}) as client:
        hubs: list[dict[str, Any]] = _ok(client.get("/api/v1/hubs"), "listing hubs")
        for hub in declared.hubs:
            step += 1
            what = f"hub {hub.name!r}"
            current = find_by_name(hubs, hub.name)
            if current is None:
                body: dict[str, Any] = {"name": hub.name}
                if hub.compat is not None:
                    body["compat"] = hub.compat
                made = _ok(client.post("/api/v1/hubs", json=body), what)
                hub_id = made["hubId"]
                report.created.append(made)
                say(f"{what}: created {hub_id}  accessToken={made['accessToken']}")
            else:
                hub_id = current["hubId"]
                patch = hub_patch(hub, current)
                if patch:
                    _ok(client.patch(f"/api/v1/hubs/{hub_id}", json=patch), what)
                    report.updated.append(hub.name)
                    say(f"{what}: updated {hub_id} ({', '.join(sorted(patch))})")
                else:
                    report.unchanged.append(hub.name)
                    say(f"{what}: unchanged {hub_id}")
            existing: list[dict[str, Any]] = _ok(
                client.get(f"/api/v1/integrations/hubs/{hub_id}"), f"{what}: listing")
            for integ in hub.integrations:
                step += 1
                what = f"  integration {integ.name!r}"
                found = find_by_name(existing, integ.name)
                if found is None:
                    made = _ok(client.post(f"/api/v1/integrations/hubs/{hub_id}",
                                           json=integration_body(integ)), what.strip())
                    report.created.append(made)
                    cfg = made["configuration"]
                    say(f"{what}: created {made['integrationId']}"
                        + (f"\n    publicSigningKey={cfg['publicSigningKey']}"
                           f"\n    privateSigningKey={cfg['privateSigningKey']}"
                           if "privateSigningKey" in cfg else ""))
                    continue
                iid = found["integrationId"]
                changed = integration_differences(integ, found)
                if "channelId" in changed:
                    raise CliError(
                        f"{what.strip()} is a {found.get('channelId')} integration; hub.yaml "
                        f"says {integ.channel_id}: a channel cannot change (delete it, or "
                        "give the new one another name)")
                if changed:
                    _ok(client.post(f"/api/v1/integrations/hubs/{iid}",
                                    json=integration_body(integ)), what.strip())
                    report.updated.append(integ.name)
                    say(f"{what}: updated {iid} ({', '.join(changed)})")
                else:
                    report.unchanged.append(integ.name)
                    say(f"{what}: unchanged {iid}")
    return report


def _ok(resp: httpx.Response, what: str) -> Any:
    if resp.status_code == 401:
        raise CliError("the hub refused the admin token (401): use the one `switchboard dev` "
                       "printed (SWITCHBOARD_ADMIN_TOKEN or --admin-token)")
    if resp.status_code >= 400:
        try:
            errors = resp.json().get("errors", [])
            why = "; ".join(f"{e.get('code')}: {e.get('description')}" for e in errors)
        except (ValueError, AttributeError):
            why = resp.text[:200]
        raise CliError(f"{what}: the hub answered {resp.status_code} ({why})", RUNTIME)
    return resp.json()
