"""The CLI's pure parts: hub.yaml compared with the API's answers, dev.json and what a new
dev makes of it, and which key `receive` checks a path with."""

from __future__ import annotations

import time

import pytest

from switchboard import devstate, webhooks
from switchboard.errors import BadRequest
from switchboard.hubfile import (
    DeclaredHub,
    DeclaredIntegration,
    hub_patch,
    integration_differences,
    parse_hub_file,
)
from switchboard.keys import generate_signing_keypair
from switchboard.receiver_keys import (
    NO_KEY_AT_ALL,
    NO_KEY_FOR_PATH,
    keys_by_webhook_path,
    parse_path_key,
    ring_from,
    verdict,
)

# ---- hub.yaml against the API ---------------------------------------------------------

DESK = {"integrationId": "i1", "channelId": "Direct", "name": "desk", "statusId": 3000,
        "configuration": {"integrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/a",
                          "publicSigningKey": "whpk_x"}}


def _declared(**config: object) -> DeclaredIntegration:
    return DeclaredIntegration(name="desk", channel_id="direct",
                               configuration={"integrationType": "agent",
                                              "webhookUrl": "http://127.0.0.1:9/a", **config})


def test_an_integration_as_declared_is_unchanged_however_it_is_spelled() -> None:
    assert integration_differences(_declared(), DESK) == []
    # Defaults said out loud, a numeric channel code, request-only flags: still the same.
    same = DeclaredIntegration(name="desk", channel_id=1, configuration={
        "IntegrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/a", "echo": False,
        "signatureScheme": "standard", "revokePrevious": False})
    assert integration_differences(same, DESK) == []


def test_what_differs_is_named() -> None:
    assert integration_differences(_declared(echo=True), DESK) == ["configuration"]
    moved = DeclaredIntegration(name="desk", channel_id="Direct", status_id=3002,
                                configuration={"integrationType": "Agent"})
    # No webhookUrl any more is a change too (a replacing update would drop it).
    assert integration_differences(moved, DESK) == ["statusId", "configuration"]
    other = DeclaredIntegration(name="Desk", channel_id="System", configuration={})
    assert integration_differences(other, DESK) == ["channelId", "name"]
    # A configuration the hub would refuse is "changed": the hub then says what is wrong.
    assert integration_differences(_declared(echo="yes"), DESK) == ["configuration"]


def test_a_replacing_update_keeps_the_integration_type_so_omitting_it_is_no_change() -> None:
    bare = DeclaredIntegration(name="desk", channel_id="Direct",
                               configuration={"webhookUrl": "http://127.0.0.1:9/a"})
    assert integration_differences(bare, DESK) == []


def test_provider_configurations_are_not_compared() -> None:
    current = {"channelId": "Slack", "name": "s", "statusId": 3000,
               "configuration": {"botAccessToken": "********", "teamId": "T1"}}
    declared = DeclaredIntegration(name="s", channel_id="Slack",
                                   configuration={"code": "abc", "state": "x"})
    assert integration_differences(declared, current) == []


def test_hub_patch_names_only_what_differs() -> None:
    current = {"hubId": "h", "name": "acme", "compat": "hubster"}
    assert hub_patch(DeclaredHub(name="acme"), current) == {}
    assert hub_patch(DeclaredHub(name="acme", compat="hubster"), current) == {}
    assert hub_patch(DeclaredHub(name="Acme", compat="none"), current) == {
        "name": "Acme", "compat": "none"}
    assert hub_patch(DeclaredHub(name="acme", compat="none"), {"name": "acme"}) == {}


@pytest.mark.parametrize(("text", "says"), [
    ("hubs:\n  - name: a\n   x: 1\n", "not valid YAML: line 3, column 4"),
    ("- a\n", "a `hubs:` list"),
    ("hubs:\n  - {name: a}\n  - {name: A}\n", "hub 'A' is declared twice"),
    ("hubs:\n  - name: a\n    integrations:\n"
     "      - {name: x, channelId: Direct, configuration: {}}\n"
     "      - {name: X, channelId: Direct, configuration: {}}\n", "'x' is declared twice"),
    ("hubs:\n  - {name: a, compat: maybe}\n", "$.hubs[0].compat"),
])
def test_a_bad_hub_file_says_where(text: str, says: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_hub_file(text)
    assert says in info.value.description and "\n" not in info.value.description


def test_steps_count_hubs_and_integrations() -> None:
    parsed = parse_hub_file("hubs:\n  - name: a\n    integrations:\n"
                            "      - {name: x, channelId: Direct, configuration: {}}\n"
                            "  - name: b\n")
    assert parsed.steps() == 3


# ---- dev.json --------------------------------------------------------------------------

STATE = devstate.DevState(pid=10, url="http://127.0.0.1:8080", bootstrap="127.0.0.1:9092",
                          broker="tansu", broker_pid=11)


def test_dev_json_has_exactly_the_agreed_fields() -> None:
    assert devstate.encode(STATE) == (b'{"pid":10,"url":"http://127.0.0.1:8080",'
                                      b'"bootstrap":"127.0.0.1:9092","broker":"tansu",'
                                      b'"brokerPid":11}')
    assert devstate.decode(devstate.encode(STATE)) == STATE
    assert devstate.decode(b"{not json") is None


def test_a_leftover_is_named_with_its_fix() -> None:
    def broker(pid: int, kind: str) -> bool:
        return True

    def every(pid: int) -> bool:
        return True

    def only_broker(pid: int) -> bool:
        return pid == 11

    def none(pid: int) -> bool:
        return False

    running = devstate.leftover_problem(STATE, 99, every, broker, "/d")
    assert running is not None and "another `switchboard dev` (pid 10)" in running
    assert "kill 10" in running
    left = devstate.leftover_problem(STATE, 99, only_broker, broker, "/d")
    assert left is not None and "(pid 11, 127.0.0.1:9092)" in left and "`kill 11`" in left
    # A pid reused by something that is not a broker, or nothing alive: no problem.
    assert devstate.leftover_problem(STATE, 99, only_broker, lambda p, k: False, "/d") is None
    assert devstate.leftover_problem(STATE, 99, none, broker, "/d") is None
    assert devstate.leftover_problem(None, 99, every, broker, "/d") is None


def test_broker_command_lines_are_recognised() -> None:
    assert devstate.looks_like_broker(["/x/bin/tansu", "broker", "--x"], "tansu")
    assert not devstate.looks_like_broker(["/bin/bash", "broker"], "tansu")
    assert devstate.looks_like_broker(["java", "-cp", "x", "kafka.Kafka", "p"], "kafka")
    assert not devstate.looks_like_broker([], "kafka")


# ---- receive's keys ---------------------------------------------------------------------


def _signed(secret: str, body: bytes = b"{}") -> dict[str, str]:
    return webhooks.Signer(ed25519=[secret]).headers("msg_1", int(time.time()), body)


def test_each_path_is_checked_with_its_own_key() -> None:
    agent, customer = generate_signing_keypair(), generate_signing_keypair()
    ring = ring_from([], [f"/agent={agent.public}", f"customer/={customer.public}"])
    now = int(time.time())
    assert verdict(ring, "/agent", _signed(agent.secret), b"{}", now) == "signature OK"
    assert verdict(ring, "/customer", _signed(customer.secret), b"{}", now) == "signature OK"
    assert verdict(ring, "/customer", _signed(agent.secret), b"{}", now) == \
        "signature REJECTED: invalid_signature"
    assert verdict(ring, "/audit", _signed(agent.secret), b"{}", now) == NO_KEY_FOR_PATH
    assert verdict(ring_from([], []), "/a", _signed(agent.secret), b"{}", now) == NO_KEY_AT_ALL
    # Keys looked up at the hub, none there yet for this path: no key for it.
    assert verdict(ring_from([], [], {}), "/a", {}, b"{}", now) == NO_KEY_FOR_PATH
    anywhere = ring_from([customer.public, agent.public], [])
    assert verdict(anywhere, "/x", _signed(agent.secret), b"{}", now) == "signature OK"


def test_keys_by_webhook_path_from_the_api() -> None:
    listed = [
        {"configuration": {"webhookUrl": "http://127.0.0.1:9000/agent", "publicSigningKey": "a"}},
        {"configuration": {"webhookUrl": "http://other:1/agent/", "publicSigningKey": "b"}},
        {"configuration": {"publicSigningKey": "c"}},  # websocket delivery: no path
        {"configuration": {"webhookUrl": "https://x.test/", "publicSigningKey": "d"}},
    ]
    assert keys_by_webhook_path(listed) == {"/agent": ["a", "b"], "/": ["d"]}


@pytest.mark.parametrize(("text", "says"), [
    ("whpk_only", "PATH=PUBLICKEY"),
    ("/a=", "PATH=PUBLICKEY"),
    ("/a=whsk_abc", "this is a privateSigningKey"),
    ("/a=whpk_!!", "not valid base64"),
])
def test_a_bad_path_key_says_what_is_wanted(text: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_path_key(text)
    assert says in str(info.value)
    assert parse_path_key(f"a/b/={generate_signing_keypair().public}")[0] == "/a/b"
