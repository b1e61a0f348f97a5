"""Hubster compatibility mode through real HTTP on a real broker, with loopback providers.

Every request and answer example of the seed (tests/data/hubster_seed_examples.json) is
replayed against a hub in compat mode and compared field by field; the same requests on
a default hub get today's answers; the per-request and per-hub switches, and isolation
between hubs, are checked on their own.
"""

from __future__ import annotations

import copy
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from switchboard import hubster_compat
from switchboard.channels import CONFIG_TYPES
from switchboard.model import ChannelId
from tests.conftest import RunningHub, make_settings
from tests.fakes.messenger import FakeGraph
from tests.fakes.slack import FakeSlack
from tests.fakes.twilio import FakeTwilio

SEED = json.loads((Path(__file__).parent.parent / "data" / "hubster_seed_examples.json")
                  .read_text())
EXAMPLES: dict[str, dict[str, Any]] = {e["id"]: e for e in SEED["examples"]}
EXTENSIONS = {p.removeprefix("configuration.") for p in SEED["extensions"]}
GRAPH_VERSION = "v19.0"
APP_ID = "1001"
APP_SECRET = "meta-app-secret-" + uuid.uuid4().hex
# What an answer may hold besides a channel's stored fields (made by the hub, shown once).
GENERATED = {"publicSigningKey", "privateSigningKey", "webhookSecret", "inboundSecret",
             "inboundUrl"}


@dataclass
class Env:
    hub: RunningHub
    twilio: FakeTwilio
    graph: FakeGraph
    slack: FakeSlack


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    twilio = await FakeTwilio().start()
    graph = await FakeGraph(GRAPH_VERSION, require_proof=True).start()
    graph.add_app(APP_ID, APP_SECRET)
    slack = await FakeSlack().start()
    settings = make_settings(
        broker, twilio_api_url=twilio.url, public_url="https://hub.example.test",
        meta_graph_url=graph.url, meta_graph_version=GRAPH_VERSION,
        meta_verify_token="verify-" + uuid.uuid4().hex, meta_app_secret=APP_SECRET,
        slack_api_url=slack.url, slack_signing_secret="slack-" + uuid.uuid4().hex,
        slack_client_id=slack.client_id, slack_client_secret=slack.client_secret)
    hub = await RunningHub(settings).start()
    try:
        yield Env(hub, twilio, graph, slack)
    finally:
        await hub.stop()
        await slack.stop()
        await graph.stop()
        await twilio.stop()


async def new_hub(env: Env, **fields: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    r = await env.hub.client.post("/api/v1/hubs", headers=env.hub.admin,
                                  json={"name": "h-" + uuid.uuid4().hex[:8], **fields})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["hubId"], {"Authorization": f"Bearer {body['accessToken']}"}, body


def substituted(value: Any) -> Any:
    """`value` with the data file's `substitute` applied to every string."""
    if isinstance(value, dict):
        return {k: substituted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substituted(v) for v in value]
    if isinstance(value, str):
        return SEED["substitute"].get(value, value)
    return value


def with_credentials(env: Env, request: dict[str, Any]) -> dict[str, Any]:
    """A create request with the fake provider's credentials in place of the seed's."""
    body = substituted(copy.deepcopy(request))
    config = body["configuration"]
    if body["channelId"] == "TwilioSMS":
        sid, token = env.twilio.add_account()
        number = env.twilio.add_number(sid, "+1647" + str(random.randrange(10**6, 10**7)))
        config.update(accountSid=sid, authToken=token, numberSid=number.sid)
    elif body["channelId"] == "Messenger":
        page = env.graph.add_page(str(random.randrange(10**14, 10**15)), APP_ID)
        config["pageAccessToken"] = page.token
    elif body["channelId"] == "Slack":
        code, install = env.slack.grant("T" + uuid.uuid4().hex[:8].upper())
        install.user_token = "xoxp-" + uuid.uuid4().hex  # the seed's answer has one
        config["code"] = code
        config["state"] = f"{int(time.time())}{env.slack.client_secret}"  # the seed's rule
    return body


def chain(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The examples that make the integration `example` acts on, then `example`."""
    steps = [example]
    while "after" in steps[0]:
        steps.insert(0, EXAMPLES[steps[0]["after"]])
    return steps


async def replay(env: Env, example: dict[str, Any], hub_id: str, auth: dict[str, str],
                 **query: str) -> tuple[int, dict[str, Any], str]:
    """Run `example` (after the ones it needs) on `hub_id`; its status, answer and the
    integration's id."""
    c, iid = env.hub.client, ""
    status, answer = 0, {}
    for step in chain(example):
        if step["op"] == "create":
            r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
                             params=query, json=with_credentials(env, step["request"]))
        elif step["op"] == "update":
            r = await c.post(f"/api/v1/integrations/hubs/{iid}", headers=auth, params=query,
                             json=substituted(step["request"]))
        else:
            r = await c.get(f"/api/v1/integrations/{iid}", headers=auth, params=query)
        assert r.status_code < 300, (step["id"], r.text)
        status, answer = r.status_code, r.json()
        iid = answer["integrationId"]
    return status, answer, iid


def compare(want: Any, got: Any, example: dict[str, Any], path: str = "") -> None:
    """`got` has `want`'s keys (but for the example's `absent` and `extra`) and its values
    (but for the paths in `vary`, whose type must still match)."""
    if path in example.get("vary", ()):
        assert type(got) is type(want), (example["id"], path, got)
        return
    if isinstance(want, dict):
        assert isinstance(got, dict), (example["id"], path, got)

        def at(k: str) -> str:
            return f"{path}.{k}" if path else k

        wanted = {k for k in want if at(k) not in example.get("absent", ())}
        have = {k for k in got
                if at(k) not in example.get("extra", ()) and at(k) not in SEED["extensions"]}
        assert have == wanted, (example["id"], path, sorted(have ^ wanted))
        for k in wanted:
            compare(want[k], got[k], example, at(k))
        for k in want:
            if at(k) in example.get("absent", ()):
                assert k not in got, (example["id"], at(k))
        return
    assert got == substituted(want), (example["id"], path, got, want)


@pytest.mark.parametrize("example_id", list(EXAMPLES))
async def test_every_seed_example_replayed_in_compat_mode(env: Env, example_id: str) -> None:
    example = EXAMPLES[example_id]
    hub_id, auth, _ = await new_hub(env, compat="hubster")
    status, answer, _ = await replay(env, example, hub_id, auth)
    assert status == example["status"], answer
    want = example["answer"]
    if example["part"] == "configuration":
        answer = {"configuration": answer["configuration"]}
    compare(want, answer, example)
    if "inboundId" in want:  # the account the SMS arrive at
        assert answer["inboundId"] == answer["configuration"]["AcccountSid"]
    if example["op"] == "get":  # secrets stay secret in compat mode too
        config = answer["configuration"]
        assert "privateSigningKey" not in config
        for key in ("AuthToken", "PageAccessToken", "BotAccessToken", "AppAccessToken"):
            assert config.get(key, "********") == "********", key


@pytest.mark.parametrize("example_id", list(EXAMPLES))
async def test_same_requests_in_default_mode_answer_as_documented(env: Env,
                                                                   example_id: str) -> None:
    example = EXAMPLES[example_id]
    hub_id, auth, _ = await new_hub(env)
    status, answer, iid = await replay(env, example, hub_id, auth)
    # Today's answers: 201 on create, names, our camelCase keys, no inboundId.
    assert status == (201 if example["op"] == "create" else 200), answer
    assert isinstance(answer["channelId"], str) and isinstance(answer["integrationTypeId"], str)
    assert "inboundId" not in answer
    channel = ChannelId(answer["channelId"])
    ours = set(CONFIG_TYPES[channel].__struct_encode_fields__) | GENERATED
    assert set(answer["configuration"]) <= ours, sorted(set(answer["configuration"]) - ours)
    # The seed's example read back through the translation has the same keys.
    view = hubster_compat.READ if example["op"] == "get" else hubster_compat.WRITE
    seed = {"integrationId": "", "hubId": "", "name": "", "statusId": 3000,
            "integrationTypeId": answer["integrationTypeId"],
            "channelId": answer["channelId"], **substituted(example["answer"])}
    absent = {p.removeprefix("configuration.") for p in example.get("absent", ())}
    extra = {p.removeprefix("configuration.") for p in example.get("extra", ())}
    wanted = set(hubster_compat.from_hubster(seed, view)["configuration"]) - _ours(
        seed, absent, view)
    # Keys only ours (Slack's botUserId) are in today's answers, never in compat ones.
    hidden = {k.ours for k in hubster_compat.KEYS[channel] if k.hidden}
    got = set(answer["configuration"]) - _ours(seed, extra, view) - EXTENSIONS - hidden
    assert got == wanted, (example_id, sorted(got ^ wanted))
    # The one integration, read both ways: compat is the translation of today's answer.
    plain = (await env.hub.client.get(f"/api/v1/integrations/{iid}", headers=auth)).json()
    compat = (await env.hub.client.get(f"/api/v1/integrations/{iid}", headers=auth,
                                       params={"compat": "hubster"})).json()
    assert compat == hubster_compat.to_hubster(plain, hubster_compat.READ)


def _ours(seed: dict[str, Any], paths: set[str], view: hubster_compat.View) -> set[str]:
    """The seed's configuration keys at `paths`, spelled as ours."""
    return set(hubster_compat.from_hubster(
        {**seed, "configuration": {k: None for k in paths}}, view)["configuration"])


async def test_per_hub_and_per_request_switches_and_isolation(env: Env) -> None:
    c = env.hub.client
    direct = {"channelId": "Direct", "name": "desk",
              "configuration": {"integrationType": "Agent",
                                "webhookUrl": "https://example.test/hook"}}
    # A compat hub (set at creation) and a default one, side by side.
    compat_hub, compat_auth, made = await new_hub(env, compat="hubster")
    assert made["compat"] == "hubster"
    plain_hub, plain_auth, made = await new_hub(env)
    assert "compat" not in made
    r = await c.post(f"/api/v1/integrations/hubs/{compat_hub}", headers=compat_auth,
                     json=direct)
    assert r.status_code == 200 and r.json()["channelId"] == "Direct"
    compat_iid = r.json()["integrationId"]
    r = await c.post(f"/api/v1/integrations/hubs/{plain_hub}", headers=plain_auth, json=direct)
    assert r.status_code == 201
    plain_iid = r.json()["integrationId"]

    async def get(iid: str, auth: dict[str, str], **kw: Any) -> dict[str, Any]:
        r = await c.get(f"/api/v1/integrations/{iid}", headers=auth, **kw)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    # Each hub answers in its own mode: one hub's setting changes nothing of the other's.
    assert (await get(compat_iid, compat_auth))["channelId"] == 1
    assert (await get(plain_iid, plain_auth))["channelId"] == "Direct"
    listed = (await c.get(f"/api/v1/integrations/hubs/{compat_hub}",
                          headers=compat_auth)).json()
    assert [i["integrationTypeId"] for i in listed] == [3]
    listed = (await c.get(f"/api/v1/integrations/hubs/{plain_hub}", headers=plain_auth)).json()
    assert [i["integrationTypeId"] for i in listed] == ["Agent"]
    # The admin token sees each hub as it is set.
    assert (await get(compat_iid, env.hub.admin))["channelId"] == 1
    assert (await get(plain_iid, env.hub.admin))["channelId"] == "Direct"

    # Per request: ?compat=hubster or the Accept header on a default hub ...
    assert (await get(plain_iid, plain_auth, params={"compat": "hubster"}))["channelId"] == 1
    hubster_accept = {**plain_auth, "Accept": "text/plain;q=0.1, application/vnd.hubster+json"}
    assert (await get(plain_iid, hubster_accept))["channelId"] == 1
    # ... and ?compat=none on a compat hub (a plain JSON Accept keeps the hub's mode).
    assert (await get(compat_iid, compat_auth, params={"compat": "none"}))["channelId"] \
        == "Direct"
    assert (await get(compat_iid, {**compat_auth, "Accept": "application/json"})
            )["channelId"] == 1
    r = await c.post(f"/api/v1/integrations/hubs/{compat_hub}", headers=compat_auth,
                     params={"compat": "none"}, json={**direct, "name": "desk 2"})
    assert r.status_code == 201 and r.json()["channelId"] == "Direct"
    r = await c.post(f"/api/v1/integrations/hubs/{plain_hub}", headers=plain_auth,
                     params={"compat": "hubster"}, json={**direct, "name": "desk 2"})
    assert r.status_code == 200 and r.json()["integrationTypeId"] == "Agent"
    # The request's switch changed neither hub.
    assert (await get(plain_iid, plain_auth))["channelId"] == "Direct"
    assert (await get(compat_iid, compat_auth))["channelId"] == 1

    # Per hub by update: on, shown in the hub's GET, then off again.
    r = await c.patch(f"/api/v1/hubs/{plain_hub}", headers=plain_auth,
                      json={"compat": "hubster"})
    assert r.status_code == 200 and r.json()["compat"] == "hubster"
    hub = (await c.get(f"/api/v1/hubs/{plain_hub}", headers=plain_auth)).json()
    assert hub["compat"] == "hubster"
    assert (await get(plain_iid, plain_auth))["channelId"] == 1
    assert (await get(compat_iid, compat_auth))["channelId"] == 1
    r = await c.patch(f"/api/v1/hubs/{plain_hub}", headers=plain_auth, json={"compat": None})
    assert r.status_code == 200 and "compat" not in r.json()
    assert "compat" not in (await c.get(f"/api/v1/hubs/{plain_hub}", headers=plain_auth)).json()
    assert (await get(plain_iid, plain_auth))["channelId"] == "Direct"
    # Updating something else leaves the mode as it is.
    r = await c.patch(f"/api/v1/hubs/{compat_hub}", headers=compat_auth,
                      json={"retrySchedule": "0,5"})
    assert r.status_code == 200 and r.json()["compat"] == "hubster"
    r = await c.patch(f"/api/v1/hubs/{compat_hub}", headers=compat_auth, json={"compat": "none"})
    assert r.status_code == 200 and "compat" not in r.json()

    # Bad switches are 400s that name the field.
    for params in ({"compat": "soap"}, {"compat": ""}, {"compat": "x" * 5000}):
        r = await c.get(f"/api/v1/integrations/{plain_iid}", headers=plain_auth, params=params)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0] == {**r.json()["errors"][0], "code": "invalid_compat",
                                         "field": "compat"}
    for body in ({"compat": "hubsterx"}, {"compat": 1}):
        r = await c.patch(f"/api/v1/hubs/{plain_hub}", headers=plain_auth, json=body)
        assert r.status_code == 400, r.text
    r = await c.post("/api/v1/hubs", headers=env.hub.admin, json={"name": "x", "compat": "soap"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "compat"


async def test_compat_requests_take_the_seeds_spellings(env: Env) -> None:
    c = env.hub.client
    hub_id, auth, _ = await new_hub(env, compat="hubster")
    # The spellings of the seed's GET answer, as a client that read one back would send.
    sms = with_credentials(env, EXAMPLES["create-twiliosms"]["request"])
    given = sms["configuration"]
    sms["configuration"] = {"AcccountSid": given["accountSid"], "AuthToken": given["authToken"],
                            "NumberSid": given["numberSid"],
                            "Capabilities": {"Mms": False, "Sms": True, "Voice": True}}
    r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json=sms)
    assert r.status_code == 200, r.text
    assert r.json()["configuration"]["accountSid"] == given["accountSid"]
    r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
        "channelId": 106, "name": "chat",
        "configuration": {"AllowedOrigins": ["hubster.io"], "Echo": False}})
    assert r.status_code == 200, r.text
    chat = r.json()
    assert chat["configuration"] == {"AllowedOrigins": ["hubster.io"], "Echo": False}
    # Update with the GET's spellings too.
    r = await c.post(f"/api/v1/integrations/hubs/{chat['integrationId']}", headers=auth,
                     json={"configuration": {"allowedOrigins": ["a.hubster.io"], "echo": True}})
    assert r.status_code == 200 and r.json()["configuration"]["AllowedOrigins"] == [
        "a.hubster.io"]
    # Two spellings of one key, and unknown keys, are 400s naming the field.
    r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
        "channelId": "WebChat", "name": "chat 2",
        "configuration": {"AllowedOrigins": ["x.io"], "allowedOrigins": ["y.io"]}})
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "configuration.allowedOrigins"
    r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
        "channelId": "WebChat", "name": "chat 2",
        "configuration": {"AllowedOrigins": ["x.io"], "Colour": "red"}})
    assert r.status_code == 400, r.text
    # Outside compat mode the seed's GET spellings are refused as before.
    plain_hub, plain_auth, _ = await new_hub(env)
    sms = with_credentials(env, EXAMPLES["create-twiliosms"]["request"])
    given = sms["configuration"]
    sms["configuration"] = {"AcccountSid": given["accountSid"], "authToken": given["authToken"],
                            "numberSid": given["numberSid"]}
    r = await c.post(f"/api/v1/integrations/hubs/{plain_hub}", headers=plain_auth, json=sms)
    assert r.status_code == 400, r.text


async def test_private_keys_never_read_back_in_compat_mode(env: Env) -> None:
    c = env.hub.client
    hub_id, auth, _ = await new_hub(env, compat="hubster")
    made = {}
    for example in ("create-direct", "create-system"):
        body = {**with_credentials(env, EXAMPLES[example]["request"]), "name": example}
        r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json=body)
        assert r.status_code == 200, r.text
        made[example] = r.json()
        assert made[example]["configuration"]["privateSigningKey"].startswith("whsk_")
    listed = (await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)).json()
    assert len(listed) == 2
    for item in listed:
        assert "privateSigningKey" not in item["configuration"]
        assert item["configuration"]["publicSigningKey"].startswith("whpk_")
    for one in made.values():
        got = (await c.get(f"/api/v1/integrations/{one['integrationId']}", headers=auth)).json()
        assert "privateSigningKey" not in got["configuration"]
