"""Messenger channel: Meta's app-level webhook in, the Graph Send API out.

- `provision` asks Graph which Page the token belongs to (``GET /me``) and which app
  (``GET /app``), then subscribes the app to the Page's messaging fields.
- ``GET /ingress/meta`` answers Meta's verify-token handshake; ``POST /ingress/meta``
  verifies ``X-Hub-Signature-256``, routes each event by Page id to its integration,
  publishes durably, and only then answers 200.
- `MessengerSender` delivers agent and bot messages with ``POST /{v}/me/messages``.

The wire formats and checks are pure functions in `switchboard.providers.messenger_verification`,
`messenger_events` and `messenger_send`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from switchboard import clock
from switchboard.channels import ChannelConfig, MessengerConfig
from switchboard.errors import BadRequest, Conflict, Unavailable
from switchboard.model import Activity, ChannelId, Delivery
from switchboard.outbound import SKIPPED, Attempt
from switchboard.providers import messenger_events, messenger_send, messenger_verification
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome, parse_retry_after
from switchboard.sealing import open_config_secret
from switchboard.services.channels.base import ChannelPlugin, verified
from switchboard.services.http import read_body
from switchboard.services.http_client import HttpError, HttpTimeout
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

# Unsealed secrets kept in memory (sealed value → plain), so each webhook and send does
# not decrypt again. Bounded; a rotated secret simply gets a new entry.
_SECRET_CACHE = 1024
# Multi-part sends (long texts, captions) remember how far they got, so a retry after a
# failed second part does not send the first part again.
_PROGRESS_KEPT = 10_000
_SENDABLE = ("message:agent", "message:bot")
_ERROR_BODY_MAX = 64 * 1024


class _Secrets:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._plain: OrderedDict[str, str] = OrderedDict()

    def open(self, rec: IntegrationRecord, field: str) -> str:
        sealed = getattr(rec.configuration, field)
        plain = self._plain.get(sealed)
        if plain is None:
            plain = open_config_secret(self._runtime.sealer, rec, field) or ""
            self._plain[sealed] = plain
            if len(self._plain) > _SECRET_CACHE:
                self._plain.popitem(last=False)
        return plain

    def app_secret(self, rec: IntegrationRecord) -> str:
        """The secret this integration's webhooks are signed with ("" if none is known)."""
        cfg = rec.configuration
        if isinstance(cfg, MessengerConfig) and cfg.app_secret:
            return self.open(rec, "app_secret")
        return self._runtime.settings.meta_app_secret

    def app_secret_or_none(self, rec: IntegrationRecord) -> str | None:
        """`app_secret`, or None (logged by type only) if the sealed one cannot be opened."""
        try:
            return self.app_secret(rec)
        except Exception as exc:
            log.error("messenger: an integration's appSecret cannot be unsealed (%s)",
                      type(exc).__name__)
            return None


class MessengerPlugin(ChannelPlugin):
    channel = ChannelId.MESSENGER

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self._secrets = _Secrets(runtime)
        self._sender = MessengerSender(runtime, self._secrets)
        self._last_sync = 0.0

    @property
    def sender(self) -> MessengerSender:
        return self._sender

    def routes(self) -> list[BaseRoute]:
        return [Route("/ingress/meta", self._meta, methods=["GET", "POST"])]

    # ---- provisioning ------------------------------------------------------------------

    async def provision(self, integration_id: str, config: ChannelConfig) -> ChannelConfig:
        assert isinstance(config, MessengerConfig)
        token = config.page_access_token  # plain here: the API seals after we return
        secret = config.app_secret or self.runtime.settings.meta_app_secret
        page = await self._graph("GET", "me", token, secret, params={"fields": "id,name"})
        page_id = str(page.get("id") or "")
        if not page_id:
            raise BadRequest("graph_error", "the token does not belong to a Page",
                             "configuration.pageAccessToken")
        holder = (await self.runtime.registry.sync()).by_external_id(self.channel, page_id)
        if holder is not None:
            raise Conflict("page_in_use",
                           f"Page {page_id} is already connected by another integration",
                           "configuration.pageAccessToken")
        app = await self._graph("GET", "app", token, secret, params={"fields": "id,name"})
        app_id = str(app.get("id") or "")
        if not app_id:
            raise BadRequest("graph_error", "the Graph API did not name the token's app",
                             "configuration.pageAccessToken")
        answer = await self._graph(
            "POST", f"{page_id}/subscribed_apps", token, secret,
            data={"subscribed_fields": ",".join(messenger_events.SUBSCRIBED_FIELDS)})
        if answer.get("success") is not True:
            raise BadRequest("graph_error", "the Graph API did not subscribe the app",
                             "configuration.pageAccessToken")
        log.info("messenger: integration %s connected Page %s (app %s)",
                 integration_id, page_id, app_id)
        return msgspec.structs.replace(config, page_id=page_id, app_id=app_id)

    rotatable = ("page_access_token", "app_secret")

    async def rotate_credentials(self, rec: IntegrationRecord, given: dict[str, str]
                                 ) -> dict[str, str]:
        """The new token (and app secret, through its appsecret_proof) must speak for the
        integration's own Page."""
        config = rec.configuration
        assert isinstance(config, MessengerConfig)
        token = given.get("page_access_token") or self._secrets.open(rec, "page_access_token")
        secret = given.get("app_secret") or self._secrets.app_secret(rec)
        page = await self._graph("GET", "me", token, secret, params={"fields": "id"})
        if str(page.get("id") or "") != config.page_id:
            raise BadRequest("graph_error", "the token does not belong to this integration's "
                             "Page", "configuration.pageAccessToken")
        return given

    async def deprovision(self, rec: IntegrationRecord) -> None:
        """Unsubscribe the app from the Page of a deleted integration."""
        config = rec.configuration
        assert isinstance(config, MessengerConfig)
        if not config.page_id:
            return
        token = open_config_secret(self.runtime.sealer, rec, "page_access_token") or ""
        secret = (open_config_secret(self.runtime.sealer, rec, "app_secret")
                  or self.runtime.settings.meta_app_secret)
        await self._graph("DELETE", f"{config.page_id}/subscribed_apps", token, secret)

    async def _graph(self, method: str, path: str, token: str, secret: str, *,
                     params: dict[str, str] | None = None,
                     data: dict[str, str] | None = None) -> dict[str, Any]:
        s = self.runtime.settings
        url = messenger_send.graph_url(s.meta_graph_url, s.meta_graph_version, path)
        query = {**(params or {}), "access_token": token}
        if secret:
            query["appsecret_proof"] = messenger_send.appsecret_proof(secret, token)
        try:
            resp = await self.runtime.http.request(
                method, url, params=query,
                content=urlencode(data).encode() if data is not None else None,
                headers={"content-type": "application/x-www-form-urlencoded"}
                if data is not None else None)
        except HttpError as exc:
            # The reason is a short code, never the URL (which holds the token).
            log.warning("messenger: Graph %s %s failed: %s", method, path, exc.reason)
            raise Unavailable("provider_unavailable",
                              "the Graph API could not be reached; retry") from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise Unavailable("provider_unavailable",
                              messenger_send.graph_error_message(resp.status_code, resp.content))
        if resp.status_code >= 400:
            raise BadRequest("graph_error",
                             messenger_send.graph_error_message(resp.status_code, resp.content),
                             "configuration.pageAccessToken")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise Unavailable("provider_unavailable", "the Graph API answered no JSON object")
        return body

    # ---- inbound -------------------------------------------------------------------------

    async def _meta(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            challenge = messenger_verification.handshake(request.query_params,
                                                         self.runtime.settings.meta_verify_token)
            return PlainTextResponse(challenge)
        return await self._receive(request)

    async def _receive(self, request: Request) -> Response:
        runtime = self.runtime
        body = await read_body(request, runtime.settings.max_body_bytes)
        # Before verifying, the body is read only for the Page ids it names, to know
        # which app secrets may have signed it; nothing else of it is used yet.
        pages = messenger_verification.page_ids(body)
        view = runtime.registry.view
        if any(view.by_external_id(self.channel, p) is None for p in pages):
            await self._sync_registry()
            view = runtime.registry.view
        candidates = self._candidate_secrets(pages)
        if not candidates:
            log.warning("messenger: webhook received but no app secret is configured "
                        "(SWITCHBOARD_META_APP_SECRET or the integration's appSecret)")
        signer = messenger_verification.verify_signature(
            request.headers.get(messenger_verification.SIGNATURE_HEADER), body, candidates)
        verified(request)
        events, skipped = messenger_events.parse_webhook(body)
        now_ms = clock.now_ms()
        by_conversation: dict[str, list[Activity]] = {}
        for ev in events:
            rec = view.by_external_id(self.channel, ev.page_id)
            if rec is None:
                skipped.append(messenger_events.Skipped(ev.page_id, "unknown_page"))
                continue
            if not rec.active:
                skipped.append(messenger_events.Skipped(ev.page_id, "integration_paused"))
                continue
            cfg = rec.configuration
            assert isinstance(cfg, MessengerConfig)
            # The body was signed by one app; an event counts only for a Page whose own
            # secret is that one (another tenant's secret must not speak for this Page).
            own = self._secrets.app_secret_or_none(rec)
            if own is None or not hmac.compare_digest(own.encode(), signer.encode()):
                skipped.append(messenger_events.Skipped(ev.page_id, "signed_by_another_app"))
                continue
            activity = messenger_events.to_activity(ev, integration_id=rec.integration_id,
                                                    hub_id=rec.hub_id, now_ms=now_ms)
            by_conversation.setdefault(activity.conversation_id, []).append(activity)
        for s in skipped:
            # Echoes of the Page's own sends are routine; the rest is worth a line.
            level = logging.DEBUG if s.reason == "echo" else logging.INFO
            log.log(level, "messenger: event for Page %s not ingested: %s",
                    s.page_id or "-", s.reason)
        await self._publish_all(by_conversation)
        return PlainTextResponse("EVENT_RECEIVED")

    async def _publish_all(self, by_conversation: dict[str, list[Activity]]) -> None:
        """Publish durably: conversations in parallel, each one's events in batch order."""

        async def one(activities: list[Activity]) -> None:
            for a in activities:
                await self.runtime.publish(a)

        results = await asyncio.gather(*(one(acts) for acts in by_conversation.values()),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                # Unavailable → 503: Meta redelivers the batch; stable ids dedupe.
                raise r

    def _candidate_secrets(self, pages: list[str]) -> list[str]:
        view = self.runtime.registry.view
        out: dict[str, None] = {}
        glob = self.runtime.settings.meta_app_secret
        if glob:
            out[glob] = None
        for page in pages:
            if len(out) >= messenger_verification.MAX_CANDIDATE_SECRETS:
                break
            rec = view.by_external_id(self.channel, page)
            if rec is not None and isinstance(rec.configuration, MessengerConfig) \
                    and rec.configuration.app_secret:
                own = self._secrets.app_secret_or_none(rec)
                if own:
                    out[own] = None
        return list(out)

    async def _sync_registry(self) -> None:
        # At most a few times a second: unknown Page ids must not become broker load.
        now = time.monotonic()
        if now - self._last_sync > 0.2:
            self._last_sync = now
            await self.runtime.registry.sync()


class MessengerSender:
    """Sends agent and bot messages to the conversation's customer (PSID) via Graph."""

    def __init__(self, runtime: Runtime, secrets: _Secrets) -> None:
        self._runtime = runtime
        self._secrets = secrets
        self._progress: OrderedDict[str, int] = OrderedDict()

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        activity = delivery.activity
        if activity.message is None or activity.type not in _SENDABLE:
            # Echoed customer messages and events: nothing to show the customer.
            return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)
        cfg = destination.configuration
        if not isinstance(cfg, MessengerConfig):
            return Attempt(outcome=Outcome.PERMANENT, reason="not_messenger")
        conversations = self._runtime.conversations
        conv = conversations.get(delivery.conversation_id)
        if conv is None:
            await conversations.sync()
            conv = conversations.get(delivery.conversation_id)
        if conv is None or conv.customer_integration_id != destination.integration_id:
            return Attempt(outcome=Outcome.PERMANENT, reason="unknown_conversation")
        try:
            token = self._secrets.open(destination, "page_access_token")
            secret = self._secrets.app_secret(destination)
        except Exception as exc:  # the type only: nothing about the secret
            log.error("delivery %s: page token of %s unusable (%s)", delivery.delivery_id,
                      destination.integration_id, type(exc).__name__)
            return Attempt(outcome=Outcome.RETRY, reason="page_token_invalid")
        bodies = messenger_send.send_bodies(activity.message, conv.customer_id,
                                            metadata=f"switchboard:{delivery.delivery_id}")
        if not bodies:
            return Attempt(outcome=Outcome.DELIVERED, reason="empty")
        s = self._runtime.settings
        url = messenger_send.graph_url(s.meta_graph_url, s.meta_graph_version, "me/messages")
        query = {"access_token": token}
        if secret:
            query["appsecret_proof"] = messenger_send.appsecret_proof(secret, token)
        first = self._progress.get(delivery.delivery_id, 0)
        for i in range(first, len(bodies)):
            attempt = await self._post(url, query, bodies[i])
            if attempt.outcome is not Outcome.DELIVERED:
                if i > 0 and attempt.outcome is Outcome.RETRY:
                    self._remember(delivery.delivery_id, i)
                else:
                    self._progress.pop(delivery.delivery_id, None)
                return attempt
        self._progress.pop(delivery.delivery_id, None)
        return Attempt(outcome=Outcome.DELIVERED, status=200, reason="sent")

    def _remember(self, delivery_id: str, done: int) -> None:
        self._progress[delivery_id] = done
        self._progress.move_to_end(delivery_id)
        if len(self._progress) > _PROGRESS_KEPT:
            self._progress.popitem(last=False)

    async def _post(self, url: str, query: dict[str, str], body: dict[str, Any]) -> Attempt:
        try:
            # Only an error's body is looked at, and only its first 64 KiB.
            resp = await self._runtime.http.request("POST", url, params=query, json=body,
                                                    read_cap=_ERROR_BODY_MAX)
        except HttpTimeout:
            return Attempt(outcome=Outcome.RETRY, reason="timeout")
        except HttpError as exc:
            # A short code, never the exception text: the URL carries the page token.
            return Attempt(outcome=Outcome.RETRY, reason=exc.reason)
        status = resp.status_code
        retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
        return messenger_send.classify_send(status, resp.content if status >= 300 else b"",
                                            retry_after)
