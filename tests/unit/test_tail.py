"""`switchboard tail`'s pure part: a record as one line, the filters, where the broker is."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from switchboard.errors import ConfigError
from switchboard.model import (
    Activity,
    Card,
    CarouselMessage,
    DeadLetter,
    Delivery,
    Event,
    ImageMessage,
    Sender,
    TextMessage,
)
from switchboard.services.cli_broker import key_source, resolve_target
from switchboard.tail import as_json, describe, format_line, preview, printable, wanted

T = 1_746_180_847_123  # 2025-05-02 10:14:07.123 UTC


def _activity(**kw: object) -> Activity:
    values: dict[str, object] = dict(
        activity_id="act-1", hub_id="h1", integration_id="i1", channel_id="Direct",
        type="message:customer", conversation_id="c1", sender=Sender(id="u"), timestamp=T,
        message=TextMessage(text="hello"))
    values.update(kw)
    return Activity(**values)  # type: ignore[arg-type]


def test_an_activity_is_one_line_with_names_where_known() -> None:
    line = describe("activities", msgspec.json.encode(_activity()))
    assert line is not None
    assert format_line(line) == '2025-05-02 10:14:07.123  h1  i1  message:customer  act-1  "hello"'
    assert format_line(line, {"h1": "acme"}, {"i1": "site"}, "odd") == (
        '2025-05-02 10:14:07.123  acme  site  message:customer  act-1  "hello"  [odd]')


def test_deliveries_and_dead_letters_name_their_destination() -> None:
    d = Delivery(delivery_id="msg_1", hub_id="h1", destination_id="i2", conversation_id="c1",
                 activity=_activity(), created_at=T)
    line = describe("deliveries", msgspec.json.encode(d))
    assert line is not None and line.integration_id == "i2"
    assert format_line(line, {}, {"i2": "desk"}).split("  ")[1:] == [
        "h1", "→ desk", "message:customer", "msg_1", '"hello"']
    dead = DeadLetter(delivery=d, reason="gone", attempts=1, last_status=410, dead_at=T + 5)
    line = describe("dead", msgspec.json.encode(dead))
    assert line is not None and line.at_ms == T + 5
    assert line.what == "dead:gone (1 attempts, last 410)"
    # A record of another kind, a tombstone or a marker: no line.
    assert describe("dead", msgspec.json.encode(d)) is None
    assert describe("activities", None) is None
    assert describe("deliveries", b"mark") is None


def test_previews_stay_short_and_cannot_drive_the_terminal() -> None:
    assert preview(_activity(message=TextMessage(text="a\x1b[2Jb\nc\x9bd"))) == '"a?[2Jb c?d"'
    long = preview(_activity(message=TextMessage(text="x" * 500)))
    assert len(long) == 62 and long.endswith('…"')
    assert preview(_activity(message=ImageMessage(url="https://e.x/a.png"))) == \
        "[image] https://e.x/a.png"
    assert preview(_activity(message=CarouselMessage(cards=[Card(title="a"), Card(title="b")]))
                   ) == "[carousel of 2]"
    event = _activity(type="event:seen", message=None, event=Event(name="seen", ref="act-0"))
    assert preview(event) == "ref=act-0"
    assert printable("tab\there\u202e") == "tab here?"
    # A hub name is tenant input too.
    line = describe("activities", msgspec.json.encode(_activity()))
    assert line is not None and "\x1b" not in format_line(line, {"h1": "evil\x1b[31m"})


def test_filters() -> None:
    line = describe("activities", msgspec.json.encode(_activity()))
    assert line is not None
    assert wanted(line, None, None) and wanted(line, {"h1"}, None)
    assert wanted(line, {"h1"}, {"i1"}) and not wanted(line, {"h2"}, None)
    assert not wanted(line, None, {"i2"})


def test_json_lines_are_ascii() -> None:
    raw = json.dumps({"text": "caf\u00e9 \x9b"}).encode()
    out = as_json(raw)
    assert out.isascii() and json.loads(out) == {"text": "caf\u00e9 \x9b"}
    assert json.loads(as_json(b"mark")) == "mark"


def test_the_broker_comes_from_the_flag_the_environment_or_dev(tmp_path: Path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    assert resolve_target("f:1", None, env).bootstrap == "f:1"
    assert resolve_target(None, None, env).source == "KAFKA_BOOTSTRAP_SERVERS"
    with pytest.raises(ConfigError, match="pass --bootstrap"):
        resolve_target(None, str(tmp_path), {})
    (tmp_path / "dev.json").write_text(json.dumps({
        "pid": 1, "url": "http://127.0.0.1:8099", "bootstrap": "127.0.0.1:5555",
        "broker": "tansu", "brokerPid": 2}))
    target = resolve_target(None, None, {"SWITCHBOARD_DATA_DIR": str(tmp_path)})
    assert (target.bootstrap, target.kind, target.api_url) == (
        "127.0.0.1:5555", "tansu", "http://127.0.0.1:8099")
    # No key in the environment: a Tansu dev keeps none on disk; a Kafka dev's is used.
    assert key_source(target, {}) == ("no key set", None)
    (tmp_path / "dev-secrets.json").write_text(json.dumps({"secret_key": "k=="}))
    assert key_source(target, {}) == (str(tmp_path / "dev-secrets.json"), "k==")
    assert key_source(target, {"SWITCHBOARD_SECRET_KEY": "x"}) == (
        "SWITCHBOARD_SECRET_KEY", None)
    (tmp_path / "dev.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"dev\.json"):
        resolve_target(None, str(tmp_path), {})
