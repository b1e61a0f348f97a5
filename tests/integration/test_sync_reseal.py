"""`switchboard reseal` moves every sealed value of `sync.profiles` to the new key: the
profiles' credentials and change-notification secrets, the templates' credentials and
the signup apps' secrets; a hub holding only the new key then verifies the profile's
notifications, signs users up and provisions them from the template."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from switchboard.kafka import SYNC_PROFILES
from switchboard.keys import generate_secret_key_b64
from switchboard.sealer import Sealer
from switchboard.services.reseal import reseal
from switchboard.sync.sealed import sealed_values
from tests.conftest import RunningHub, make_settings
from tests.integration.test_sync_runs import body as sync_body
from tests.integration.test_sync_runs import sides as sync_sides
from tests.integration.test_sync_templates import signup, template_body
from tests.integration.test_sync_triggers import signed
from tests.topics import read_topics


async def _latest(settings: Any) -> dict[bytes, bytes]:
    """`sync.profiles` as compaction would leave it: the last live record of each key."""
    latest: dict[bytes, bytes | None] = {}
    for _, key, value in await read_topics(settings, [SYNC_PROFILES]):
        if key is not None:
            latest[key] = value
    return {k: v for k, v in latest.items() if v is not None}


async def test_reseal_moves_templates_apps_and_webhook_secrets(broker: Any,
                                                               tmp_path: Path) -> None:
    old_key, new_key = generate_secret_key_b64(), generate_secret_key_b64()
    settings = make_settings(broker, secret_key=old_key, sync_test_connectors=True)
    portal, mailbox = sync_sides(tmp_path)
    h = await RunningHub(settings, ["api"]).start()
    try:
        hub_id, auth = await h.create_hub("reseal-sync")
        r = await h.client.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth,
                                json=sync_body(portal, mailbox, review=False,
                                               modules=("contacts",)))
        assert r.status_code == 201, r.text
        pid, hook_secret = r.json()["profileId"], r.json()["webhookSecret"]
        r = await h.client.post(f"/api/v1/hubs/{hub_id}/syncTemplates", headers=auth,
                                json=template_body(portal.path, mailbox.path,
                                                   portal.meta("token"),
                                                   mailbox.meta("token")))
        assert r.status_code == 201, r.text
        tid = r.json()["templateId"]
        r = await h.client.put(f"/api/v1/hubs/{hub_id}/syncSignup", headers=auth,
                               json={"templateIds": [tid]})
        assert r.status_code == 201, r.text
        app_id, app_secret = r.json()["appId"], r.json()["appSecret"]
    finally:
        await h.stop()

    only_new = Sealer.from_b64(new_key)
    before = await _latest(settings)
    # A profile (a token each side, its webhook secret), a template (a token each side),
    # the app (its secret): all under the old key.
    values = [v for key, value in before.items() for v in sealed_values(key, value)]
    assert len(values) == 6
    assert not any(only_new.is_current(token) for _, token in values)

    rotated = msgspec.structs.replace(settings, secret_key="",
                                      secret_keys=f"{new_key},{old_key}")
    lines: list[str] = []
    report = await reseal(rotated, say=lines.append)
    assert report.profiles is not None, lines
    assert report.profiles.rewritten == 3 and report.profiles.unreadable == [], lines
    assert not report.unreadable and not report.conflicts, lines
    after = await _latest(settings)
    values = [v for key, value in after.items() for v in sealed_values(key, value)]
    assert len(values) == 6
    for context, token in values:
        assert only_new.is_current(token)
        only_new.open(token, context)
    again = await reseal(rotated, say=lines.append)
    assert again.profiles is not None and again.profiles.rewritten == 0

    # A hub with the new key alone: the notification secret, the app secret and the
    # template's credentials all still work.
    h = await RunningHub(msgspec.structs.replace(settings, secret_key=new_key),
                         ["api"]).start()
    try:
        payload = b'{"changed": ["contacts"]}'
        r = await h.client.post(f"/api/v1/sync/webhooks/{pid}", content=payload,
                                headers=signed(hook_secret, payload))
        assert r.status_code == 202, r.text
        async with httpx.AsyncClient(base_url=h.base_url, timeout=30) as anon:
            r = await anon.post("/api/v1/sync/signup", json=signup(
                app_id, app_secret, "org1", "user1", int(time.time() * 1000)))
            assert r.status_code == 200, r.text
            [provisioned] = r.json()["profiles"]
        r = await h.client.get(f"/api/v1/hubs/{hub_id}/syncProfiles/{provisioned}",
                               headers=auth)
        assert r.status_code == 200 and r.json()["templateId"] == tid, r.text
    finally:
        await h.stop()
