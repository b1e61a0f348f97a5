"""TwilioSMS channel: the I/O shell around `switchboard.providers.twilio_signature`,
`twilio_webhooks` and `twilio_api`.

- `provision`: reads the number (phoneNumber, capabilities) and points its SmsUrl at the
  integration's ingress URL; Twilio refusing the credentials is a 400, nothing stored.
- `inbound`: ``POST /ingress/{integrationId}`` from Twilio (incoming SMS/MMS and status
  callbacks): verify, normalize, publish durably, then answer empty TwiML.
- `sender`: ``Messages.json`` for agent and bot messages to the conversation's customer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchboard import clock
from switchboard.channels import ChannelConfig, TwilioSmsConfig
from switchboard.errors import BadRequest, Conflict, Unavailable, UnsupportedMediaType
from switchboard.model import ChannelId, Delivery
from switchboard.outbound import SKIPPED, Attempt, classify_provider_status
from switchboard.providers import twilio_api, twilio_signature, twilio_webhooks
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome, parse_retry_after
from switchboard.sealing import open_config_secret
from switchboard.services.channels.base import ChannelPlugin, authenticated
from switchboard.services.http import read_body
from switchboard.services.http_client import HttpAnswer, HttpError, HttpTimeout
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
# Deliveries whose first parts Twilio already accepted, so a retry sends only the rest.
_PROGRESS_SIZE = 10_000


def _form(fields: list[tuple[str, str]]) -> bytes:
    """Form-encode `fields` in order, repeated names (MediaUrl) kept."""
    return urlencode(fields).encode()


class TwilioPlugin(ChannelPlugin):
    channel = ChannelId.TWILIO_SMS

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self._sender = TwilioSender(runtime)

    @property
    def sender(self) -> TwilioSender:
        return self._sender

    # ---- provisioning ------------------------------------------------------------

    async def provision(self, integration_id: str, config: ChannelConfig) -> ChannelConfig:
        assert isinstance(config, TwilioSmsConfig)
        settings = self.runtime.settings
        url = twilio_api.number_url(settings.twilio_api_url, config.account_sid, config.number_sid)
        auth = (config.account_sid, config.auth_token)
        resp = await self._call("GET", url, auth)
        phone_number, capabilities = twilio_api.parse_number(resp.content)
        if not capabilities.sms:
            raise BadRequest("number_cannot_sms", f"{phone_number} cannot send SMS",
                             "configuration.numberSid")
        holder = self.runtime.registry.view.by_external_id(ChannelId.TWILIO_SMS, phone_number)
        if holder is not None:
            # A number has one SmsUrl: taking it over would silence the other integration.
            raise Conflict("number_in_use",
                           f"{phone_number} is already connected to another integration",
                           "configuration.numberSid")
        await self._call("POST", url, auth,
                         data=twilio_api.sms_url_update(settings.public_url, integration_id))
        return msgspec.structs.replace(config, phone_number=phone_number,
                                       capabilities=capabilities)

    rotatable = ("auth_token", "shared_key_secret")

    async def rotate_credentials(self, rec: IntegrationRecord, given: dict[str, str]
                                 ) -> dict[str, str]:
        """A new auth token must read the integration's own number (a rotated token of the
        same account); a SharedKey secret cannot be checked with Twilio's API."""
        config = rec.configuration
        assert isinstance(config, TwilioSmsConfig)
        if "auth_token" in given:
            url = twilio_api.number_url(self.runtime.settings.twilio_api_url, config.account_sid,
                                        config.number_sid)
            resp = await self._call("GET", url, (config.account_sid, given["auth_token"]))
            phone_number, _ = twilio_api.parse_number(resp.content)
            if phone_number != config.phone_number:
                raise BadRequest("provider_error", "the token reads another number",
                                 "configuration.authToken")
        return given

    async def deprovision(self, rec: IntegrationRecord) -> None:
        """Clear the number's SmsUrl so Twilio stops posting to a deleted integration."""
        config = rec.configuration
        assert isinstance(config, TwilioSmsConfig)
        url = twilio_api.number_url(self.runtime.settings.twilio_api_url, config.account_sid,
                                    config.number_sid)
        token = open_config_secret(self.runtime.sealer, rec, "auth_token") or ""
        await self._call("POST", url, (config.account_sid, token), data=[("SmsUrl", "")])

    async def _call(self, method: str, url: str, auth: tuple[str, str],
                    data: list[tuple[str, str]] | None = None) -> HttpAnswer:
        try:
            resp = await self.runtime.http.request(
                method, url, auth=auth, content=_form(data) if data is not None else None,
                headers={"content-type": FORM} if data is not None else None)
        except HttpError as exc:
            log.warning("twilio provisioning: %s %s", method, exc.reason)
            raise Unavailable("provider_unavailable", "Twilio could not be reached; retry",
                              retry_after=5) from None
        if resp.is_success:
            return resp
        err = twilio_api.parse_error(resp.status_code, resp.content)
        if classify_provider_status(resp.status_code) is Outcome.RETRY:
            raise Unavailable("provider_unavailable", f"{err.describe()}; retry", retry_after=5)
        field = ("configuration.authToken" if resp.status_code in (401, 403)
                 else "configuration.numberSid" if resp.status_code == 404 else "configuration")
        raise BadRequest("provider_error", err.describe(), field)

    # ---- inbound -------------------------------------------------------------------

    async def inbound(self, request: Request, rec: IntegrationRecord) -> Response:
        cfg = rec.configuration
        assert isinstance(cfg, TwilioSmsConfig)
        settings = self.runtime.settings
        media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media != FORM:
            raise UnsupportedMediaType("unsupported_media_type", f"Content-Type must be {FORM}")
        body = await read_body(request, settings.max_body_bytes)
        params = twilio_signature.parse_form(body)
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else request.url.path
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = twilio_signature.full_url(settings.public_url, path, query)
        sealer = self.runtime.sealer
        twilio_signature.verify_signature(
            request.headers, url, params,
            auth_token=open_config_secret(sealer, rec, "auth_token") or "",
            shared_key=open_config_secret(sealer, rec, "shared_key_secret"),
        )
        twilio_webhooks.check_account(params, cfg.account_sid)
        authenticated(request, rec)
        activities = twilio_webhooks.normalize(
            params, hub_id=rec.hub_id, integration_id=rec.integration_id,
            query=twilio_signature.parse_form(query.encode("latin-1")),
            now_ms=clock.now_ms())
        # In order, each durable before the next (they share the conversation's partition).
        for activity in activities:
            await self.runtime.publish(activity)
        return Response(twilio_webhooks.EMPTY_TWIML, media_type=twilio_webhooks.TWIML_MEDIA_TYPE)


class TwilioSender:
    """Sends agent and bot messages as SMS/MMS through Twilio's Messages API."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._progress: OrderedDict[str, int] = OrderedDict()

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        activity = delivery.activity
        cfg = destination.configuration
        if (activity.message is None or activity.type not in ("message:agent", "message:bot")
                or not isinstance(cfg, TwilioSmsConfig)):
            # The customer's own messages (echo) and events are not texted back.
            return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)
        if not cfg.phone_number:
            return Attempt(outcome=Outcome.PERMANENT, reason="no_phone_number")
        conversations = self.runtime.conversations
        conversation = conversations.get(delivery.conversation_id)
        if conversation is None:
            await conversations.sync()  # Unavailable → the deliverer retries
            conversation = conversations.get(delivery.conversation_id)
        if conversation is None:
            return Attempt(outcome=Outcome.PERMANENT, reason="unknown_conversation")
        settings = self.runtime.settings
        mms = cfg.capabilities is None or cfg.capabilities.mms
        requests = twilio_api.message_requests(
            activity.message, from_number=cfg.phone_number, to=conversation.customer_id,
            mms=mms, status_callback=lambda part: twilio_api.status_callback_url(
                settings.public_url, destination.integration_id, activity.activity_id, part))
        if not requests:
            return Attempt(outcome=Outcome.PERMANENT, reason="empty_message")
        url = twilio_api.messages_url(settings.twilio_api_url, cfg.account_sid)
        auth = (cfg.account_sid,
                open_config_secret(self.runtime.sealer, destination, "auth_token") or "")
        done = self._progress.get(delivery.delivery_id, 0)
        for index in range(done, len(requests)):
            attempt = await self._post(url, auth, requests[index])
            if attempt.outcome is not Outcome.DELIVERED:
                return attempt
            self._remember(delivery.delivery_id, index + 1)
        self._progress.pop(delivery.delivery_id, None)
        return Attempt(outcome=Outcome.DELIVERED, status=201)

    async def _post(self, url: str, auth: tuple[str, str],
                    form: list[tuple[str, str]]) -> Attempt:
        try:
            resp = await self.runtime.http.request("POST", url, auth=auth, content=_form(form),
                                                   headers={"content-type": FORM})
        except HttpTimeout:
            return Attempt(outcome=Outcome.RETRY, reason="timeout")
        except HttpError as exc:
            return Attempt(outcome=Outcome.RETRY, reason=exc.reason)
        outcome = classify_provider_status(resp.status_code)
        if outcome is Outcome.DELIVERED:
            return Attempt(outcome=outcome, status=resp.status_code)
        err = twilio_api.parse_error(resp.status_code, resp.content)
        return Attempt(outcome=outcome, status=resp.status_code, reason=err.reason,
                       retry_after=parse_retry_after(resp.headers.get("retry-after"),
                                                     time.time()))

    def _remember(self, delivery_id: str, parts_sent: int) -> None:
        self._progress[delivery_id] = parts_sent
        self._progress.move_to_end(delivery_id)
        while len(self._progress) > _PROGRESS_SIZE:
            self._progress.popitem(last=False)
