"""OpenTelemetry tracing end to end: one trace from the ingress request through Kafka to
each delivery attempt, exported over OTLP/HTTP to a collector on loopback; and nothing at
all when `SWITCHBOARD_OTEL_ENDPOINT` is empty."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port
from switchboard.tracing import parse_traceparent
from tests.conftest import RunningHub, make_settings
from tests.support import LoopbackServer, Receiver, message, sign_with_cryptography

# A caller's own trace context on the ingress request: linked, never our parent.
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Span:
    name: str
    kind: int
    trace_id: int
    span_id: int
    parent: int
    attrs: dict[str, Any]
    links: list[tuple[int, int]]
    error: bool


class Collector:
    """An OTLP/HTTP trace receiver on 127.0.0.1: POST /v1/traces, protobuf."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spans: list[Span] = []
        self.raw = b""
        app = Starlette(routes=[Route("/v1/traces", self._export, methods=["POST"])])
        self._http = LoopbackServer(app, self.port)

    async def _export(self, request: Request) -> Response:
        body = await request.body()
        self.raw += body
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(Span(
                        s.name, s.kind, int.from_bytes(s.trace_id, "big"),
                        int.from_bytes(s.span_id, "big"),
                        int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else 0,
                        {a.key: _value(a.value) for a in s.attributes},
                        [(int.from_bytes(lk.trace_id, "big"), int.from_bytes(lk.span_id, "big"))
                         for lk in s.links],
                        s.status.code == 2))
        return Response(ExportTraceServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    async def start(self) -> Collector:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


async def _hub_with_desk(hub: RunningHub, receiver: Receiver) -> tuple[dict, dict]:
    hub_id, auth = await hub.create_hub()
    customer = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/customer"})
    agent = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
    return customer, agent


async def _send(hub: RunningHub, customer: dict, text: str,
                extra: dict[str, str] | None = None) -> str:
    body = message(text)
    headers = sign_with_cryptography(customer["configuration"]["privateSigningKey"], body)
    r = await hub.client.post(f"/ingress/{customer['integrationId']}", content=body,
                              headers={**headers, **(extra or {})})
    assert r.status_code == 202, r.text
    activity_id: str = r.json()["activityId"]
    return activity_id


async def test_one_trace_from_ingress_to_every_attempt(broker: Any) -> None:
    collector = await Collector().start()
    # The desk's first attempt fails (503): the retry is parked on deliveries.parked and
    # drained from there, so the parked record must carry the trace on too.
    receiver = await Receiver(
        lambda path, n: (503, {}, 0.0) if path == "/agent" and n == 0 else (200, {}, 0.0)
    ).start()
    hub = await RunningHub(make_settings(
        broker, otel_endpoint=collector.url, otel_service_name="sb-test",
        retry_inline_max_s=0.01, circuit_failures=1000)).start()
    try:
        customer, agent = await _hub_with_desk(hub, receiver)
        # Refused before authentication: no span (an unsigned flood costs no spans).
        r = await hub.client.post(f"/ingress/{customer['integrationId']}",
                                  content=message("unsigned"),
                                  headers={"content-type": "application/json"})
        assert r.status_code == 401
        activity_id = await _send(hub, customer, "hello, my order is late",
                                  {"traceparent": CALLER})
        got = (await receiver.wait_for("/agent", 1))[0]
        assert receiver.attempts["/agent"] == 2
        assert got.json["activity"]["activityId"] == activity_id
        sent = parse_traceparent(got.headers.get("traceparent"))
        assert sent is not None and sent.sampled
    finally:
        await hub.stop()  # exports what is queued
        await receiver.stop()
        await collector.stop()

    (ingress,) = collector.named("POST /ingress/{integrationId}")
    assert ingress.attrs["switchboard.activity.id"] == activity_id
    trace_id = ingress.trace_id
    assert ingress.kind == PbSpan.SPAN_KIND_SERVER and ingress.parent == 0
    assert ingress.attrs["switchboard.integration.id"] == customer["integrationId"]
    assert ingress.attrs["switchboard.hub.id"] == customer["hubId"]
    assert ingress.attrs["switchboard.channel"] == "Direct"
    assert ingress.attrs["http.response.status_code"] == 202
    caller = parse_traceparent(CALLER)
    assert caller is not None and trace_id != caller.trace_id  # not the caller's trace...
    assert ingress.links == [(caller.trace_id, caller.span_id)]  # ...but linked to it

    in_trace = [s for s in collector.spans if s.trace_id == trace_id]
    (produce,) = [s for s in in_trace if s.name == "send activities"]
    assert produce.kind == PbSpan.SPAN_KIND_PRODUCER and produce.parent == ingress.span_id
    assert produce.attrs["messaging.destination.name"].endswith("activities")
    (route,) = [s for s in in_trace if s.name == "process activities"]
    assert route.kind == PbSpan.SPAN_KIND_CONSUMER and route.parent == produce.span_id
    assert route.attrs["switchboard.activity.id"] == activity_id

    attempts = sorted((s for s in in_trace if s.name == "deliver Direct"),
                      key=lambda s: s.attrs["switchboard.attempt"])
    assert [(a.attrs["switchboard.attempt"], a.attrs["switchboard.outcome"],
             a.attrs["http.response.status_code"], a.error) for a in attempts] == [
        (1, "retry", 503, True), (2, "delivered", 200, False)]
    for a in attempts:
        assert a.kind == PbSpan.SPAN_KIND_CLIENT and a.parent == route.span_id
        assert a.attrs["switchboard.destination.id"] == agent["integrationId"]
        # Each attempt's HTTP request is its child; the webhook named that request.
        (request,) = [s for s in in_trace if s.name == "POST" and s.parent == a.span_id]
        assert request.attrs["server.address"] == "127.0.0.1"
    assert (sent.trace_id, sent.span_id) == (trace_id, request.span_id)

    # Ids only: no message text, no key, no URL path in anything exported.
    for secret in (b"my order is late", b"/agent",
                   customer["configuration"]["privateSigningKey"].encode()):
        assert secret not in collector.raw


async def test_nothing_when_off(broker: Any) -> None:
    collector = await Collector().start()
    receiver = await Receiver().start()
    try:
        hub = await RunningHub(make_settings(broker)).start()
        try:
            assert hub.app.state.runtime.tracing is None
            customer, _ = await _hub_with_desk(hub, receiver)
            untraced = await _send(hub, customer, "not traced", {"traceparent": CALLER})
            got = (await receiver.wait_for("/agent", 1))[0]
            assert got.json["activity"]["activityId"] == untraced
            assert "traceparent" not in got.headers
        finally:
            await hub.stop()
        # Sentinel: a traced hub, started after the untraced one stopped, exports to the
        # same collector. Its spans arriving means anything earlier would have too.
        traced = await RunningHub(make_settings(broker, otel_endpoint=collector.url)).start()
        try:
            customer, _ = await _hub_with_desk(traced, receiver)
            sentinel = await _send(traced, customer, "traced")
            await receiver.wait_for("/agent", 2)
        finally:
            await traced.stop()
    finally:
        await receiver.stop()
        await collector.stop()
    ingress = collector.named("POST /ingress/{integrationId}")
    assert [s.attrs["switchboard.activity.id"] for s in ingress] == [sentinel]
    assert not [s for s in collector.spans if s.attrs.get("switchboard.activity.id") == untraced]


def test_off_imports_nothing(repo_root: Any) -> None:
    """With the setting empty a whole hub is built without loading OpenTelemetry."""
    code = ("import sys\n"
            "from switchboard.keys import generate_secret_key_b64\n"
            "from switchboard.services.app import build_app\n"
            "from switchboard.settings import Settings\n"
            "build_app(Settings(secret_key=generate_secret_key_b64()))\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
            "assert not loaded, loaded\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root, env=env,
                   timeout=120)
