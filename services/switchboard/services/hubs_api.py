"""Hubs: create (admin), read, update, rotate the access token, delete (admin).

A hub id this token may not see answers exactly as an unknown one (404 ``hub_not_found``),
so hub ids cannot be probed. The access token is shown once, on create and on rotation;
the registry keeps only its hash, and reads show when it was issued and last rotated.
Hub names are unique, case-insensitively (409 ``hub_name_taken`` on create and rename).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import hubster_compat, keys
from switchboard.clock import now_ms
from switchboard.errors import BadRequest, Conflict, Forbidden, NotFound
from switchboard.ids import new_id
from switchboard.registry import HubRecord, RegistryView
from switchboard.retry import RetryPolicy
from switchboard.services.http import JSON

if TYPE_CHECKING:
    from switchboard.services.api import Api
    from switchboard.services.api_auth import Principal

log = logging.getLogger(__name__)
Name = Annotated[str, Meta(min_length=1, max_length=200)]


class HubCreate(Struct, rename="camel"):
    name: Name
    retry_schedule: str | None = None
    # "hubster": the integrations API answers as Hubster's does (see hubster_compat).
    compat: str | None = None


class HubUpdate(Struct, rename="camel"):
    # Absent: unchanged. Admin only, and unique like a create's.
    name: Name | msgspec.UnsetType = msgspec.UNSET
    # Absent: unchanged; null: back to the deployment's schedule.
    retry_schedule: str | msgspec.UnsetType | None = msgspec.UNSET
    # Absent: unchanged; "none" or null: today's answers.
    compat: str | msgspec.UnsetType | None = msgspec.UNSET


def _retry_schedule(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        RetryPolicy.parse_tenant(value)
    except ValueError as exc:
        raise BadRequest("invalid_retry_schedule", str(exc), "retrySchedule") from None
    return value


def hub_json(hub: HubRecord, view: RegistryView | None = None) -> dict[str, Any]:
    """A hub as the API shows it: never its token, only when it was issued and rotated."""
    out: dict[str, Any] = {"hubId": hub.hub_id, "name": hub.name, "createdAt": hub.created_at,
                           "tokenIssuedAt": hub.token_rotated_at or hub.created_at,
                           "tokenRotatedAt": hub.token_rotated_at}
    if hub.retry_schedule is not None:
        out["retrySchedule"] = hub.retry_schedule
    if hub.compat is not None:
        out["compat"] = hub.compat
    if view is not None:
        out["integrationCount"] = sum(1 for _ in view.integrations_of(hub.hub_id))
    return out


def _name_taken(name: str) -> Conflict:
    return Conflict("hub_name_taken", f"a hub named {name!r} exists "
                    "(hub names are unique, whatever their case)", "name")


class HubsApi:
    """`/api/v1/hubs…`, sharing the integrations API's authentication and helpers."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.runtime = api.runtime

    @staticmethod
    def _check_name_free(view: RegistryView, name: str, hub_id: str | None) -> None:
        """Refuse a taken name before writing; the registry's fold decides a race (two
        writers that both passed this check: the later record is refused)."""
        if view.hubs_named(name) - {hub_id}:
            raise _name_taken(name)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/hubs", self.create_hub, methods=["POST"]),
            Route("/api/v1/hubs", self.list_hubs, methods=["GET"]),
            Route("/api/v1/hubs/{hubId}", self.get_hub, methods=["GET"]),
            Route("/api/v1/hubs/{hubId}", self.update_hub, methods=["PATCH"]),
            Route("/api/v1/hubs/{hubId}", self.delete_hub, methods=["DELETE"]),
            Route("/api/v1/hubs/{hubId}/rotateToken", self.rotate_token, methods=["POST"]),
        ]

    @staticmethod
    def _visible(principal: Principal, view: RegistryView, request: Request) -> HubRecord:
        hub = view.hubs.get(request.path_params["hubId"])
        if hub is None or not principal.may_see(hub.hub_id):
            raise NotFound("hub_not_found", "no such hub")
        return hub

    async def _put(self, hub: HubRecord) -> None:
        outcome = await self.runtime.registry.put(hub)
        if outcome.accepted:
            return
        if outcome.reason == "deleted":
            raise NotFound("hub_not_found", "no such hub")
        if outcome.reason == "name_taken":
            raise _name_taken(hub.name)
        raise Conflict("concurrent_update", "the hub changed meanwhile; retry")

    async def create_hub(self, request: Request) -> Response:
        principal, _ = await self.api._session(request)
        if not principal.admin:
            raise Forbidden("admin_only", "creating hubs needs the admin token")
        body: HubCreate = await self.api._body(request, HubCreate)
        token = keys.new_access_token()
        hub = HubRecord(hub_id=new_id(), name=body.name, token_hash=keys.hash_token(token),
                        created_at=now_ms(), retry_schedule=_retry_schedule(body.retry_schedule),
                        compat=hubster_compat.hub_setting(body.compat), unique_name=True)
        self._check_name_free(await self.runtime.registry.sync(), body.name, None)
        await self._put(hub)
        return JSON({**hub_json(hub), "accessToken": token}, status_code=201)

    async def list_hubs(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        hubs = [h for h in view.hubs.values() if principal.may_see(h.hub_id)]
        return JSON([hub_json(h, view) for h in hubs])

    async def get_hub(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        return JSON(hub_json(self._visible(principal, view, request), view))

    async def update_hub(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        hub = self._visible(principal, view, request)
        body: HubUpdate = await self.api._body(request, HubUpdate)
        changes: dict[str, Any] = {}
        if body.retry_schedule is not msgspec.UNSET:
            changes["retry_schedule"] = _retry_schedule(body.retry_schedule)
        if body.compat is not msgspec.UNSET:
            changes["compat"] = hubster_compat.hub_setting(body.compat)
        if body.name is not msgspec.UNSET and body.name != hub.name:
            if not principal.admin:
                raise Forbidden("admin_only", "renaming a hub needs the admin token")
            changes["name"] = body.name
            changes["unique_name"] = True
            self._check_name_free(await self.runtime.registry.sync(), body.name, hub.hub_id)
        if changes:
            hub = msgspec.structs.replace(hub, version=hub.version + 1, **changes)
            await self._put(hub)
        return JSON(hub_json(hub, view))

    async def rotate_token(self, request: Request) -> Response:
        """A new access token (admin, or the hub's own token); the old one stops at once."""
        principal, view = await self.api._session(request)
        hub = self._visible(principal, view, request)
        token = keys.new_access_token()
        hub = msgspec.structs.replace(hub, version=hub.version + 1,
                                      token_hash=keys.hash_token(token),
                                      token_rotated_at=now_ms())
        await self._put(hub)
        log.info("hub %s: access token rotated (%s)", hub.hub_id,
                 "admin" if principal.admin else "hub token")
        return JSON({**hub_json(hub, view), "accessToken": token})

    async def delete_hub(self, request: Request) -> Response:
        """Admin only: deprovision and delete every integration, then the hub."""
        principal, view = await self.api._session(request)
        hub = self._visible(principal, view, request)
        if not principal.admin:
            raise Forbidden("admin_only", "deleting a hub needs the admin token")
        for rec in sorted(view.integrations_of(hub.hub_id), key=lambda r: r.created_at):
            await self.api.remove_integration(rec)
        await self.runtime.registry.delete_hub(hub.hub_id)
        log.info("hub %s deleted", hub.hub_id)
        return Response(status_code=204)
