"""Trace context on Kafka records and the attributes of the hub's spans, pure.

One trace follows an activity from the ingress request through `activities` and
`deliveries` (and `deliveries.parked`) to every delivery attempt: each record carries a
W3C ``traceparent`` header (https://www.w3.org/TR/trace-context/) naming the span that
wrote it. The OpenTelemetry SDK is wired in `switchboard.services.tracing`, and only when
``SWITCHBOARD_OTEL_ENDPOINT`` is set; this module imports none of it.

Record headers are not covered by the record MAC (`switchboard.record_mac` signs topic,
key and value), so a ``traceparent`` is untrusted input: it is parsed strictly, and all
a forged one can do is attach spans to another trace or ask for them to be sampled.
Attributes carry ids only: never a secret, a URL path or query, or message text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from switchboard.errors import ConfigError

__all__ = [
    "TRACEPARENT",
    "TraceParent",
    "activity_attributes",
    "attempt_attributes",
    "check_settings",
    "delivery_attributes",
    "format_traceparent",
    "http_attributes",
    "merge",
    "messaging_attributes",
    "parse_traceparent",
    "traceparent_header",
    "traceparent_of",
    "traces_url",
    "with_traceparent",
]

TRACEPARENT: Final = "traceparent"
# Version 00 is exactly this long; a later version may append fields after a dash.
_LENGTH = 55
# A header longer than this is refused unread (the spec's own fields take 55).
_MAX_LENGTH = 512
_FORMAT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

Attributes = dict[str, str | int | bool]


class TraceParent(NamedTuple):
    """A parsed ``traceparent``: the trace, the parent span, the flags (bit 0: sampled)."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: bytes | str | None) -> TraceParent | None:
    """The trace context in `value`, or None if it is absent or not a valid one.

    Strict, as the spec asks: lowercase hex, non-zero ids, version ``ff`` invalid, and a
    version ``00`` header exactly 55 characters.
    """
    if value is None or len(value) < _LENGTH or len(value) > _MAX_LENGTH:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _FORMAT.match(value)
    if match is None:
        return None
    version, trace, span, flags = match.groups()
    if version == "ff" or (version == "00" and len(value) != _LENGTH):
        return None
    if len(value) > _LENGTH and value[_LENGTH] != "-":
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16))


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """A version-00 ``traceparent`` header value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 0xFF:02x}"


def traceparent_of(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    """The raw ``traceparent`` of a Kafka record's headers (the first one), if any."""
    for name, value in headers or ():
        if name == TRACEPARENT:
            return value
    return None


def traceparent_header(value: bytes | None) -> list[tuple[str, bytes]] | None:
    """Kafka record headers carrying `value` on (None when there is nothing to carry)."""
    return None if value is None else [(TRACEPARENT, value)]


def with_traceparent(headers: Iterable[tuple[str, bytes]] | None,
                     value: bytes) -> list[tuple[str, bytes]]:
    """`headers` with their ``traceparent`` (if any) replaced by `value`."""
    return [*(h for h in headers or () if h[0] != TRACEPARENT), (TRACEPARENT, value)]


def traces_url(endpoint: str) -> str:
    """Where spans are posted: an OTLP/HTTP base URL gets ``/v1/traces`` (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` does); a URL already naming that path is kept."""
    endpoint = endpoint.strip()
    if urlsplit(endpoint).path.rstrip("/").endswith("/v1/traces"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def check_settings(endpoint: str, sample_ratio: float) -> None:
    """Refuse an endpoint that is not an http(s) URL, or a ratio outside [0, 1]."""
    if endpoint:
        try:
            parts = urlsplit(endpoint.strip())
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("SWITCHBOARD_OTEL_ENDPOINT must be an http(s) URL, such as "
                              "http://collector:4318")
    if not 0.0 <= sample_ratio <= 1.0:
        raise ConfigError("SWITCHBOARD_OTEL_SAMPLE_RATIO must be between 0 and 1")


def activity_attributes(hub_id: str, integration_id: str, channel: str,
                        activity_id: str | None = None,
                        activity_type: str | None = None) -> Attributes:
    """Who an activity belongs to: ids and names, nothing it says."""
    attrs: Attributes = {
        "switchboard.hub.id": hub_id,
        "switchboard.integration.id": integration_id,
        "switchboard.channel": channel,
    }
    if activity_id is not None:
        attrs["switchboard.activity.id"] = activity_id
    if activity_type is not None:
        attrs["switchboard.activity.type"] = activity_type
    return attrs


def delivery_attributes(hub_id: str, destination_id: str, delivery_id: str,
                        activity_id: str) -> Attributes:
    """Which delivery: ids only."""
    return {
        "switchboard.hub.id": hub_id,
        "switchboard.destination.id": destination_id,
        "switchboard.delivery.id": delivery_id,
        "switchboard.activity.id": activity_id,
    }


def attempt_attributes(attempt: int, outcome: str, status: int | None,
                       reason: str) -> Attributes:
    """How one attempt went: its number, outcome, the answer's status and our reason
    code (never the answer's body)."""
    attrs: Attributes = {
        "switchboard.attempt": attempt,
        "switchboard.outcome": outcome,
    }
    if status is not None:
        attrs["http.response.status_code"] = status
    if reason:
        attrs["switchboard.reason"] = reason
    return attrs


def http_attributes(method: str, url: str) -> Attributes:
    """An outgoing request: method, scheme, host and port. Not the path or query, which
    may hold credentials (a Syncro inbound secret, a Graph access token)."""
    attrs: Attributes = {"http.request.method": method.upper()}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return attrs
    if parts.scheme:
        attrs["url.scheme"] = parts.scheme
    if parts.hostname:
        attrs["server.address"] = parts.hostname
        attrs["server.port"] = port or (443 if parts.scheme == "https" else 80)
    return attrs


def messaging_attributes(operation: str, topic: str, partition: int | None = None,
                         offset: int | None = None) -> Attributes:
    """A Kafka produce or consume (OpenTelemetry's messaging conventions)."""
    attrs: Attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
    }
    if partition is not None:
        attrs["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attrs["messaging.kafka.offset"] = offset
    return attrs


def merge(*parts: Mapping[str, str | int | bool]) -> Attributes:
    """One attribute dict from several."""
    out: Attributes = {}
    for part in parts:
        out.update(part)
    return out
