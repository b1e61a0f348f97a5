"""`/api/v1/hubs/{hubId}/syncTemplates`: hub-level sync templates (`switchboard.sync.
templates`), and profiles provisioned from them (`POST …/syncProfiles` with `templateId`,
and signup). A template's credentials are sealed under the template; a profile gets its
own copy, sealed under the profile.

A template change is applied at once to the locked fields of every profile made from it;
a deleted template leaves its profiles as they are, unlocked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.clock import now_ms
from switchboard.errors import Conflict, NotFound
from switchboard.ids import new_id
from switchboard.kafka import SYNC_PROFILES
from switchboard.services.http import JSON
from switchboard.sync.options import Side
from switchboard.sync.profiles import (
    MASK,
    ConnectorSpec,
    ProfileCreate,
    ProfileRecord,
    ProfileUpdate,
    seal_credentials,
)
from switchboard.sync.schedule import check_schedule
from switchboard.sync.templates import (
    TemplateCreate,
    TemplateRecord,
    TemplateUpdate,
    apply_locked,
    locked_in,
    template_credentials_context,
)

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi

BASE = "/api/v1/hubs/{hubId}/syncTemplates"
_enc = msgspec.json.Encoder()


def _locked(field: str, template_id: str) -> Conflict:
    return Conflict("locked_field", f"{field} is locked by template {template_id}",
                    field=field)


class TemplatesApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.profiles = profiles
        self.runtime = profiles.runtime
        self.store = profiles.store

    def routes(self) -> list[Route]:
        one = BASE + "/{templateId}"
        return [
            Route(BASE, self.create, methods=["POST"]),
            Route(BASE, self.list, methods=["GET"]),
            Route(one, self.get, methods=["GET"]),
            Route(one, self.update, methods=["PATCH", "PUT"]),
            Route(one, self.delete, methods=["DELETE"]),
        ]

    # ---- helpers -------------------------------------------------------------------

    def template(self, hub_id: str, template_id: str) -> TemplateRecord:
        tpl = self.store.profiles.templates.get(template_id)
        if tpl is None or tpl.hub_id != hub_id:
            raise NotFound("sync_template_not_found", "no such sync template")
        return tpl

    async def _own(self, request: Request) -> TemplateRecord:
        hub_id = await self.profiles._hub(request)
        return self.template(hub_id, request.path_params["templateId"])

    def _seal(self, tid: str, side: Side, spec: ConnectorSpec,
              old: ConnectorSpec | None = None) -> ConnectorSpec:
        sealer = self.runtime.sealer
        keep = old.credentials if old is not None and old.kind == spec.kind else {}
        creds = {}
        for name, value in spec.credentials.items():
            if value == MASK:
                if name in keep:
                    creds[name] = keep[name]
                continue
            creds[name] = sealer.seal(value.encode(), template_credentials_context(tid, side, name))
        return msgspec.structs.replace(spec, credentials=creds)

    def side_for(self, tpl: TemplateRecord, side: Side, pid: str,
                 configure: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                 ) -> ConnectorSpec:
        """The template's side for profile `pid`: its credentials sealed again for it."""
        spec = tpl.portal if side == "portal" else tpl.mailbox
        tid = tpl.template_id
        plain = {name: self.runtime.sealer.open(
                     value, template_credentials_context(tid, side, name)).decode()
                 for name, value in spec.credentials.items()}
        configuration = dict(spec.configuration)
        if configure is not None:
            configuration = configure(configuration)
        return ConnectorSpec(kind=spec.kind, configuration=configuration,
                             credentials=seal_credentials(self.runtime.sealer, pid, side, plain))

    def _out(self, tpl: TemplateRecord) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(tpl)
        for side in ("portal", "mailbox"):
            out[side]["credentials"] = {k: MASK for k in out[side].get("credentials", {})}
        out["lockedFields"] = list(tpl.locked_fields)
        out["profiles"] = sum(1 for p in self.store.profiles.profiles.values()
                              if p.template_id == tpl.template_id)
        return out

    async def _put(self, tpl: TemplateRecord) -> None:
        await self.store.write(SYNC_PROFILES, f"template:{tpl.template_id}".encode(),
                               _enc.encode(tpl))

    # ---- provisioning ------------------------------------------------------------

    def provision(self, hub_id: str, template_id: str, body: ProfileCreate, pid: str,
                  now: int, *, owner: str | None = None,
                  configure: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                  ) -> ProfileRecord:
        """A new profile from a template: the template's settings, out of review; what
        `body` gives may set unlocked fields only (409 naming a locked one)."""
        tpl = self.template(hub_id, template_id)
        field = locked_in(tpl.locked_fields, name=body.name is not None,
                          portal=body.portal is not None, mailbox=body.mailbox is not None,
                          schedule=body.schedule is not None,
                          modules=list(body.modules or {}))
        if field is not None:
            raise _locked(field, template_id)
        sides: dict[Side, ConnectorSpec] = {}
        pairs: tuple[tuple[Side, ConnectorSpec | None], ...] = (
            ("portal", body.portal), ("mailbox", body.mailbox))
        for side, given in pairs:
            if given is None:
                sides[side] = self.side_for(tpl, side, pid, configure)
            else:
                sides[side] = self.profiles._seal(pid, side, given)
        modules = dict(tpl.modules)
        modules.update(body.modules or {})
        modules = {m: msgspec.structs.replace(s, need_review=False) for m, s in modules.items()}
        self.profiles._check(sides["portal"], sides["mailbox"], modules)
        return ProfileRecord(
            profile_id=pid, hub_id=hub_id, name=body.name or tpl.name,
            portal=sides["portal"], mailbox=sides["mailbox"], modules=modules,
            created_at=now, updated_at=now,
            schedule=body.schedule if body.schedule is not None else tpl.schedule,
            schedule_set_at=now, template_id=template_id, owner=owner)

    def check_unlocked(self, rec: ProfileRecord, body: ProfileUpdate) -> None:
        """409 naming the first locked field an update of a templated profile sets."""
        tpl = self.store.profiles.templates.get(rec.template_id or "")
        if tpl is None:
            return
        field = locked_in(tpl.locked_fields, name=body.name is not None,
                          portal=body.portal is not None, mailbox=body.mailbox is not None,
                          schedule=body.schedule is not None,
                          modules=list(body.modules or {}))
        if field is not None:
            raise _locked(field, tpl.template_id)

    # ---- routes --------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        hub_id = await self.profiles._hub(request)
        body: TemplateCreate = await self.profiles.api._body(request, TemplateCreate)
        check_schedule(body.schedule)
        self.profiles._check(body.portal, body.mailbox, body.modules, creating=True)
        tid = new_id()
        now = now_ms()
        tpl = TemplateRecord(
            template_id=tid, hub_id=hub_id, name=body.name,
            portal=self._seal(tid, "portal", body.portal),
            mailbox=self._seal(tid, "mailbox", body.mailbox), modules=body.modules,
            created_at=now, updated_at=now, schedule=body.schedule,
            locked_fields=body.locked_fields)
        await self._put(tpl)
        return JSON(self._out(tpl), status_code=201)

    async def list(self, request: Request) -> Response:
        hub_id = await self.profiles._hub(request)
        tpls = sorted((t for t in self.store.profiles.templates.values() if t.hub_id == hub_id),
                      key=lambda t: (t.created_at, t.template_id))
        return JSON({"items": [self._out(t) for t in tpls]})

    async def get(self, request: Request) -> Response:
        return JSON(self._out(await self._own(request)))

    async def update(self, request: Request) -> Response:
        tpl = await self._own(request)
        body: TemplateUpdate = await self.profiles.api._body(request, TemplateUpdate)
        check_schedule(body.schedule)
        tid = tpl.template_id
        portal = tpl.portal if body.portal is None else self._seal(tid, "portal", body.portal,
                                                                   tpl.portal)
        mailbox = tpl.mailbox if body.mailbox is None else self._seal(
            tid, "mailbox", body.mailbox, tpl.mailbox)
        modules = dict(tpl.modules)
        modules.update(body.modules or {})
        self.profiles._check(portal, mailbox, modules)
        now = now_ms()
        new = msgspec.structs.replace(
            tpl, name=body.name or tpl.name, portal=portal, mailbox=mailbox, modules=modules,
            schedule=body.schedule if body.schedule is not None else tpl.schedule,
            locked_fields=(body.locked_fields if body.locked_fields is not None
                           else tpl.locked_fields), updated_at=now)
        await self._put(new)
        # Its profiles' locked fields follow the template.
        for rec in list(self.store.profiles.profiles.values()):
            if rec.template_id != tid or rec.hub_id != tpl.hub_id:
                continue
            changed = apply_locked(rec, new, portal=self.side_for(new, "portal", rec.profile_id),
                                   mailbox=self.side_for(new, "mailbox", rec.profile_id),
                                   now=now)
            if changed is not rec:
                await self.profiles._put(changed)
        return JSON(self._out(new))

    async def delete(self, request: Request) -> Response:
        tpl = await self._own(request)
        for rec in list(self.store.profiles.profiles.values()):
            if rec.template_id == tpl.template_id:
                await self.profiles._put(msgspec.structs.replace(
                    rec, template_id=None, updated_at=now_ms()))
        await self.store.write(SYNC_PROFILES, f"template:{tpl.template_id}".encode(), None)
        return Response(status_code=204)


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    tid = {"name": "templateId", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        BASE: {
            "parameters": [hub],
            "post": op("Create a sync template: both sides, modules, schedule and "
                       "lockedFields; profiles made from it (templateId) skip review",
                       "TemplateCreate", 201, responses=(400, 401, 403, 404, 503)),
            "get": op("List the hub's sync templates: {items}"),
        },
        BASE + "/{templateId}": {
            "parameters": [hub, tid],
            "get": op("A sync template (credentials masked) and how many profiles use it"),
            "patch": op("Update a template; its profiles' locked fields follow at once",
                        "TemplateUpdate"),
            "put": op("Same as PATCH", "TemplateUpdate"),
            "delete": op("Delete a template (its profiles keep their settings, unlocked)",
                         ok=204),
        },
    }
