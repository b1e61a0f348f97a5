"""OpenTelemetry wiring: the process's tracer and the spans the hub makes.

Imported only when ``SWITCHBOARD_OTEL_ENDPOINT`` is set (`Runtime` does it): with tracing
off no OpenTelemetry module is loaded and the hot paths check one ``is None``. The trace
context on records and the attributes are pure (`switchboard.tracing`).

Spans: the ingress request (SERVER, started once the request is authenticated, so an
anonymous flood makes none), the produce of an activity (PRODUCER), the router's handling
of it (CONSUMER, continued from the record's ``traceparent``), each delivery attempt
(CLIENT, continued from the delivery record's) and each outgoing HTTP request (CLIENT).
A provider's own ``traceparent`` on an ingress request is untrusted: it becomes a link,
never the parent, so callers cannot choose our trace ids or our sampling.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextvars import Token
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from switchboard import tracing as tc
from switchboard.model import Activity, Delivery
from switchboard.outbound import Attempt
from switchboard.registry import IntegrationRecord
from switchboard.settings import Settings

__all__ = ["IngressTrace", "Tracing"]

T = TypeVar("T")
# Longest a stopping process waits for its last spans to reach the collector.
FLUSH_TIMEOUT_MS = 5000


class Tracing:
    """One per process (per Runtime): a tracer provider exporting over OTLP/HTTP."""

    def __init__(self, settings: Settings) -> None:
        # The exporter still reads the standard OTEL_EXPORTER_OTLP_* variables for what
        # is not given here (headers, certificates, compression, timeout).
        self._exporter = OTLPSpanExporter(endpoint=tc.traces_url(settings.otel_endpoint))
        self._provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
            resource=Resource.create({"service.name": settings.otel_service_name}),
            # Stopped by the runtime; an atexit hook per provider would keep every test
            # hub's provider alive.
            shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(self._exporter))
        self.tracer = self._provider.get_tracer("switchboard")

    def stop(self) -> None:
        """Export what is queued (bounded), then stop the exporter."""
        self._provider.force_flush(FLUSH_TIMEOUT_MS)
        self._provider.shutdown()

    # ---- the ingress ---------------------------------------------------------

    def ingress(self, route: str, incoming: str | None) -> IngressTrace:
        """A request's server span, to be started when it is authenticated."""
        return IngressTrace(self.tracer, route, incoming)

    # ---- Kafka -------------------------------------------------------------------

    @contextlib.contextmanager
    def producing(self, topic: str, kind: str, partition: int, activity: Activity
                  ) -> Iterator[list[tuple[str, bytes]]]:
        """A PRODUCER span around writing `activity`; yields the record's headers."""
        attrs = tc.activity_attributes(activity.hub_id, activity.integration_id,
                                       activity.channel_id, activity.activity_id,
                                       activity.type)
        parent = trace.get_current_span()
        if parent.is_recording():  # the ingress request: which activity it accepted
            parent.set_attribute("switchboard.activity.id", activity.activity_id)
        span = self.tracer.start_span(
            f"send {kind}", kind=SpanKind.PRODUCER,
            attributes=tc.merge(tc.messaging_attributes("send", topic, partition), attrs))
        with _ending(span):
            yield [(tc.TRACEPARENT, _traceparent(span))]

    @contextlib.contextmanager
    def consuming(self, kind: str, topic: str, partition: int, offset: int,
                  headers: Any) -> Iterator[Span]:
        """A CONSUMER span (current while inside) continuing the record's trace."""
        span = self.tracer.start_span(
            f"process {kind}", context=_parent(tc.traceparent_of(headers)),
            kind=SpanKind.CONSUMER,
            attributes=tc.messaging_attributes("process", topic, partition, offset))
        with _ending(span), trace.use_span(span, record_exception=False,
                                           set_status_on_exception=False):
            yield span

    @staticmethod
    def note_activity(activity: Activity) -> None:
        """Which activity the current span handles."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(tc.activity_attributes(
                activity.hub_id, activity.integration_id, activity.channel_id,
                activity.activity_id, activity.type))

    @staticmethod
    def current_headers() -> list[tuple[str, bytes]] | None:
        """Record headers naming the current span as the parent (None outside a span)."""
        span = trace.get_current_span()
        if not span.get_span_context().is_valid:
            return None
        return [(tc.TRACEPARENT, _traceparent(span))]

    # ---- deliveries --------------------------------------------------------------------

    async def attempt(self, parent: bytes | None, delivery: Delivery,
                      destination: IntegrationRecord, number: int,
                      send: Callable[[], Awaitable[Attempt]]) -> Attempt:
        """A CLIENT span around one delivery attempt, in the trace of the delivery record
        (`parent`: its raw ``traceparent``); the provider calls it makes are its children."""
        span = self.tracer.start_span(
            f"deliver {destination.channel_id.value}", context=_parent(parent),
            kind=SpanKind.CLIENT,
            attributes=tc.merge(
                tc.delivery_attributes(delivery.hub_id, destination.integration_id,
                                       delivery.delivery_id, delivery.activity.activity_id),
                {"switchboard.channel": destination.channel_id.value,
                 "switchboard.attempt": number}))
        with _ending(span), trace.use_span(span, record_exception=False,
                                           set_status_on_exception=False):
            result = await send()
            span.set_attributes(tc.attempt_attributes(
                number, result.outcome.value, result.status, result.reason))
            if result.outcome.value != "delivered":
                span.set_status(Status(StatusCode.ERROR, result.reason or None))
            return result

    async def http(self, method: str, url: str, headers: MutableMapping[str, str] | None,
                   call: Callable[[], Awaitable[T]]) -> T:
        """A CLIENT span around one outgoing request; with `headers`, the request carries
        its ``traceparent`` (the receiver may join the trace)."""
        span = self.tracer.start_span(method.upper(), kind=SpanKind.CLIENT,
                                      attributes=tc.http_attributes(method, url))
        with _ending(span):
            if headers is not None:
                headers[tc.TRACEPARENT] = _traceparent(span).decode()
            answer = await call()
            status = getattr(answer, "status_code", None)
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
                if status >= 400:
                    span.set_status(Status(StatusCode.ERROR))
            return answer


class IngressTrace:
    """One ingress request: its SERVER span starts when the request is authenticated
    (with the request's start time) and is current until `finish`."""

    __slots__ = ("_incoming", "_route", "_span", "_started_ns", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, route: str, incoming: str | None) -> None:
        self._tracer = tracer
        self._route = route
        self._incoming = incoming
        self._started_ns = time.time_ns()
        self._span: Span | None = None
        self._token: Token[otel_context.Context] | None = None

    def authenticated(self, rec: IntegrationRecord) -> None:
        if self._span is not None:
            return
        link = tc.parse_traceparent(self._incoming)
        links = [] if link is None else [Link(_context(link))]
        self._span = span = self._tracer.start_span(
            f"POST {self._route}", kind=SpanKind.SERVER, start_time=self._started_ns,
            links=links,
            attributes=tc.merge(
                {"http.request.method": "POST", "http.route": self._route},
                tc.activity_attributes(rec.hub_id, rec.integration_id,
                                       rec.channel_id.value)))
        # Current for the rest of the request: the produce becomes its child.
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def finish(self, status: int) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


@contextlib.contextmanager
def _ending(span: Span) -> Iterator[None]:
    """End `span` on the way out; a failure marks it by its type or reason code (never its
    text, which may name addresses)."""
    try:
        yield
    except BaseException as exc:
        # HttpError's reason is a short code, never the URL.
        why = str(getattr(exc, "reason", "") or type(exc).__name__)
        span.set_attribute("error.type", why)
        span.set_status(Status(StatusCode.ERROR, why))
        raise
    finally:
        span.end()


def _traceparent(span: Span) -> bytes:
    ctx = span.get_span_context()
    return tc.format_traceparent(ctx.trace_id, ctx.span_id, int(ctx.trace_flags)).encode()


def _context(parent: tc.TraceParent) -> SpanContext:
    return SpanContext(parent.trace_id, parent.span_id, is_remote=True,
                       trace_flags=TraceFlags(parent.flags & 0xFF))


def _parent(raw: bytes | None) -> otel_context.Context | None:
    """The context a span continues from a record's raw ``traceparent`` (a new trace when
    it has none or an invalid one)."""
    parsed = tc.parse_traceparent(raw)
    if parsed is None:
        return otel_context.Context()  # a root, not whatever is current
    return trace.set_span_in_context(NonRecordingSpan(_context(parsed)))
