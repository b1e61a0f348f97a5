"""Fuzz: Standard Webhooks verification and the Direct ingress, every pure step of it.

Invariant: any headers and body are accepted or refused with our error; a correctly
signed, fresh message is accepted and a changed body refused; and whatever the ingress
accepts, the router can read (it is published, and a record the router cannot decode
would be lost there, after the sender was told 202).
"""

from __future__ import annotations

import base64
import random
from typing import NamedTuple

import nacl.signing
from hypothesis import given

from switchboard import inbound, webhooks
from switchboard.channels import DirectConfig
from switchboard.keys import (
    HMAC_SECRET_PREFIX,
    PUBLIC_KEY_PREFIX,
    SECRET_KEY_PREFIX,
    SigningKeyPair,
)
from switchboard.model import (
    ChannelId,
    IntegrationType,
    StatusId,
    activity_decoder,
    activity_encoder,
)
from switchboard.registry import IntegrationRecord, KeySet
from tests.fuzz.strategies import cases, near_valid, ours_or_result, text_like

NOW = 1_700_000_000
# Fixed keys (Ed25519 signatures are deterministic), so a seed replays the same inputs.
_SEED_KEY = nacl.signing.SigningKey(b"\x01" * 32)
_PUBLIC = bytes(_SEED_KEY.verify_key)
ED = SigningKeyPair(public=PUBLIC_KEY_PREFIX + base64.b64encode(_PUBLIC).decode(),
                    secret=SECRET_KEY_PREFIX + base64.b64encode(bytes(_SEED_KEY) + _PUBLIC)
                    .decode())
HMAC = HMAC_SECRET_PREFIX + base64.b64encode(b"\x02" * 32).decode()
SIGNER = webhooks.Signer(ed25519=[ED.secret], hmac=[HMAC])
VERIFIER = webhooks.Verifier(public_keys=[ED.public], hmac_secrets=[HMAC], tolerance=300)

DIRECT_TEMPLATES = [
    {"type": "message", "sender": {"id": "cust-1", "name": "Ann"},
     "message": {"type": "text", "text": "hi", "quickReplies": [{"title": "a", "payload": "b"}]},
     "conversationId": "conv-1", "metadata": {"k": "v"}},
    {"type": "message", "sender": {"id": "agent-7"},
     "message": {"type": "carousel", "cards": [
         {"title": "t", "subtitle": "s", "imageUrl": "https://x.test/i.png",
          "buttons": [{"title": "b", "type": "url", "url": "https://x.test"},
                      {"title": "c", "type": "postback", "payload": "p"}]}]}},
    {"type": "message", "sender": {"id": "u"},
     "message": {"type": "image", "url": "https://x.test/a.png", "caption": "c"}},
    {"type": "message", "sender": {"id": "u"},
     "message": {"type": "file", "url": "http://x.test/f", "name": "f", "mimeType": "a/b"}},
    {"type": "message", "sender": {"id": "u"},
     "message": {"type": "card", "title": "t", "buttons": []}},
]


def signature_header(r: random.Random) -> str:
    """Entries of every shape: right and wrong versions, base64 of every length (padded,
    unpadded, over-padded, URL-safe, non-ASCII), junk, more entries than are checked."""
    entries = []
    for _ in range(r.choice([0, 1, 1, 2, 3, 17, 40])):
        version = r.choice(["v1", "v1a", "v1a", "v2", "", "V1A", "v1a,v1a"])
        encoded = base64.b64encode(r.randbytes(r.choice([0, 1, 31, 32, 33, 63, 64, 65, 200])))
        text = encoded.decode()
        text = r.choice([text, text.rstrip("="), text + "=", text[:-2] + "!!",
                         text.replace("+", "-"), "é" + text])
        entries.append(f"{version},{text}" if r.random() < 0.9 else text)
    if r.random() < 0.05:
        return "v1a," + "A" * r.randrange(5000)
    return r.choice([" ", " ", "  ", "\t", "\n", ",", "\u3000"]).join(entries)


class Signed(NamedTuple):
    headers: dict[str, str]
    body: bytes
    mode: str
    fresh: bool


def signed_case(r: random.Random) -> Signed:
    body = near_valid(r, *DIRECT_TEMPLATES)
    msg_id = text_like(r, "msg_2Xk9fPq", "a", "x" * 256, "msg-1.2_3~!")
    timestamp = (str(r.randint(NOW - 400, NOW + 400)) if r.random() < 0.7
                 else text_like(r, str(NOW), "0", "01700000000", "9" * 21))
    signable = (msg_id.isascii() and msg_id.isprintable() and " " not in msg_id
                and 0 < len(msg_id) <= webhooks.MAX_ID_LENGTH and timestamp.isascii()
                and timestamp.isdigit() and str(int(timestamp)) == timestamp)
    mode = r.choice(["valid", "valid+junk", "other body", "junk"]) if signable else "junk"
    if mode == "other body":
        signature = SIGNER.sign(msg_id, int(timestamp), body + b" ")
    elif mode.startswith("valid"):
        signature = SIGNER.sign(msg_id, int(timestamp), body)
        if mode == "valid+junk":
            signature = f"{signature_header(r)} {signature}"
    else:
        signature = signature_header(r)
    headers = {webhooks.HEADER_ID: msg_id, webhooks.HEADER_TIMESTAMP: timestamp,
               webhooks.HEADER_SIGNATURE: signature}
    if r.random() < 0.1:
        del headers[r.choice(list(headers))]
        mode = "incomplete"
    return Signed(headers, body, mode, signable and abs(int(timestamp) - NOW) <= 300)


@given(cases(signed_case))
def test_standard_webhooks_verify(case: Signed) -> None:
    got = ours_or_result(VERIFIER.verify, case.headers, case.body, now=NOW)
    msg_id = case.headers.get(webhooks.HEADER_ID, "")
    timestamp = case.headers.get(webhooks.HEADER_TIMESTAMP, "")
    if case.mode == "valid" and case.fresh:
        assert got == webhooks.VerifiedWebhook(msg_id, int(timestamp))
    if case.mode in ("other body", "junk"):
        assert got is None


def _record(itype: IntegrationType) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id="i-1", hub_id="h-1", channel_id=ChannelId.DIRECT, integration_type=itype,
        name="site", status_id=StatusId.ACTIVE, configuration=DirectConfig(integration_type=itype),
        version=1, created_at=0, updated_at=0,
        keys=[KeySet(created_at=0, outbound_public=ED.public, outbound_secret_sealed="x",
                     inbound_public=ED.public)])


RECORDS = [_record(IntegrationType.CUSTOMER), _record(IntegrationType.AGENT)]


class Request(NamedTuple):
    body: bytes
    rec: IntegrationRecord
    webhook_id: str
    content_length: str | None
    content_type: str | None


def request_case(r: random.Random) -> Request:
    return Request(
        body=near_valid(r, *DIRECT_TEMPLATES),
        rec=r.choice(RECORDS),
        webhook_id=r.choice(["msg_1", "x" * 256, "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"]),
        content_length=None if r.random() < 0.2 else text_like(
            r, "0", "262144", "262145", "\u0661\u0662", "10" * 20, "9" * 4301,
            "0" * 30 + "1"),
        content_type=None if r.random() < 0.2 else text_like(
            r, "application/json", "APPLICATION/JSON; x=y", "application/json;charset=utf-8"),
    )


@given(cases(request_case))
def test_direct_ingress(case: Request) -> None:
    ours_or_result(inbound.check_content_length, case.content_length, 256 * 1024)
    ours_or_result(inbound.check_json_content_type, case.content_type)
    activity = ours_or_result(inbound.normalize_direct, case.rec, case.webhook_id, case.body,
                              NOW * 1000)
    if activity is not None:
        # What the ingress publishes, the router reads back.
        assert activity_decoder.decode(activity_encoder.encode(activity)) == activity
