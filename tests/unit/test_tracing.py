"""The pure part of tracing: W3C traceparent on record headers, attributes, settings."""

from __future__ import annotations

import pytest

from switchboard.errors import ConfigError
from switchboard.record_mac import RecordGuard, RecordMac
from switchboard.settings import Settings
from switchboard.tracing import (
    TRACEPARENT,
    TraceParent,
    attempt_attributes,
    format_traceparent,
    http_attributes,
    parse_traceparent,
    traceparent_header,
    traceparent_of,
    traces_url,
    with_traceparent,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_the_spec_example() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed == TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert parsed.sampled
    assert parse_traceparent(VALID.encode()) == parsed
    assert format_traceparent(*parsed) == VALID


@pytest.mark.parametrize("value", [
    None, "", "00", VALID[:-1], VALID + "0", VALID.upper(),
    "ff" + VALID[2:],  # version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has no more
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # later version: dash
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    " " + VALID[1:], "\u00e9" * 55, b"\xff" * 55, "01-" + "a" * 600,
])
def test_refuses_anything_else(value: str | bytes | None) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_keeps_its_first_fields() -> None:
    later = "cc" + VALID[2:] + "-what-comes-next"
    parsed = parse_traceparent(later)
    assert parsed is not None and parsed.span_id == 0x00F067AA0BA902B7


def test_record_headers() -> None:
    assert traceparent_header(None) is None
    assert traceparent_header(b"x") == [(TRACEPARENT, b"x")]
    headers = [("sb-mac", b"m"), (TRACEPARENT, b"a"), (TRACEPARENT, b"b")]
    assert traceparent_of(headers) == b"a"
    assert traceparent_of(None) is None
    assert traceparent_of([("sb-mac", b"m")]) is None
    assert with_traceparent(headers, b"c") == [("sb-mac", b"m"), (TRACEPARENT, b"c")]


def test_traceparent_is_outside_the_record_mac() -> None:
    """A traceparent header neither breaks a record's MAC nor is protected by it: what a
    forged one can do is attach spans to another trace, nothing the readers act on."""
    guard = RecordGuard(RecordMac([b"k" * 32]), "p.")
    signed = guard.sign_headers("p.deliveries", b"key", b"value", [(TRACEPARENT, b"one")])
    assert signed is not None and (TRACEPARENT, b"one") in signed
    assert guard.verdict("p.deliveries", b"key", b"value", signed) is None
    forged = with_traceparent(signed, VALID.encode())
    assert guard.verdict("p.deliveries", b"key", b"value", forged) is None
    assert guard.verdict("p.deliveries", b"key", b"other", forged) == "bad_mac"


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp") == "https://c.example/otlp/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_settings() -> None:
    env = {"SWITCHBOARD_OTEL_ENDPOINT": "http://collector:4318",
           "SWITCHBOARD_OTEL_SAMPLE_RATIO": "0.25",
           "SWITCHBOARD_OTEL_SERVICE_NAME": "sb-router"}
    s = Settings.from_env(env)
    assert (s.otel_endpoint, s.otel_sample_ratio, s.otel_service_name) == (
        "http://collector:4318", 0.25, "sb-router")
    assert Settings.from_env({}).otel_endpoint == ""  # off by default
    for bad in ({"SWITCHBOARD_OTEL_ENDPOINT": "collector:4318"},
                {"SWITCHBOARD_OTEL_ENDPOINT": "ftp://collector"},
                {"SWITCHBOARD_OTEL_ENDPOINT": "http://c:99999"},
                {"SWITCHBOARD_OTEL_SAMPLE_RATIO": "1.5"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_http_attributes_leave_out_path_and_query() -> None:
    attrs = http_attributes("post", "https://acme.syncromsp.com/api/v1/tickets?api_key=s3cr3t")
    assert attrs == {"http.request.method": "POST", "url.scheme": "https",
                     "server.address": "acme.syncromsp.com", "server.port": 443}
    assert "s3cr3t" not in repr(attrs)
    assert http_attributes("GET", "http://[::1")["http.request.method"] == "GET"


def test_attempt_attributes() -> None:
    assert attempt_attributes(2, "retry", 503, "http_503") == {
        "switchboard.attempt": 2, "switchboard.outcome": "retry",
        "http.response.status_code": 503, "switchboard.reason": "http_503"}
    assert attempt_attributes(1, "retry", None, "") == {
        "switchboard.attempt": 1, "switchboard.outcome": "retry"}
