"""`/api/v1/hubs/{hubId}/syncProfiles/{profileId}/syncSettings`: a profile's modules as
seed 000's flat settings (`switchboard.sync.seed_settings`). GET answers them all; PUT
takes any of them, leaves the rest, and answers all again. Same callers and walls as the
profile (a signed-up user's token reaches their own profiles; a template's locked module
is a 409)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.clock import now_ms
from switchboard.errors import BadRequest
from switchboard.services.http import JSON
from switchboard.sync.profiles import ProfileRecord, ProfileUpdate
from switchboard.sync.seed_settings import from_seed, graph_window, json_schema, to_seed

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi

PATH = "/api/v1/hubs/{hubId}/syncProfiles/{profileId}/syncSettings"


class SyncSettingsApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.profiles = profiles

    def routes(self) -> list[Route]:
        return [Route(PATH, self.get, methods=["GET"]),
                Route(PATH, self.put, methods=["PUT"])]

    async def get(self, request: Request) -> Response:
        rec = await self.profiles._own(request)
        return JSON(to_seed(rec.modules))

    async def put(self, request: Request) -> Response:
        rec = await self.profiles._own(request)
        body = await self.profiles.api._body(request, Any)
        if not isinstance(body, dict):
            raise BadRequest("invalid_body", "the body must be a JSON object of settings")
        changed = from_seed(body, rec.modules)
        self.profiles.templates.check_unlocked(rec, ProfileUpdate(modules=changed))
        modules = {**rec.modules, **changed}
        mailbox = rec.mailbox
        cal = changed.get("calendar")
        if cal is not None and mailbox.kind == "graph" and graph_window(cal.options):
            # Graph reads the calendar in a window: make it the module's.
            mailbox = msgspec.structs.replace(mailbox, configuration={
                **mailbox.configuration, **graph_window(cal.options)})
        self.profiles._check(rec.portal, mailbox, modules)
        new: ProfileRecord = msgspec.structs.replace(rec, modules=modules, mailbox=mailbox,
                                                     updated_at=now_ms())
        await self.profiles._put(new)
        return JSON(to_seed(new.modules))


def settings_openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """This API's part of `/openapi.json`."""
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    pid = {"name": "profileId", "in": "path", "required": True, "schema": {"type": "string"}}
    schema = json_schema()
    return {PATH: {
        "parameters": [hub, pid],
        "get": op("The profile's modules as seed 000's flat syncSettings (syncContacts, "
                  "contSyncDirection, contPortalSyncTags as a comma-separated string, …)",
                  answer=schema),
        "put": op("Set any of the flat syncSettings (absent keys stay; an unknown key or a "
                  "wrong value is a 400 naming it); answers them all",
                  request={"application/json": schema}, answer=schema,
                  responses=(400, 401, 404, 409, 503)),
    }}
