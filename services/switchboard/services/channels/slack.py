"""Slack channel (an Agent tool): OAuth install, Events API ingress, chat.postMessage sends.

The I/O half only; signatures, parsing and request bodies are in
`switchboard.providers.slack_signature`, `slack_events`, `slack_posts` and `slack_provisioning`.

- `provision` exchanges the OAuth ``code`` at ``oauth.v2.access`` (or checks a given bot
  token with ``auth.test``) and keeps the bot token, team, bot user and channel; the code
  itself is dropped.
- ``POST /ingress/slack`` (app-level, one URL for every workspace): verify the signature,
  answer ``url_verification``, route ``event_callback`` by ``team_id``, and publish a
  person's reply in a thread we started as ``message:agent`` for that conversation.
- `SlackSender` posts each customer message: the first one of a conversation opens a
  thread in ``defaultPublicChannel``, later ones go in that thread. The thread is recorded
  on the conversation (compacted topic) before the send counts as delivered, so the next
  message of the conversation (same lane, in order) finds it, in any process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from switchboard import clock
from switchboard.channels import ChannelConfig, SlackConfig
from switchboard.conversations import ConversationRecord
from switchboard.errors import BadRequest, Conflict, SwitchboardError, Unavailable
from switchboard.model import ChannelId, Delivery
from switchboard.outbound import Attempt
from switchboard.providers import slack_events, slack_posts, slack_provisioning, slack_signature
from switchboard.providers.slack_state import check_state
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome, parse_retry_after
from switchboard.sealing import open_config_secret
from switchboard.services.channels.base import ChannelPlugin, verified
from switchboard.services.http import JSON, read_body
from switchboard.services.http_client import HttpError, HttpTimeout
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()


class SlackPlugin(ChannelPlugin):
    channel = ChannelId.SLACK

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self._sender = SlackSender(runtime)

    @property
    def sender(self) -> SlackSender:
        return self._sender

    def routes(self) -> list[BaseRoute]:
        return [Route("/ingress/slack", self.events, methods=["POST"])]

    # ---- provisioning ------------------------------------------------------------

    async def provision(self, integration_id: str, config: ChannelConfig) -> ChannelConfig:
        assert isinstance(config, SlackConfig)
        s = self.runtime.settings
        user_token = config.app_access_token
        bot_user_id = config.bot_user_id
        if config.code:
            if not s.slack_client_id or not s.slack_client_secret:
                raise BadRequest(
                    "slack_not_configured",
                    "set SWITCHBOARD_SLACK_CLIENT_ID and SWITCHBOARD_SLACK_CLIENT_SECRET "
                    "to install Slack with an OAuth code", "configuration.code")
            # Before the code is spent: a stale or foreign state installs nothing.
            check_state(config.state, s.slack_client_secret, now_s=time.time(),
                        window_s=s.slack_state_window_s)
            form = slack_provisioning.oauth_access_form(config.code, s.slack_client_id,
                                                        s.slack_client_secret)
            status, body = await self._call("oauth.v2.access", data=form)
            grant = slack_provisioning.parse_oauth_response(status, body)
            token, team_id = grant.bot_access_token, grant.team_id
            bot_user_id = grant.bot_user_id or bot_user_id
            user_token = grant.user_access_token or user_token
            # The code is spent now: the bot's name is nice to have, not worth failing for.
            bot_name = config.bot_name
            if bot_name is None:
                try:
                    who = slack_provisioning.parse_auth_test(
                        *await self._call("auth.test", token=token))
                    bot_name = who.user
                except SwitchboardError as exc:
                    log.warning("slack: auth.test after install failed (%s)", exc.code)
        elif config.bot_access_token:
            token = config.bot_access_token
            who = slack_provisioning.parse_auth_test(*await self._call("auth.test", token=token))
            team_id = who.team_id
            bot_user_id = who.user_id or bot_user_id
            bot_name = config.bot_name or who.user
        else:
            raise BadRequest("missing_code", "a Slack integration is created with the OAuth "
                             "code of its installation", "configuration.code")
        holder = self.runtime.registry.view.by_external_id(ChannelId.SLACK, team_id)
        if holder is not None:
            raise Conflict("slack_team_taken", f"Slack workspace {team_id} is already "
                           "connected to an integration", "configuration.code")
        return msgspec.structs.replace(
            config,
            code=None,
            state=None,  # the seed's state carries the client secret: never keep it
            bot_access_token=token,
            app_access_token=user_token,
            team_id=team_id,
            bot_user_id=bot_user_id,
            bot_name=bot_name,
            default_public_channel=(config.default_public_channel or slack_posts.DEFAULT_CHANNEL)
            .lstrip("#"),
        )

    rotatable = ("bot_access_token", "app_access_token")

    async def rotate_credentials(self, rec: IntegrationRecord, given: dict[str, str]
                                 ) -> dict[str, str]:
        """A new bot token must belong to the integration's own workspace (auth.test)."""
        config = rec.configuration
        assert isinstance(config, SlackConfig)
        if "bot_access_token" in given:
            who = slack_provisioning.parse_auth_test(*await self._call(
                "auth.test", token=given["bot_access_token"]))
            if who.team_id != config.team_id:
                raise BadRequest("slack_team_mismatch", "the token belongs to another "
                                 "workspace", "configuration.botAccessToken")
        return given

    async def _call(self, method: str, *, data: dict[str, str] | None = None,
                    token: str | None = None) -> tuple[int, bytes]:
        url = f"{self.runtime.settings.slack_api_url.rstrip('/')}/{method}"
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            resp = await self.runtime.http.request("POST", url, headers=headers,
                                                   content=urlencode(data or {}).encode())
        except HttpError as exc:
            log.warning("slack: %s failed: %s", method, exc.reason)
            raise Unavailable("slack_unavailable", f"Slack {method} is unreachable; retry later"
                              ) from None
        return resp.status_code, resp.content

    # ---- inbound: the Events API ----------------------------------------------------

    async def events(self, request: Request) -> Response:
        s = self.runtime.settings
        body = await read_body(request, s.max_body_bytes)
        slack_signature.verify_request(s.slack_signing_secret, request.headers, body,
                                       now_s=int(time.time()), tolerance_s=s.timestamp_tolerance_s)
        verified(request)
        env = slack_events.parse_envelope(body)
        if env.type == "url_verification":
            return JSON({"challenge": env.challenge or ""})
        if env.type != "event_callback":
            return _ack()
        rec = await self._integration(env.team)
        if rec is None or not rec.active or not isinstance(rec.configuration, SlackConfig):
            # Not ours (or paused): acknowledged, or Slack would retry and then disable us.
            return _ack()
        event = slack_events.agent_reply(env, bot_user_id=rec.configuration.bot_user_id)
        if event is None:
            return _ack()
        assert event.channel and event.thread_ts
        conversation = await self._conversation(
            rec.integration_id, slack_events.thread_key(event.channel, event.thread_ts))
        if conversation is None:
            return _ack()  # a thread the hub did not start
        activities = slack_events.reply_activities(
            hub_id=rec.hub_id, integration_id=rec.integration_id,
            conversation_id=conversation.conversation_id, env=env, event=event,
            now_ms=clock.now_ms())
        for activity in activities:
            # Acked means durable: Slack hears 200 only once every part is on Kafka.
            await self.runtime.publish(activity)
        return _ack()

    async def _integration(self, team_id: str | None) -> IntegrationRecord | None:
        if not team_id:
            return None
        registry = self.runtime.registry
        rec = registry.view.by_external_id(ChannelId.SLACK, team_id)
        if rec is None:
            await registry.sync()  # installed a moment ago by another process?
            rec = registry.view.by_external_id(ChannelId.SLACK, team_id)
        return rec

    async def _conversation(self, integration_id: str, thread: str
                            ) -> ConversationRecord | None:
        store = self.runtime.conversations
        conv = store.by_thread(integration_id, thread)
        # The deliverer that opened the thread (maybe in another process) records it just
        # after Slack accepted the post: give a reply racing that write a moment.
        for delay in THREAD_GRACE_S:
            if conv is not None:
                break
            await asyncio.sleep(delay)
            await store.sync()
            conv = store.by_thread(integration_id, thread)
        return conv


THREAD_GRACE_S = (0.0, 0.25, 0.5)  # well within Slack's 3 s to acknowledge


def _ack() -> Response:
    return Response(status_code=200)


class SlackSender:
    """Posts deliveries to Slack with ``chat.postMessage`` (one attempt per call)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        activity = delivery.activity
        cfg = destination.configuration
        if not isinstance(cfg, SlackConfig):
            return Attempt(outcome=Outcome.PERMANENT, reason="not_a_slack_integration")
        if activity.message is None:
            return Attempt(outcome=Outcome.DELIVERED, reason="not_a_message")
        if not cfg.bot_access_token:
            return Attempt(outcome=Outcome.PERMANENT, reason="slack_no_bot_token")
        try:
            token = open_config_secret(self.runtime.sealer, destination,
                                       "bot_access_token") or ""
        except (SwitchboardError, ValueError) as exc:
            log.error("delivery %s: bot token of %s unusable (%s)", delivery.delivery_id,
                      destination.integration_id, type(exc).__name__)
            return Attempt(outcome=Outcome.RETRY, reason="bot_token_unusable")
        store = self.runtime.conversations
        dest_id = destination.integration_id
        try:
            conv = store.get(delivery.conversation_id)
            thread = conv.threads.get(dest_id) if conv else None
            if thread is None:
                # Another process may have opened the thread before a rebalance.
                await store.sync()
                conv = store.get(delivery.conversation_id)
                thread = conv.threads.get(dest_id) if conv else None
        except Unavailable:
            return Attempt(outcome=Outcome.RETRY, reason="conversations_unavailable")
        where = slack_events.split_thread(thread) if thread else None
        if where is not None:
            payload = slack_posts.thread_request(where[0], where[1], activity)
        else:
            source = self.runtime.registry.view.integrations.get(activity.integration_id)
            payload = slack_posts.parent_request(
                cfg.default_public_channel or slack_posts.DEFAULT_CHANNEL, activity,
                source_channel=source.channel_id.value if source else activity.channel_id,
                source_name=source.name if source else None)
        result = await self._post(token, payload)
        if result.outcome is Outcome.DELIVERED and where is None:
            assert result.channel and result.ts
            try:
                await self._record(delivery, conv, dest_id,
                                   slack_events.thread_key(result.channel, result.ts))
            except Unavailable:
                # Posted but not recorded: the retry opens another thread rather than
                # letting later messages go astray.
                return Attempt(outcome=Outcome.RETRY, reason="thread_not_recorded")
        return Attempt(outcome=result.outcome, status=result.status or None,
                       retry_after=result.retry_after, reason=result.reason)

    async def _record(self, delivery: Delivery, conv: ConversationRecord | None,
                      dest_id: str, thread: str) -> None:
        store = self.runtime.conversations
        if conv is not None:
            await store.record_thread(conv.conversation_id, dest_id, thread)
            return
        # The router records a conversation before routing its first message, so this is
        # only a safety net: without a record the thread could never be found again.
        activity = delivery.activity
        await store.put(ConversationRecord(
            conversation_id=delivery.conversation_id, hub_id=delivery.hub_id,
            customer_integration_id=activity.integration_id, customer_id=activity.sender.id,
            created_at=clock.now_ms(), threads={dest_id: thread}))

    async def _post(self, token: str, payload: dict[str, object]) -> slack_posts.PostResult:
        url = f"{self.runtime.settings.slack_api_url.rstrip('/')}/chat.postMessage"
        headers = {"Authorization": f"Bearer {token}",
                   "Content-Type": "application/json; charset=utf-8"}
        try:
            resp = await self.runtime.http.request("POST", url, content=_json.encode(payload),
                                                   headers=headers)
        except HttpTimeout:
            return slack_posts.PostResult(outcome=Outcome.RETRY, reason="timeout", status=0)
        except HttpError as exc:
            return slack_posts.PostResult(outcome=Outcome.RETRY, reason=exc.reason, status=0)
        retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
        return slack_posts.parse_post_response(resp.status_code, resp.content, retry_after)
