"""`/api/v1/hubs/{hubId}/syncProfiles`: two-way sync profiles, their runs, review reports,
allowSync and disconnect. Same tokens and walls as the rest of the API: another hub's
profile answers 404; a signed-up user's token (`sync_signup`) reaches that user's
profiles only. Credentials are sealed before they reach Kafka and never shown.

Templates, signup and change-notification webhooks are their own modules
(`sync_templates_api`, `sync_signup`, `sync_webhooks`), registered with these routes."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.clock import now_ms
from switchboard.errors import BadRequest, Conflict, Forbidden, NotFound
from switchboard.ids import new_id
from switchboard.kafka import SYNC_PROFILES, SYNC_STATUS
from switchboard.services import (
    graph_notifications,
    graph_signin,
    sync_jobs_api,
    sync_signup,
    sync_templates_api,
    sync_webhooks,
)
from switchboard.services.graph_notifications import GraphNotificationsApi
from switchboard.services.graph_signin import GraphConnect, GraphSigninApi
from switchboard.services.http import JSON
from switchboard.services.runtime import Runtime
from switchboard.services.sync_connectors import kinds, validate
from switchboard.services.sync_jobs_api import SyncJobsApi
from switchboard.services.sync_requests import request_run
from switchboard.services.sync_settings_api import SyncSettingsApi, settings_openapi_paths
from switchboard.services.sync_signup import SignupApi, SyncCaller
from switchboard.services.sync_store import SyncStore
from switchboard.services.sync_templates_api import TemplatesApi
from switchboard.services.sync_webhooks import WebhooksApi, new_webhook_secret
from switchboard.sync.fingerprint import check_maps
from switchboard.sync.options import Side
from switchboard.sync.profiles import (
    MASK,
    MODULE_KINDS,
    AllowSync,
    ConnectorSpec,
    Module,
    ModuleSpec,
    ProfileCreate,
    ProfileRecord,
    ProfileUpdate,
    RunJob,
    RunRequest,
    StatusRecord,
    seal_credentials,
)
from switchboard.sync.progress import progress
from switchboard.sync.schedule import check_schedule
from switchboard.sync.signup import SignupApp, SignupRequest
from switchboard.sync.tables import report_key, status_key
from switchboard.sync.templates import TemplateCreate, TemplateUpdate

if TYPE_CHECKING:
    from switchboard.services.api import Api

BASE = "/api/v1/hubs/{hubId}/syncProfiles"
_enc = msgspec.json.Encoder()


def _parse_start(value: str | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("invalid_dt_start", "dtStartUTC is not an ISO 8601 time",
                         field="dtStartUTC") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return max(0, int(dt.timestamp() * 1000))


class SyncProfilesApi:
    def __init__(self, runtime: Runtime, api: Api) -> None:
        self.runtime = runtime
        self.api = api
        self.store = SyncStore.for_runtime(runtime, pairs=False)
        self.templates = TemplatesApi(self)
        self.signup = SignupApi(self)
        self.webhooks = WebhooksApi(self)
        self.graph_signin = GraphSigninApi(self)
        self.sync_settings = SyncSettingsApi(self)
        self.graph_notifications = GraphNotificationsApi(self)
        self.jobs = SyncJobsApi(self)

    async def start(self) -> None:
        await self.store.start()

    async def stop(self) -> None:
        await self.store.stop()

    def routes(self) -> list[Route]:
        one = BASE + "/{profileId}"
        return [
            Route(BASE, self.create, methods=["POST"]),
            Route(BASE, self.list, methods=["GET"]),
            Route(one, self.get, methods=["GET"]),
            Route(one, self.update, methods=["PATCH", "PUT"]),
            Route(one, self.delete, methods=["DELETE"]),
            Route(one + "/run", self.run, methods=["POST"]),
            Route(one + "/report", self.report, methods=["GET"]),
            Route(one + "/allowSync", self.allow_sync, methods=["PUT"]),
            Route(one + "/disconnect", self.disconnect, methods=["POST"]),
            *self.templates.routes(),
            *self.signup.routes(),
            *self.webhooks.routes(),
            *self.graph_signin.routes(),
            *self.sync_settings.routes(),
            *self.graph_notifications.routes(),
            *self.jobs.routes(),
        ]

    # ---- helpers -------------------------------------------------------------------

    async def _caller(self, request: Request) -> SyncCaller:
        """The hub in the path, if the caller may see it; with a signed-up user's token,
        that user (who sees only their own profiles)."""
        hub_id: str = request.path_params["hubId"]
        caller = await self.signup.user_caller(request, hub_id)
        if caller is not None:
            return caller
        principal, view = await self.api._session(request)
        if hub_id not in view.hubs or not principal.may_see(hub_id):
            raise NotFound("hub_not_found", "no such hub")
        await self.store.sync()
        return SyncCaller(hub_id=hub_id)

    async def _hub(self, request: Request) -> str:
        """The hub, for hub-level callers only (a user's token is refused)."""
        caller = await self._caller(request)
        if caller.owner is not None:
            raise Forbidden("hub_token_required", "a user's sync token reaches only that "
                            "user's profiles")
        return caller.hub_id

    async def _own(self, request: Request) -> ProfileRecord:
        caller = await self._caller(request)
        rec = self.store.profiles.profiles.get(request.path_params["profileId"])
        # Another hub's (or user's) profile is indistinguishable from a missing one.
        if rec is None or rec.hub_id != caller.hub_id or (
                caller.owner is not None and rec.owner != caller.owner):
            raise NotFound("sync_profile_not_found", "no such sync profile")
        return rec

    def _check(self, portal: ConnectorSpec, mailbox: ConnectorSpec,
               modules: dict[Module, ModuleSpec], creating: bool = False) -> None:
        known = kinds(self.runtime.settings)
        for side, spec in (("portal", portal), ("mailbox", mailbox)):
            if spec.kind not in known:
                raise BadRequest("unknown_connector_kind",
                                 f"{side}: no connector kind {spec.kind!r}; known: "
                                 f"{', '.join(sorted(known)) or 'none'}", field=f"{side}.kind")
            try:
                validate(spec.kind, spec.configuration, spec.credentials,
                         self.runtime.settings, required=creating)
            except BadRequest as exc:
                raise BadRequest(exc.code, f"{side}: {exc.description}",
                                 field=f"{side}.{exc.field}") from None
        for module, m in modules.items():
            kind = MODULE_KINDS[module]
            try:
                check_maps(kind, m.options.field_maps(kind))
            except ValueError as exc:
                raise BadRequest("invalid_field_map", f"{module}: {exc}",
                                 field=f"modules.{module}.options.fields") from None

    def _seal(self, pid: str, side: Side, spec: ConnectorSpec,
              old: ConnectorSpec | None = None) -> ConnectorSpec:
        keep = old.credentials if old is not None and old.kind == spec.kind else None
        return msgspec.structs.replace(spec, credentials=seal_credentials(
            self.runtime.sealer, pid, side, dict(spec.credentials), keep))

    async def _put(self, rec: ProfileRecord) -> None:
        await self.store.write(SYNC_PROFILES, rec.profile_id.encode(), _enc.encode(rec))

    def _out(self, rec: ProfileRecord) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(rec)
        for side in ("portal", "mailbox"):
            out[side]["credentials"] = {k: MASK for k in out[side].get("credentials", {})}
        out["connected"] = rec.connected
        out.pop("webhookSecret", None)  # sealed; shown once, at create or rotation
        out["webhookUrl"] = self.webhooks.url(rec.profile_id)
        out["needReview"] = sorted(m for m, s in rec.modules.items()
                                   if s.enabled and s.need_review)
        status = self.store.status.status.get(rec.profile_id) or StatusRecord(
            profile_id=rec.profile_id, hub_id=rec.hub_id)
        st: dict[str, Any] = msgspec.to_builtins(status)
        for k in ("profileId", "hubId", "done", "total"):
            st.pop(k, None)
        st["syncState"] = status.sync_state
        executing = status.sync_state == "EXECUTING"
        st["progress"] = msgspec.to_builtins(progress(
            status.done, status.total, status.started_at,
            now_ms() if executing else status.updated_at, executing))
        out["status"] = st
        return out

    # ---- routes ----------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        hub_id = await self._hub(request)
        body: ProfileCreate = await self.api._body(request, ProfileCreate)
        check_schedule(body.schedule)
        pid = new_id()
        now = now_ms()
        secret = new_webhook_secret()
        sealed = self.webhooks.seal(pid, secret)
        if body.template_id is not None:
            rec = self.templates.provision(hub_id, body.template_id, body, pid, now)
            rec = msgspec.structs.replace(rec, webhook_secret=sealed)
        else:
            if body.portal is None or body.mailbox is None or body.modules is None:
                raise BadRequest("missing_field", "portal, mailbox and modules are required "
                                 "(or a templateId)", field="portal")
            self._check(body.portal, body.mailbox, body.modules, creating=True)
            rec = ProfileRecord(
                profile_id=pid, hub_id=hub_id, name=body.name or "sync profile",
                portal=self._seal(pid, "portal", body.portal),
                mailbox=self._seal(pid, "mailbox", body.mailbox),
                modules=body.modules, created_at=now, updated_at=now,
                schedule=body.schedule, schedule_set_at=now, webhook_secret=sealed)
        await self._put(rec)
        out = self._out(rec)
        out["webhookSecret"] = secret  # shown once
        return JSON(out, status_code=201)

    async def list(self, request: Request) -> Response:
        caller = await self._caller(request)
        return JSON({"items": [self._out(p) for p in self.store.profiles.of_hub(caller.hub_id)
                               if caller.owner is None or p.owner == caller.owner]})

    async def get(self, request: Request) -> Response:
        return JSON(self._out(await self._own(request)))

    async def update(self, request: Request) -> Response:
        rec = await self._own(request)
        body: ProfileUpdate = await self.api._body(request, ProfileUpdate)
        check_schedule(body.schedule)
        self.templates.check_unlocked(rec, body)
        portal = rec.portal if body.portal is None else self._seal(
            rec.profile_id, "portal", body.portal, rec.portal)
        mailbox = rec.mailbox if body.mailbox is None else self._seal(
            rec.profile_id, "mailbox", body.mailbox, rec.mailbox)
        modules = dict(rec.modules)
        modules.update(body.modules or {})
        self._check(portal, mailbox, modules)
        connected = rec.connected or body.portal is not None or body.mailbox is not None
        now = now_ms()
        schedule, set_at = rec.schedule, rec.schedule_set_at
        if body.schedule is not None and body.schedule != rec.schedule:
            schedule, set_at = body.schedule, now
        new = msgspec.structs.replace(
            rec, name=body.name or rec.name, portal=portal, mailbox=mailbox, modules=modules,
            connected=connected, updated_at=now, schedule=schedule, schedule_set_at=set_at)
        await self._put(new)
        return JSON(self._out(new))

    async def delete(self, request: Request) -> Response:
        rec = await self._own(request)
        pid = rec.profile_id
        await self.store.write(SYNC_STATUS, status_key(pid), None)
        await self.store.write(SYNC_STATUS, report_key(pid), None)
        await self.store.write(SYNC_PROFILES, pid.encode(), None)
        # The worker owning the profile's runs prunes its pairs and watermarks (after a
        # run of it still under way; sync_store.prune).
        await self.store.request(pid.encode(), _enc.encode(RunJob(
            job_id=new_id(), profile_id=pid, hub_id=rec.hub_id, requested_at=now_ms())))
        return Response(status_code=204)

    async def run(self, request: Request) -> Response:
        rec = await self._own(request)
        raw = await request.body()
        body = RunRequest() if not raw.strip() else await self.api._body(request, RunRequest)
        if not rec.connected:
            raise Conflict("sync_profile_disconnected",
                           "the profile is disconnected: update its credentials first")
        initial = body.initial is True or body.initial == "true"
        job = await request_run(self.runtime, self.store, rec, origin="api", initial=initial,
                                since=_parse_start(body.dtStartUTC))
        assert job is not None
        return JSON({"jobId": job.job_id, "profileId": rec.profile_id,
                     "syncState": "REQUESTED"}, status_code=202)

    async def report(self, request: Request) -> Response:
        rec = await self._own(request)
        report = self.store.status.reports.get(rec.profile_id)
        if report is None:
            raise NotFound("no_report", "no review run has finished for this profile yet")
        out: dict[str, Any] = msgspec.to_builtins(report)
        out.pop("hubId", None)
        out["needReview"] = sorted(m for m, s in rec.modules.items()
                                   if s.enabled and s.need_review)
        return JSON(out)

    async def allow_sync(self, request: Request) -> Response:
        rec = await self._own(request)
        raw = await request.body()
        body = AllowSync() if not raw.strip() else await self.api._body(request, AllowSync)
        wanted = set(body.modules or rec.modules)
        missing = wanted - set(rec.modules)
        if missing:
            raise BadRequest("unknown_module", f"the profile has no module "
                             f"{', '.join(sorted(missing))}", field="modules")
        modules = {m: msgspec.structs.replace(s, need_review=False) if m in wanted else s
                   for m, s in rec.modules.items()}
        new = msgspec.structs.replace(rec, modules=modules, updated_at=now_ms())
        await self._put(new)
        return JSON(self._out(new))

    async def disconnect(self, request: Request) -> Response:
        rec = await self._own(request)
        # The credentials are gone from the topic's newest record (compaction drops the
        # older ones); runs are refused until an update brings new ones.
        new = msgspec.structs.replace(
            rec, connected=False, updated_at=now_ms(),
            portal=msgspec.structs.replace(rec.portal, credentials={}),
            mailbox=msgspec.structs.replace(rec.mailbox, credentials={}))
        await self._put(new)
        return JSON(self._out(new))


# The request bodies the OpenAPI document describes (components by these names).
BODY_TYPES = (ProfileCreate, ProfileUpdate, RunRequest, AllowSync, TemplateCreate,
              TemplateUpdate, SignupApp, SignupRequest, GraphConnect)


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """This API's part of `/openapi.json` (`op` is docs.py's operation builder)."""
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    pid = {"name": "profileId", "in": "path", "required": True, "schema": {"type": "string"}}
    one = BASE + "/{profileId}"
    return {
        **sync_templates_api.openapi_paths(op),
        **sync_signup.openapi_paths(op),
        **sync_webhooks.openapi_paths(op),
        **graph_signin.openapi_paths(op),
        **settings_openapi_paths(op),
        **graph_notifications.openapi_paths(op),
        **sync_jobs_api.openapi_paths(op),
        BASE: {
            "parameters": [hub],
            "post": op("Create a sync profile: two connectors (credentials write-only, "
                       "sealed) and per module a direction and options; new modules start "
                       "in review", "ProfileCreate", 201, responses=(400, 401, 404, 503)),
            "get": op("List the hub's sync profiles with their status: {items}"),
        },
        one: {
            "parameters": [hub, pid],
            "get": op("A sync profile (credentials masked) and its status: syncState "
                      "IDLE|REQUESTED|QUEUED|EXECUTING, progress, errMessage, errSvcId, "
                      "lastSuccessfulSync, per-module counts of the last run"),
            "patch": op("Update a profile (absent fields stay; a credential sent as "
                        "******** stays)", "ProfileUpdate"),
            "put": op("Same as PATCH", "ProfileUpdate"),
            "delete": op("Delete a profile", ok=204),
        },
        one + "/run": {
            "parameters": [hub, pid],
            "post": op("Request a run (incremental from the watermarks; initial: everything; "
                       "dtStartUTC: changes since then): {jobId}", "RunRequest", 202,
                       responses=(400, 401, 404, 409, 503)),
        },
        one + "/report": {
            "parameters": [hub, pid],
            "get": op("The pre-sync report of the last review run, per module: would "
                      "create / update / delete per side, matches, conflicts, samples"),
        },
        one + "/allowSync": {
            "parameters": [hub, pid],
            "put": op("Take modules (all when none are named) out of review",
                      "AllowSync"),
        },
        one + "/disconnect": {
            "parameters": [hub, pid],
            "post": op("Drop the profile's credentials; runs answer 409 until an update "
                       "brings new ones", responses=(401, 404, 503)),
        },
    }
