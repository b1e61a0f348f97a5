"""`/api/v1/…/deliveries`, redeliver, replay and jobs: every delivery visible and
recoverable. Auth is the integration routes' own: the admin token sees every hub, a hub
token its own hub; another hub's integration, delivery or job answers 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import clock, names
from switchboard.delivery_log import (
    PAGE_DEFAULT,
    PAGE_MAX,
    CursorError,
    DeliveryLog,
    DeliverySummary,
)
from switchboard.errors import BadRequest, Conflict, NotFound, Unavailable
from switchboard.inbound import check_json_content_type
from switchboard.jobs import MAX_JOB_RECORDS, MAX_REPLAY_WINDOW_MS, JobRecord
from switchboard.model import AttemptRecord, DeliveryStatus
from switchboard.services.delivery_jobs import Jobs, Progress, Target
from switchboard.services.delivery_log_reader import DeliveryLogReader
from switchboard.services.http import JSON, read_body
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from switchboard.services.api import Api

Ms = Annotated[int, Meta(ge=0)]
STATUSES: tuple[str, ...] = get_args(DeliveryStatus)


class RedeliverRequest(Struct, rename="camel", forbid_unknown_fields=True):
    """One delivery by id, or every delivery of a status updated since `since` (ms)."""

    delivery_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    status: DeliveryStatus | None = None
    since: Ms | None = None


_redeliver_decoder = msgspec.json.Decoder(RedeliverRequest)


class ReplayRequest(Struct, rename="camel", forbid_unknown_fields=True):
    """Every delivery to the integration written in [since, until] (ms; until: now)."""

    since: Ms
    until: Ms | None = None


def summary_out(s: DeliverySummary) -> dict[str, Any]:
    return {
        "deliveryId": s.delivery_id,
        "activityId": s.activity_id,
        "hubId": s.hub_id,
        "integrationId": s.integration_id,
        "conversationId": s.conversation_id,
        "status": s.status,
        "attempts": s.attempts,
        "lastStatus": s.last_status,
        "lastError": s.last_error,
        "createdAt": s.created_at,
        "updatedAt": s.updated_at,
        "nextAttemptAt": s.next_attempt_at,
    }


def detail_out(s: DeliverySummary) -> dict[str, Any]:
    out = summary_out(s)
    out["attemptCount"] = s.attempts
    out["attempts"] = [
        {"attempt": e.attempt, "at": e.at, "status": e.status, "error": e.error,
         "latencyMs": e.latency_ms, "response": e.response}
        for e in reversed(s.history)  # newest first, like the listing
    ]
    return out


def job_out(job: JobRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobId": job.job_id, "state": job.state, "done": job.done, "total": job.total,
        "skipped": job.skipped, "kind": job.kind, "integrationId": job.integration_id,
        "createdAt": job.created_at, "updatedAt": job.updated_at,
    }
    if job.error is not None:
        out["error"] = job.error
    return out


def _int_param(request: Request, name: str, lo: int, hi: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    # At most 19 digits: int() of 4,300+ raises ValueError (a 500), and ms fit in 19.
    if (not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) < lo
            or (hi is not None and int(raw) > hi)):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise BadRequest("invalid_query", f"{name} must be an integer {bound}", name)
    return int(raw)


class DeliveriesApi:
    """Routes, the attempts reader and the job runner of one API process."""

    def __init__(self, runtime: Runtime, api: Api,
                 observe: Callable[[AttemptRecord], None] | None = None) -> None:
        self.runtime = runtime
        self.api = api
        self.log = DeliveryLog(runtime.settings.delivery_log_max)
        self.reader = DeliveryLogReader(runtime.settings, self.log,
                                        lambda topic: runtime.producer.partitions_for(topic),
                                        observe)
        self.jobs = Jobs(runtime)

    def routes(self) -> list[Route]:
        base = "/api/v1/integrations/{integrationId}"
        return [
            Route(f"{base}/deliveries", self.list_deliveries, methods=["GET"]),
            Route("/api/v1/deliveries/{deliveryId}", self.get_delivery, methods=["GET"]),
            Route(f"{base}/redeliver", self.redeliver, methods=["POST"]),
            Route(f"{base}/replay", self.replay, methods=["POST"]),
            Route("/api/v1/jobs/{jobId}", self.get_job, methods=["GET"]),
        ]

    async def start(self) -> None:
        await self.reader.start()
        await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()
        await self.reader.stop()

    async def _synced(self) -> DeliveryLog:
        """The log with every attempt written before this call applied."""
        timeout = self.runtime.settings.produce_timeout_s
        try:
            async with asyncio.timeout(timeout):  # the end-offset request too
                await self.reader.sync(timeout=timeout)
        except Exception as exc:
            log.warning("delivery log read failed: %r", exc)  # for the log, not the body
            raise Unavailable("broker_unavailable", "the delivery log is unavailable; retry") \
                from exc
        return self.log

    async def list_deliveries(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        rec = self.api._own_integration(principal, view, request.path_params["integrationId"])
        q = request.query_params
        status = (q.get("status") or "").casefold() or None  # our names, in any case
        if status is not None and status not in STATUSES:
            raise BadRequest("invalid_query", f"status must be one of {', '.join(STATUSES)}",
                             "status")
        since = _int_param(request, "since", 0)
        limit = _int_param(request, "limit", 1, PAGE_MAX) or PAGE_DEFAULT
        log = await self._synced()
        try:
            items, cursor = log.query(rec.integration_id, cast(DeliveryStatus | None, status),
                                      since, limit, q.get("cursor") or None)
        except CursorError as exc:
            raise BadRequest("invalid_query", str(exc), "cursor") from None
        return JSON({"items": [summary_out(s) for s in items], "nextCursor": cursor})

    async def get_delivery(self, request: Request) -> Response:
        principal, _ = await self.api._session(request)
        found = (await self._synced()).get(request.path_params["deliveryId"])
        if found is None or not principal.may_see(found.hub_id):
            raise NotFound("delivery_not_found", "no such delivery")
        return JSON(detail_out(found))

    async def redeliver(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        rec = self.api._own_integration(principal, view, request.path_params["integrationId"])
        from switchboard.services.api import API_BODY_LIMIT  # api imports this module

        check_json_content_type(request.headers.get("content-type"))
        raw = await read_body(request, API_BODY_LIMIT)
        # `status` in any case (switchboard.names), as the listing's filter takes it.
        body = names.decode_folding(raw, _redeliver_decoder,
                                    {"status": names.DELIVERY_STATUSES})
        if (body.delivery_id is None) == (body.status is None):
            raise BadRequest("invalid_request", "give either deliveryId or status",
                             "deliveryId")
        log = await self._synced()
        if body.delivery_id is not None:
            found = log.get(body.delivery_id)
            if found is None or found.integration_id != rec.integration_id:
                raise NotFound("delivery_not_found", "no such delivery of this integration")
            if found.source is None:
                raise Conflict("source_unknown", "where this delivery was written is not "
                               "recorded; it cannot be redelivered", "deliveryId")
            targets: list[Target] = [(found.delivery_id, found.source)]
        else:
            targets = []
            for s in log.newest(rec.integration_id, body.status, body.since):
                if len(targets) == MAX_JOB_RECORDS:
                    raise BadRequest("too_many_records", f"more than {MAX_JOB_RECORDS} "
                                     "deliveries match; narrow it with a later since", "since")
                targets.append((s.delivery_id, s.source))
            targets.reverse()  # oldest first: the order they were first sent in

        async def choose(p: Progress) -> list[Target]:
            return targets

        job_id = await self.jobs.submit(rec.hub_id, rec.integration_id, "redeliver", choose,
                                        total=len(targets))
        return JSON({"jobId": job_id}, status_code=202)

    async def replay(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        rec = self.api._own_integration(principal, view, request.path_params["integrationId"])
        body: ReplayRequest = await self.api._body(request, ReplayRequest)
        until = body.until if body.until is not None else clock.now_ms()
        if until < body.since:
            raise BadRequest("invalid_window", "until must not be before since", "until")
        if until - body.since > MAX_REPLAY_WINDOW_MS:
            raise BadRequest("invalid_window", "a replay window is at most 30 days", "until")
        since = body.since

        async def choose(p: Progress) -> list[Target]:
            return await self.jobs.scan(p, rec.integration_id, since, until)

        job_id = await self.jobs.submit(rec.hub_id, rec.integration_id, "replay", choose)
        return JSON({"jobId": job_id}, status_code=202)

    async def get_job(self, request: Request) -> Response:
        principal, _ = await self.api._session(request)
        job = await self.jobs.get(request.path_params["jobId"])
        if job is None or not principal.may_see(job.hub_id):
            raise NotFound("job_not_found", "no such job")
        return JSON(job_out(job))
