"""`/api/v1/hubs/{hubId}/syncJobs`: the hub's sync runs (`switchboard.sync.runs`), newest
first, and one run by its `jobId` (the one `…/run` answers). Read from what every API
process folds from `sync.runs` (a record per run, so a restarted process lists the
history) and `sync.status`; same walls as the profiles: another hub's run
answers 404, a signed-up user's token sees the runs of that user's profiles only."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.delivery_log import PAGE_DEFAULT, PAGE_MAX
from switchboard.errors import BadRequest, NotFound
from switchboard.kafka import SYNC_RUNS
from switchboard.services.http import JSON
from switchboard.services.sync_signup import SyncCaller
from switchboard.sync.runs import RUN_STATES, CursorError, Run, trigger_of

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi

BASE = "/api/v1/hubs/{hubId}/syncJobs"


def run_out(run: Run) -> dict[str, Any]:
    return {
        "jobId": run.job_id, "profileId": run.profile_id, "state": run.state,
        "type": None if run.initial is None else ("initial" if run.initial else "incremental"),
        "trigger": trigger_of(run.origin), "origin": run.origin,
        "requestedAt": run.requested_at, "startedAt": run.started_at,
        "finishedAt": run.finished_at, "progress": {"done": run.done, "total": run.total},
        "modules": None if run.modules is None else msgspec.to_builtins(run.modules),
        "errMessage": run.err_message, "errSvcId": run.err_svc_id,
    }


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit") or ""
    if not raw:
        return PAGE_DEFAULT
    # At most 3 digits before int(): a 5,000-digit number is a 400, not a slow parse.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not (
            1 <= int(raw) <= PAGE_MAX):
        raise BadRequest("invalid_query", f"limit must be an integer between 1 and "
                         f"{PAGE_MAX}", "limit")
    return int(raw)


class SyncJobsApi:
    def __init__(self, parent: SyncProfilesApi) -> None:
        self.parent = parent

    def routes(self) -> list[Route]:
        return [Route(BASE, self.list, methods=["GET"]),
                Route(BASE + "/{jobId}", self.get, methods=["GET"])]

    def _visible(self, caller: SyncCaller) -> set[str]:
        """The caller's live profiles (a deleted profile's runs go with it)."""
        return {p.profile_id for p in self.parent.store.profiles.of_hub(caller.hub_id)
                if caller.owner is None or p.owner == caller.owner}

    async def list(self, request: Request) -> Response:
        caller = await self.parent._caller(request)
        await self.parent.store.sync(SYNC_RUNS)
        q = request.query_params
        state = q.get("state") or None
        if state is not None:
            state = RUN_STATES.canonical(state)  # our names, in any case
            if state is None:
                raise BadRequest("invalid_query", "state must be one of "
                                 f"{', '.join(RUN_STATES.names)}", "state")
        limit = _limit(request)
        visible = self._visible(caller)
        profile_id = q.get("profileId") or None
        if profile_id is not None:
            visible &= {profile_id}  # another hub's profile: an empty page, as a missing one
        try:
            items, cursor = self.parent.store.runs.query(
                caller.hub_id, profile_ids=visible, state=state, limit=limit,
                cursor=q.get("cursor") or None)
        except CursorError as exc:
            raise BadRequest("invalid_query", str(exc), "cursor") from None
        return JSON({"items": [run_out(r) for r in items], "nextCursor": cursor})

    async def get(self, request: Request) -> Response:
        caller = await self.parent._caller(request)
        await self.parent.store.sync(SYNC_RUNS)
        run = self.parent.store.runs.get(request.path_params["jobId"])
        if run is None or run.hub_id != caller.hub_id \
                or run.profile_id not in self._visible(caller):
            raise NotFound("sync_job_not_found", "no such sync run")
        return JSON(run_out(run))


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    job = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}

    def query(name: str, description: str, schema: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False,
                "schema": schema or {"type": "string"}, "description": description}

    listing = op("The hub's sync runs, newest requested first: {items: [{jobId, "
                 "profileId, type: initial|incremental, trigger: manual|schedule|webhook, "
                 "origin, state, requestedAt, startedAt, finishedAt, progress, modules, "
                 "errMessage, errSvcId}], nextCursor}")
    listing["parameters"] = [
        query("profileId", "only this profile's runs"),
        query("state", "requested|queued|running|finished|failed|skipped, in any case"),
        query("limit", f"1 to {PAGE_MAX}, default {PAGE_DEFAULT}",
              {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}),
        query("cursor", "the previous page's nextCursor"),
    ]
    return {
        BASE: {"parameters": [hub], "get": listing},
        BASE + "/{jobId}": {
            "parameters": [hub, job],
            "get": op("One sync run by the jobId its run request answered (as listed)"),
        },
    }
