"""Runs triggered by a source's change notification.

- ``POST /api/v1/sync/webhooks/{profileId}``: a platform (or anything that watches a
  side) says the profile's records changed. Signed as Standard Webhooks (`webhook-id`,
  `webhook-timestamp`, `webhook-signature: v1,<HMAC-SHA256>`) with the profile's own
  `whsec_` secret, shown once when the profile is created or the secret rotated
  (``POST …/syncProfiles/{profileId}/webhookSecret``). The body is not read for content.
- A Syncro ``customer.created`` webhook (the Syncro channel's inbound URL) triggers the
  profiles of the hub one of whose sides is that Syncro account (`syncro_profiles`).

Either way the run is incremental and coalesced (`sync_requests`): while one requested
run has not started, more notifications join it.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.errors import Conflict, NotFound
from switchboard.kafka import SYNC_PROFILES
from switchboard.services.http import JSON, read_body
from switchboard.services.runtime import Runtime
from switchboard.services.sync_requests import request_run
from switchboard.services.sync_store import SyncStore
from switchboard.sync.profiles import ProfileRecord, RunOrigin, webhook_secret_context
from switchboard.webhooks import Verifier

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi

HOOK = "/api/v1/sync/webhooks/{profileId}"
_enc = msgspec.json.Encoder()
_USING: WeakSet[Runtime] = WeakSet()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def syncro_profiles(profiles: list[ProfileRecord], integration_id: str,
                    subdomain: str) -> list[ProfileRecord]:
    """The profiles one of whose sides is this Syncro account: a side of kind `syncro`
    with its `subdomain`, or any side naming the integration (`syncroIntegrationId`)."""
    out = []
    for rec in profiles:
        for spec in (rec.portal, rec.mailbox):
            conf = spec.configuration
            if conf.get("syncroIntegrationId") == integration_id or (
                    spec.kind == "syncro" and conf.get("subdomain") == subdomain):
                out.append(rec)
                break
    return out


async def trigger(runtime: Runtime, store: SyncStore, recs: list[ProfileRecord],
                  origin: RunOrigin) -> list[dict[str, Any]]:
    """An incremental, coalesced run of each connected profile of `recs`."""
    out: list[dict[str, Any]] = []
    for rec in recs:
        if not rec.connected:
            continue
        job = await request_run(runtime, store, rec, origin=origin, coalesce=True)
        out.append({"profileId": rec.profile_id,
                    "jobId": job.job_id if job is not None else None,
                    "coalesced": job is None})
    return out


async def on_syncro_customer(runtime: Runtime, hub_id: str, integration_id: str,
                             subdomain: str) -> None:
    """Called by the Syncro channel for ``customer.created``: run the profiles concerned."""
    store = SyncStore.for_runtime(runtime, pairs=False)
    if runtime not in _USING:  # the ingress: its first Syncro customer starts the readers
        _USING.add(runtime)
        await store.start()
        runtime.on_stop(store.stop)
    await store.sync()
    recs = syncro_profiles(store.profiles.of_hub(hub_id), integration_id, subdomain)
    await trigger(runtime, store, recs, "syncro")


class WebhooksApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.profiles = profiles
        self.runtime = profiles.runtime
        self.store = profiles.store

    def routes(self) -> list[Route]:
        return [
            Route(HOOK, self.notify, methods=["POST"]),
            Route("/api/v1/hubs/{hubId}/syncProfiles/{profileId}/webhookSecret",
                  self.rotate, methods=["POST"]),
        ]

    def url(self, profile_id: str) -> str:
        return self.runtime.settings.public_url.rstrip("/") + HOOK.format(profileId=profile_id)

    def seal(self, profile_id: str, secret: str) -> str:
        return self.runtime.sealer.seal(secret.encode(), webhook_secret_context(profile_id))

    async def notify(self, request: Request) -> Response:
        await self.store.sync()
        rec = self.store.profiles.profiles.get(request.path_params["profileId"])
        if (rec is None or rec.webhook_secret is None
                or rec.hub_id not in self.runtime.registry.view.hubs):
            raise NotFound("sync_profile_not_found", "no such sync profile")
        body = await read_body(request, self.runtime.settings.max_body_bytes)
        secret = self.runtime.sealer.open(rec.webhook_secret,
                                          webhook_secret_context(rec.profile_id))
        Verifier(hmac_secrets=[secret.decode()]).verify(
            {k.lower(): v for k, v in request.headers.items()}, body, now=int(time.time()))
        if not rec.connected:
            raise Conflict("sync_profile_disconnected",
                           "the profile is disconnected: update its credentials first")
        [out] = await trigger(self.runtime, self.store, [rec], "webhook")
        return JSON(out, status_code=202)

    async def rotate(self, request: Request) -> Response:
        rec = await self.profiles._own(request)
        secret = new_webhook_secret()
        new = msgspec.structs.replace(rec, webhook_secret=self.seal(rec.profile_id, secret))
        await self.store.write(SYNC_PROFILES, rec.profile_id.encode(), _enc.encode(new))
        return JSON({"webhookSecret": secret, "webhookUrl": self.url(rec.profile_id)})


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    pid = {"name": "profileId", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        HOOK: {
            "parameters": [pid],
            "post": op("A source's change notification for a profile, signed as Standard "
                       "Webhooks with the profile's webhookSecret: an incremental run, "
                       "coalesced with one not yet started: 202 {jobId, coalesced}", ok=202,
                       security=False, responses=(400, 401, 404, 409, 413, 503)),
        },
        "/api/v1/hubs/{hubId}/syncProfiles/{profileId}/webhookSecret": {
            "parameters": [hub, pid],
            "post": op("Make a new webhook secret for the profile (shown once; the old one "
                       "stops working)", responses=(401, 404, 503)),
        },
    }
