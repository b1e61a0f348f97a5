"""A loopback Twilio: the REST API's wire format, and Twilio's side of the webhooks.

Speaks what `api.twilio.com` speaks for the calls the hub makes (2010-04-01):

- ``GET|POST /2010-04-01/Accounts/{Sid}/IncomingPhoneNumbers/{Sid}.json`` (read a number,
  update its ``SmsUrl``/``SmsMethod``);
- ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` (form fields ``To``, ``From``, ``Body``,
  repeatable ``MediaUrl``, ``StatusCallback``), answering 201 with the Message resource;

with HTTP basic auth (account SID : auth token) and Twilio's JSON error bodies
(``{"code", "message", "more_info", "status"}``). It records every request. As Twilio, it
also posts incoming SMS to a number's ``SmsUrl`` and status callbacks to a message's
``StatusCallback``, signed with ``X-Twilio-Signature`` by the twilio SDK's own
``RequestValidator`` (the oracle).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from switchboard.brokers import free_port
from tests.support import LoopbackServer

E164 = re.compile(r"^\+[1-9]\d{7,14}$")


def _error(status: int, code: int, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message,
                         "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status, headers=headers)


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass
class Number:
    account_sid: str
    sid: str
    phone_number: str
    capabilities: dict[str, bool]
    sms_url: str | None = None
    sms_method: str | None = None

    def resource(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid, "sid": self.sid,
            "phone_number": self.phone_number, "friendly_name": self.phone_number,
            "capabilities": {**self.capabilities, "fax": False},
            "sms_url": self.sms_url or "", "sms_method": self.sms_method or "POST",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json",
        }


@dataclass
class Sent:
    """One Messages.json request (accepted or not)."""

    account_sid: str
    auth: tuple[str, str] | None
    form: list[tuple[str, str]]
    status: int
    sid: str | None = None
    at: float = field(default_factory=time.monotonic)

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.form if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]


class FakeTwilio:
    """`script(to, [(status, headers), ...])` makes the next sends to `to` fail that way."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accounts: dict[str, str] = {}
        self.numbers: dict[tuple[str, str], Number] = {}
        self.sent: list[Sent] = []  # every Messages.json request, in arrival order
        self.number_requests: list[tuple[str, tuple[str, str] | None]] = []
        self._scripts: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        self._changed = asyncio.Condition()
        prefix = "/2010-04-01/Accounts/{account}"
        app = Starlette(routes=[
            Route(prefix + "/IncomingPhoneNumbers/{number}.json", self._number,
                  methods=["GET", "POST"]),
            Route(prefix + "/Messages.json", self._messages, methods=["POST"]),
        ])
        self._http = LoopbackServer(app, self.port)

    # ---- set-up ----------------------------------------------------------------------

    def add_account(self) -> tuple[str, str]:
        sid, token = new_sid("AC"), uuid.uuid4().hex
        self.accounts[sid] = token
        return sid, token

    def add_number(self, account_sid: str, phone_number: str, *, mms: bool = True,
                   sms: bool = True) -> Number:
        number = Number(account_sid, new_sid("PN"), phone_number,
                        {"mms": mms, "sms": sms, "voice": True})
        self.numbers[(account_sid, number.sid)] = number
        return number

    def script(self, to: str, responses: list[tuple[int, dict[str, str]]]) -> None:
        self._scripts.setdefault(to, deque()).extend(responses)

    # ---- the REST API ------------------------------------------------------------------

    def _auth(self, request: Request, account: str) -> tuple[tuple[str, str] | None,
                                                             Response | None]:
        header = request.headers.get("authorization", "")
        creds: tuple[str, str] | None = None
        if header.lower().startswith("basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            creds = (user, password)
        if creds is None or self.accounts.get(creds[0]) != creds[1] or creds[0] != account:
            return creds, _error(401, 20003, "Authenticate",
                                 {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        return creds, None

    async def _number(self, request: Request) -> Response:
        account, sid = request.path_params["account"], request.path_params["number"]
        creds, denied = self._auth(request, account)
        self.number_requests.append((request.method, creds))
        if denied:
            return denied
        number = self.numbers.get((account, sid))
        if number is None:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        if request.method == "POST":
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if "SmsUrl" in form:
                number.sms_url = form["SmsUrl"]
            if "SmsMethod" in form:
                number.sms_method = form["SmsMethod"]
        return JSONResponse(number.resource())

    async def _messages(self, request: Request) -> Response:
        account = request.path_params["account"]
        creds, denied = self._auth(request, account)
        form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        record = Sent(account, creds, form, 0)
        response = self._answer(account, record, denied)
        record.status = response.status_code
        async with self._changed:
            self.sent.append(record)
            self._changed.notify_all()
        return response

    def _answer(self, account: str, sent: Sent, denied: Response | None) -> Response:
        if denied:
            return denied
        to, from_, body = sent.get("To"), sent.get("From"), sent.get("Body")
        media = sent.all("MediaUrl")
        script = self._scripts.get(to or "")
        if script:
            status, headers = script.popleft()
            return _error(status, 20429 if status == 429 else 20500,
                          "Too Many Requests" if status == 429 else "Internal Server Error",
                          headers)
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        owned = {n.phone_number for n in self.numbers.values() if n.account_sid == account}
        if from_ not in owned:
            return _error(400, 21606, f"The From phone number {from_} is not a valid, "
                          "SMS-capable inbound phone number or short code for your account.")
        if not body and not media:
            return _error(400, 21602, "Message body is required.")
        if body and len(body.encode("utf-16-le")) // 2 > 1600:
            return _error(400, 21617,
                          "The concatenated message body exceeds the 1600 character limit.")
        if len(media) > 10:
            return _error(400, 21623, "Number of media files exceeds allowed limit.")
        sent.sid = new_sid("MM" if media else "SM")
        return JSONResponse({
            "account_sid": account, "api_version": "2010-04-01", "body": body or "",
            "direction": "outbound-api", "from": from_, "to": to, "sid": sent.sid,
            "num_media": str(len(media)), "num_segments": "1", "status": "queued",
            "error_code": None, "error_message": None, "price": None,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sent.sid}.json",
        }, status_code=201)

    def accepted(self, to: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.sid and (to is None or s.get("To") == to)]

    def attempts(self, to: str) -> list[Sent]:
        return [s for s in self.sent if s.get("To") == to]

    async def wait_for(self, to: str, count: int, timeout: float = 30.0) -> list[Sent]:
        """Wait until `count` messages to `to` were accepted."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.accepted(to)) >= count)
        return self.accepted(to)

    # ---- Twilio's webhooks -----------------------------------------------------------------

    async def post_webhook(self, url: str, params: dict[str, str], token: str,
                           rewrite: Callable[[str], str] = lambda u: u) -> httpx.Response:
        """POST `params` form-encoded to `url`, signed for `url`; sent to `rewrite(url)` (the
        proxy in front of the hub)."""
        signature = RequestValidator(token).compute_signature(url, params)
        async with httpx.AsyncClient(timeout=15) as client:
            return await client.post(rewrite(url), data=params, headers={
                "X-Twilio-Signature": signature,
                "User-Agent": "TwilioProxy/1.1",
                "I-Twilio-Idempotency-Token": uuid.uuid4().hex,
            })

    async def incoming_sms(self, number: Number, from_: str, body: str, *,
                           media: list[tuple[str, str]] | None = None,
                           sid: str | None = None,
                           rewrite: Callable[[str], str] = lambda u: u) -> httpx.Response:
        """A customer texts `number`: Twilio posts to the number's SmsUrl."""
        assert number.sms_url, "the number has no SmsUrl"
        media = media or []
        sid = sid or new_sid("MM" if media else "SM")
        params: dict[str, str] = {
            "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": str(len(media)),
            "ToCity": "", "FromZip": "", "SmsSid": sid, "FromState": "ON", "SmsStatus": "received",
            "FromCity": "TORONTO", "Body": body, "FromCountry": "CA", "To": number.phone_number,
            "ToZip": "", "NumSegments": "1", "MessageSid": sid,
            "AccountSid": number.account_sid, "From": from_, "ApiVersion": "2010-04-01",
        }
        for i, (url, content_type) in enumerate(media):
            params[f"MediaUrl{i}"] = url
            params[f"MediaContentType{i}"] = content_type
        return await self.post_webhook(number.sms_url, params,
                                       self.accounts[number.account_sid], rewrite)

    async def status_callback(self, sent: Sent, status: str, *, error_code: str | None = None,
                              rewrite: Callable[[str], str] = lambda u: u) -> httpx.Response:
        """Twilio reports `status` of an accepted message to its StatusCallback."""
        url = sent.get("StatusCallback")
        assert url and sent.sid
        params = {
            "SmsSid": sent.sid, "SmsStatus": status, "MessageStatus": status,
            "To": sent.get("To") or "", "MessageSid": sent.sid, "AccountSid": sent.account_sid,
            "From": sent.get("From") or "", "ApiVersion": "2010-04-01",
        }
        if error_code is not None:
            params["ErrorCode"] = error_code
        return await self.post_webhook(url, params, self.accounts[sent.account_sid], rewrite)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeTwilio:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()
