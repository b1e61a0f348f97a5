"""Sync templates and partner signup on a real broker: profiles provisioned from a
template skip review and keep its locked fields; a template change reaches them; a
signup signed with the app secret (seed 000's apiHash) provisions the user's profiles
and answers a token that reaches those profiles only."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx

from switchboard.sync.signup import api_hash
from tests.conftest import RunningHub
from tests.integration.test_sync_runs import body, emails, run_and_wait, sides, sync_hub

__all__ = ["sync_hub"]  # the fixture, shared with test_sync_runs


def template_body(portal_path: str, mailbox_path: str, portal_token: str,
                  mailbox_token: str) -> dict[str, Any]:
    return {
        "name": "CRM ⇄ mailbox (team)",
        "portal": {"kind": "testfile", "configuration": {"path": portal_path},
                   "credentials": {"token": portal_token}},
        "mailbox": {"kind": "testfile", "configuration": {"path": mailbox_path},
                    "credentials": {"token": mailbox_token}},
        "modules": {"contacts": {"options": {"direction": "BOTH"}},
                    "tasks": {"options": {"direction": "TO_PORTAL"}}},
        "schedule": {"intervalType": 1, "interval": 4, "timeOfDay": "02:00",
                     "timezone": "Europe/London"},
        "lockedFields": ["portal", "modules.contacts", "schedule"],
    }


async def test_a_template_provisions_profiles_out_of_review_and_locks_its_fields(
        sync_hub: RunningHub, tmp_path: Path) -> None:
    c = sync_hub.client
    hub_id, auth = await sync_hub.create_hub("tpl")
    other_hub, other_auth = await sync_hub.create_hub("other")
    portal, mailbox = sides(tmp_path)
    portal.create("contact", first_name="Ada", email="ada@example.test")
    tpls = f"/api/v1/hubs/{hub_id}/syncTemplates"
    r = await c.post(tpls, json=template_body(portal.path, mailbox.path, portal.meta("token"),
                                              mailbox.meta("token")), headers=auth)
    assert r.status_code == 201, r.text
    tpl = r.json()
    tid = tpl["templateId"]
    assert tpl["portal"]["credentials"] == {"token": "********"}
    assert (await c.get(tpls, headers=auth)).json()["items"][0]["templateId"] == tid
    # Walls: another hub sees no template and cannot provision from this one.
    assert (await c.get(f"{tpls}/{tid}", headers=other_auth)).status_code == 404
    r = await c.post(f"/api/v1/hubs/{other_hub}/syncProfiles", json={"templateId": tid},
                     headers=other_auth)
    assert r.status_code == 404, r.text
    bad = template_body(portal.path, mailbox.path, "x", "y")
    bad["lockedFields"] = ["credentials"]
    assert (await c.post(tpls, json=bad, headers=auth)).status_code == 400
    bad = template_body(portal.path, mailbox.path, "x", "y")
    bad["schedule"]["timezone"] = "Mars/Olympus"
    r = await c.post(tpls, json=bad, headers=auth)
    assert r.status_code == 400 and "timezone" in r.text, r.text

    profiles = f"/api/v1/hubs/{hub_id}/syncProfiles"
    # Bad input is a 4xx: no template and no sides, an unknown template, a bad schedule.
    r = await c.post(profiles, json={"name": "bare"}, headers=auth)
    assert r.status_code == 400, r.text
    r = await c.post(profiles, json={"templateId": "nosuch"}, headers=auth)
    assert r.status_code == 404, r.text
    for schedule in ({"intervalType": 3}, {"intervalType": 0, "interval": 0},
                     {"intervalType": 2, "timeOfDay": "25:00"}, {"interval": 5}):
        r = await c.post(profiles, json={"templateId": tid, "schedule": schedule},
                         headers=auth)
        assert r.status_code == 400, (schedule, r.text)
    # A locked field given at creation is refused, naming it.
    r = await c.post(profiles, json={"templateId": tid, "portal": body(portal, mailbox)["portal"]},
                     headers=auth)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "portal", r.text
    r = await c.post(profiles, json={"templateId": tid, "name": "Ada's"}, headers=auth)
    assert r.status_code == 201, r.text
    prof = r.json()
    url = f"{profiles}/{prof['profileId']}"
    assert prof["needReview"] == [] and prof["name"] == "Ada's"
    assert prof["templateId"] == tid and prof["schedule"]["interval"] == 4
    # Out of review at once: the first run writes (the template's credentials work).
    done = await run_and_wait(c, url, auth, initial=True)
    assert done["status"].get("errMessage") is None, done["status"]
    assert emails(mailbox) == ["ada@example.test"]

    for change, field in (({"portal": body(portal, mailbox)["portal"]}, "portal"),
                          ({"modules": {"contacts": {"enabled": False}}}, "modules.contacts"),
                          ({"schedule": {"intervalType": 0, "interval": 5}}, "schedule")):
        r = await c.patch(url, json=change, headers=auth)
        assert r.status_code == 409, r.text
        assert r.json()["errors"][0]["field"] == field and tid in r.text
    r = await c.patch(url, json={"name": "renamed",
                                 "modules": {"tasks": {"options": {"direction": "BOTH"},
                                                       "needReview": False}}}, headers=auth)
    assert r.status_code == 200, r.text

    # The template changes: its profiles' locked fields follow, unlocked ones stay.
    (tmp_path / "b").mkdir()
    other_portal, _ = sides(tmp_path / "b")
    r = await c.patch(f"{tpls}/{tid}", json={
        "portal": {"kind": "testfile", "configuration": {"path": other_portal.path},
                   "credentials": {"token": other_portal.meta("token")}},
        "modules": {"contacts": {"options": {"direction": "FROM_PORTAL"}},
                    "tasks": {"options": {"direction": "TO_PORTAL"}}},
    }, headers=auth)
    assert r.status_code == 200 and r.json()["profiles"] == 1, r.text
    got = (await c.get(url, headers=auth)).json()
    assert got["portal"]["configuration"]["path"] == other_portal.path
    assert got["modules"]["contacts"]["options"]["direction"] == "FROM_PORTAL"
    assert got["modules"]["tasks"]["options"]["direction"] == "BOTH"  # unlocked: its own
    assert got["name"] == "renamed"
    done = await run_and_wait(c, url, auth)  # the re-sealed credential opens
    assert done["status"].get("errMessage") is None, done["status"]

    # Deleting the template leaves the profile as it is, unlocked.
    assert (await c.delete(f"{tpls}/{tid}", headers=auth)).status_code == 204
    r = await c.patch(url, json={"schedule": {"intervalType": 2, "enabled": False}},
                      headers=auth)
    assert r.status_code == 200 and r.json().get("templateId") is None, r.text


def signup(app_id: str, secret: str, org: str, user: str, ts: int | None = None,
           **extra: Any) -> dict[str, Any]:
    ts = int(time.time() * 1000) if ts is None else ts
    return {"appId": app_id, "compExtId": org, "companyName": "ABC Co.", "userExtId": user,
            "instanceUrl": "https://api.myplatform.test", "firstName": "John",
            "lastName": "Smith", "email": f"{user}@abc.test", "admin": False,
            "timeZoneInfo": "America/Los_Angeles", "requestTimestamp": ts,
            "apiHash": api_hash(secret, org, user, ts), **extra}


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:X".encode()).decode()}


async def test_signup_provisions_a_users_profiles_and_their_token_reaches_only_those(
        sync_hub: RunningHub, tmp_path: Path) -> None:
    c = sync_hub.client
    hub_id, auth = await sync_hub.create_hub("partner")
    other_hub, _ = await sync_hub.create_hub("someone-else")
    portal, mailbox = sides(tmp_path)
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncTemplates",
                     json=template_body(portal.path, mailbox.path, portal.meta("token"),
                                        mailbox.meta("token")), headers=auth)
    tid = r.json()["templateId"]
    app_url = f"/api/v1/hubs/{hub_id}/syncSignup"
    assert (await c.get(app_url, headers=auth)).status_code == 404
    r = await c.put(app_url, json={"templateIds": ["nosuch"]}, headers=auth)
    assert r.status_code == 404, r.text
    r = await c.put(app_url, json={"templateIds": [tid]}, headers=auth)
    assert r.status_code == 201, r.text
    app_id, secret = r.json()["appId"], r.json()["appSecret"]
    r = await c.get(app_url, headers=auth)
    assert r.status_code == 200 and "appSecret" not in r.json() and secret not in r.text

    # A hub-level profile the users must not see.
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", json=body(portal, mailbox),
                     headers=auth)
    hub_profile = r.json()["profileId"]

    async with httpx.AsyncClient(base_url=sync_hub.base_url, timeout=30) as anon:
        ts = int(time.time() * 1000)
        first = signup(app_id, secret, "c1647588", "u886450", ts)
        r = await anon.post("/api/v1/sync/signup", json=first)
        assert r.status_code == 200, r.text
        token, [pid] = r.json()["accessToken"], r.json()["profiles"]
        # The same signup again is a replay.
        r = await anon.post("/api/v1/sync/signup", json=first)
        assert r.status_code == 409, r.text
        for bad, code in ((signup(app_id, secret, "c1647588", "u886450", ts - 3_600_000), 401),
                          ({**signup(app_id, secret, "c1647588", "u2"), "userExtId": "u3"}, 401),
                          (signup(app_id, "wrong", "c1647588", "u886450"), 401),
                          (signup("nosuch", secret, "c1647588", "u886450"), 401),
                          ({"appId": app_id}, 400)):
            r = await anon.post("/api/v1/sync/signup", json=bad)
            assert r.status_code == code, (bad, r.text)
        r = await anon.post("/api/v1/sync/signup", json=signup(app_id, secret, "c1647588", "u2"))
        assert r.status_code == 200, r.text
        token2, [pid2] = r.json()["accessToken"], r.json()["profiles"]
        assert pid2 != pid

        profiles = f"/api/v1/hubs/{hub_id}/syncProfiles"
        for headers in ({"Authorization": f"Bearer {token}"}, basic(token)):
            r = await anon.get(f"{profiles}/{pid}", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["needReview"] == [] and r.json()["templateId"] == tid
            r = await anon.get(profiles, headers=headers)
            assert [p["profileId"] for p in r.json()["items"]] == [pid]
        user1 = {"Authorization": f"Bearer {token}"}
        for other in (pid2, hub_profile):
            assert (await anon.get(f"{profiles}/{other}", headers=user1)).status_code == 404
            r = await anon.post(f"{profiles}/{other}/run", json={}, headers=user1)
            assert r.status_code == 404
        r = await anon.get(f"/api/v1/hubs/{other_hub}/syncProfiles/{pid}", headers=user1)
        assert r.status_code == 404
        r = await anon.post(profiles, json=body(portal, mailbox), headers=user1)
        assert r.status_code == 403, r.text
        r = await anon.get(f"/api/v1/hubs/{hub_id}/syncTemplates", headers=user1)
        assert r.status_code == 403, r.text
        # The user runs their own profile.
        done = await run_and_wait(anon, f"{profiles}/{pid}", user1)
        assert done["status"].get("errMessage") is None, done["status"]
        assert (await anon.get(f"{profiles}/{pid2}",
                               headers={"Authorization": f"Bearer {token2}"})).status_code == 200

        # Signing up again (a newer timestamp): the same profile, a new token; the old
        # one stops working.
        r = await anon.post("/api/v1/sync/signup",
                            json=signup(app_id, secret, "c1647588", "u886450", ts + 1))
        assert r.status_code == 200 and r.json()["profiles"] == [pid], r.text
        assert (await anon.get(f"{profiles}/{pid}", headers=user1)).status_code == 401
        r = await anon.get(f"{profiles}/{pid}",
                           headers={"Authorization": f"Bearer {r.json()['accessToken']}"})
        assert r.status_code == 200

    # A new secret: signups under the old one fail.
    r = await c.put(app_url, json={"templateIds": [tid], "regenerateSecret": True},
                    headers=auth)
    assert r.status_code == 200 and r.json()["appSecret"] != secret
    r = await c.post("/api/v1/sync/signup", json=signup(app_id, secret, "c9", "u9"))
    assert r.status_code == 401
