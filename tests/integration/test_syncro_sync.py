"""Syncro tickets ⇄ conversations end to end: loopback Twilio and Syncro, a real hub on a
real broker. A customer's SMS opens a Syncro ticket (the customer found or created by
phone), later SMS are comments on it, a technician's public comment comes back as an SMS
(hidden ones and the hub's own never do), the ticket resolved closes the conversation
and the next SMS opens a new ticket (or reopens the old one) — with every service
restarted in between. A Direct customer's message opens a ticket as well."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from switchboard.providers.syncro_sync import is_hub_text
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.fakes.syncro import Account, FakeSyncro
from tests.fakes.twilio import FakeTwilio, Number
from tests.support import Receiver, sign_with_cryptography

PUBLIC = "https://hub.example.test/sb"


@dataclass
class Env:
    settings: Settings
    hub: RunningHub
    syncro: FakeSyncro
    twilio: FakeTwilio
    receiver: Receiver

    def to_hub(self, url: str) -> str:
        """The proxy between the providers and the hub (which may have restarted)."""
        assert url.startswith(PUBLIC), url
        return self.hub.base_url + url[len(PUBLIC):]

    async def restart(self) -> None:
        """Every service goes down and comes back: state lives in Kafka only."""
        await self.hub.stop()
        self.hub = await RunningHub(self.settings).start()


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    syncro = await FakeSyncro().start()
    twilio = await FakeTwilio().start()
    receiver = await Receiver().start()
    settings = make_settings(broker, public_url=PUBLIC, twilio_api_url=twilio.url,
                             syncro_api_url=syncro.api_url(), provider_timeout_s=2.0)
    e = Env(settings, await RunningHub(settings).start(), syncro, twilio, receiver)
    try:
        yield e
    finally:
        await e.hub.stop()
        await receiver.stop()
        await twilio.stop()
        await syncro.stop()


@dataclass
class Shop:
    hub_id: str
    auth: dict[str, str]
    account: Account
    syncro: dict[str, Any]
    number: Number | None
    tag: str

    @property
    def inbound_url(self) -> str:
        url: str = self.syncro["configuration"]["inboundUrl"]
        return url


async def shop(env: Env, *, sms: bool = True, **syncro_config: Any) -> Shop:
    """A hub with a Syncro integration (its own account), maybe a TwilioSMS number, and a
    System observer of closed conversations."""
    tag = uuid.uuid4().hex[:8]
    hub_id, auth = await env.hub.create_hub("msp-" + tag)
    number = None
    if sms:
        sid, token = env.twilio.add_account()
        number = env.twilio.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
        await env.hub.create_integration(
            hub_id, auth, channelId="TwilioSMS", name="sms",
            configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid})
    account = env.syncro.add_account("msp" + tag, "tok-" + uuid.uuid4().hex)
    integration = await env.hub.create_integration(
        hub_id, auth, channelId="Syncro", name="psa",
        configuration={"subdomain": account.subdomain, "apiToken": account.token,
                       "defaultTicketStatus": "New", "problemType": "Remote Support",
                       **syncro_config})
    await env.hub.create_integration(
        hub_id, auth, channelId="System", name="audit",
        configuration={"webhookUrl": f"{env.receiver.url}/{tag}/audit",
                       "events": ["event:conversation_closed"]})
    return Shop(hub_id, auth, account, integration, number, tag)


async def until(done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for a state of a fake to come about (never used to prove that nothing did)."""
    # The fakes record state without signalling it: look again every 50 ms.
    async with asyncio.timeout(timeout):
        while True:
            if done():
                return
            await asyncio.sleep(0.05)


async def text(env: Env, s: Shop, customer: str, body: str) -> None:
    assert s.number is not None
    r = await env.twilio.incoming_sms(s.number, customer, body, rewrite=env.to_hub)
    assert r.status_code == 200, r.text


async def webhook(env: Env, s: Shop, trigger: str, ticket: dict[str, Any]) -> None:
    """Syncro's Notification Center posts `ticket` as it is now (a copy: later changes
    are not in it)."""
    r = await env.syncro.send_webhook(env.to_hub(s.inbound_url), s.account.subdomain,
                                      trigger, copy.deepcopy(ticket))
    assert r.status_code == 200, r.text


async def texts_until(env: Env, customer: str, sentinel: str) -> list[str]:
    """Every SMS the customer got, once `sentinel` is among them."""
    await until(lambda: any(m.get("Body") == sentinel for m in env.twilio.accepted(customer)))
    return [m.get("Body") or "" for m in env.twilio.accepted(customer)]


def bodies(ticket: dict[str, Any]) -> list[str]:
    return [c["body"] for c in ticket["comments"]]


async def test_sms_ticket_comments_answers_and_close_across_a_restart(env: Env) -> None:
    s = await shop(env)
    customer = "+1647" + str(uuid.uuid4().int)[:7]
    account = s.account

    # The first SMS: a customer Syncro does not know yet is created, a ticket opened.
    await text(env, s, customer, "My printer is on fire\nplease help")
    await until(lambda: len(account.tickets) == 1)
    (ticket,) = account.tickets
    (person,) = account.customers
    assert person["mobile"] == customer and person["phone"] == customer
    assert ticket["customer_id"] == person["id"]
    assert ticket["subject"] == "My printer is on fire"
    assert ticket["status"] == "New" and ticket["problem_type"] == "Remote Support"
    (first,) = ticket["comments"]
    assert first["body"].startswith("My printer is on fire\nplease help")
    assert is_hub_text(first["body"]) and first["hidden"] is False
    assert first["subject"] == f"SMS from {customer}"
    # Syncro tells the hub about the ticket it made: nothing goes back to the customer.
    await webhook(env, s, "ticket.created", ticket)

    await env.restart()

    # A later SMS is a comment on the same ticket: the link survived the restart.
    await text(env, s, customer, "It is still smoking")
    await until(lambda: len(ticket["comments"]) == 2)
    assert len(account.tickets) == 1 and len(account.customers) == 1
    assert ticket["comments"][1]["body"].startswith("It is still smoking")
    await webhook(env, s, "ticket.comment", ticket)  # the hub's own comment: not echoed

    # The technician answers: the customer gets it by SMS, from the business's number.
    env.syncro.tech_comment(ticket, "Unplug it and step away, please.")
    older = copy.deepcopy(ticket)
    await webhook(env, s, "ticket.comment", ticket)
    got = await texts_until(env, customer, "Unplug it and step away, please.")
    assert got == ["Unplug it and step away, please."]
    assert s.number is not None
    assert env.twilio.accepted(customer)[0].get("From") == s.number.phone_number

    # A hidden note never leaves Syncro; webhooks sent again or out of order repeat
    # nothing; the public comment after them proves they were all handled.
    env.syncro.tech_comment(ticket, "Customer keeps paper next to the heater", hidden=True)
    await webhook(env, s, "ticket.updated", ticket)
    newer = copy.deepcopy(ticket)
    await env.restart()
    env.syncro.tech_comment(ticket, "A technician is on the way.")
    await webhook(env, s, "ticket.updated", ticket)  # the newest first
    await webhook(env, s, "ticket.comment", older)  # then two older ones
    await webhook(env, s, "ticket.updated", newer)
    # A ticket the hub never wrote on (the same customer's, opened in Syncro) is not theirs.
    await webhook(env, s, "ticket.comment", {
        "id": ticket["id"] + 10_000, "customer_id": person["id"], "status": "New",
        "comments": [{"id": 1, "subject": "Update", "body": "Your invoice is ready",
                      "hidden": False, "tech": "Tina Tech"}]})
    got = await texts_until(env, customer, "A technician is on the way.")
    assert got == ["Unplug it and step away, please.", "A technician is on the way."]

    # Resolved, with a last word: it reaches the customer, then the conversation closes.
    env.syncro.tech_comment(ticket, "Fuser replaced, all good.", status="Resolved")
    await webhook(env, s, "ticket.resolved", ticket)
    await webhook(env, s, "ticket.resolved", ticket)  # sent twice: closed once
    got = await texts_until(env, customer, "Fuser replaced, all good.")
    assert got[-1] == "Fuser replaced, all good." and len(got) == 3
    (closed,) = await env.receiver.wait_for(f"/{s.tag}/audit", 1)
    (event,) = closed.json["activities"]
    assert event["type"] == "event:conversation_closed"
    assert event["event"]["data"]["ticketId"] == str(ticket["id"])
    assert event["event"]["data"]["reason"] == "syncro_ticket_resolved"

    # Writing again opens a new ticket, for the same Syncro customer.
    await text(env, s, customer, "Now the scanner jams")
    await until(lambda: len(account.tickets) == 2)
    second = account.tickets[1]
    assert second["id"] != ticket["id"] and second["customer_id"] == person["id"]
    assert second["subject"] == "Now the scanner jams"
    assert len(account.customers) == 1 and len(ticket["comments"]) == 6
    # The old ticket's webhooks no longer speak for the new conversation.
    env.syncro.tech_comment(second, "Which scanner?")
    await webhook(env, s, "ticket.comment", second)
    got = await texts_until(env, customer, "Which scanner?")
    assert got[3:] == ["Which scanner?"]
    # Only one conversation closed, whatever was sent twice.
    assert len(env.receiver.at(f"/{s.tag}/audit")) == 1


async def test_reopen_continues_the_resolved_ticket(env: Env) -> None:
    s = await shop(env, reopen=True)
    customer = "+1905" + str(uuid.uuid4().int)[:7]
    # A customer Syncro already knows, its number typed its own way.
    person = env.syncro.add_customer(s.account, firstname="Ada", lastname="Lovelace",
                                     mobile=customer[2:])
    await text(env, s, customer, "Email is down")
    await until(lambda: len(s.account.tickets) == 1)
    (ticket,) = s.account.tickets
    assert ticket["customer_id"] == person["id"] and len(s.account.customers) == 1
    env.syncro.tech_comment(ticket, "Fixed the MX record.", status="Resolved")
    await webhook(env, s, "ticket.resolved", ticket)
    await texts_until(env, customer, "Fixed the MX record.")
    await env.receiver.wait_for(f"/{s.tag}/audit", 1)

    await text(env, s, customer, "It is down again")
    await until(lambda: len(ticket["comments"]) == 3)
    assert len(s.account.tickets) == 1 and ticket["status"] == "New"
    assert ticket["comments"][2]["body"].startswith("It is down again")
    # What was relayed before the close is not sent again; what is new is.
    env.syncro.tech_comment(ticket, "Looking again.")
    await webhook(env, s, "ticket.updated", ticket)
    got = await texts_until(env, customer, "Looking again.")
    assert got == ["Fixed the MX record.", "Looking again."]


async def test_a_direct_customer_gets_a_ticket_and_the_answer(env: Env) -> None:
    s = await shop(env, sms=False, commentHidden=True)
    known = env.syncro.add_customer(s.account, firstname="Grace", lastname="Hopper",
                                    email="grace@navy.example")
    direct = await env.hub.create_integration(
        s.hub_id, s.auth, channelId="Direct", name="portal",
        configuration={"integrationType": "Customer",
                       "webhookUrl": f"{env.receiver.url}/{s.tag}/portal"})
    body = orjson.dumps({"type": "message", "message": {"type": "text", "text": "VPN fails"},
                         "sender": {"id": "Grace@navy.example", "name": "Grace Hopper"}})
    r = await env.hub.client.post(
        f"/ingress/{direct['integrationId']}", content=body,
        headers=sign_with_cryptography(direct["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text
    await until(lambda: len(s.account.tickets) == 1)
    (ticket,) = s.account.tickets
    assert ticket["customer_id"] == known["id"] and len(s.account.customers) == 1
    assert ticket["subject"] == "VPN fails"
    assert ticket["comments"][0]["hidden"] is True  # commentHidden
    assert ticket["comments"][0]["subject"] == "Message from Grace Hopper"

    env.syncro.tech_comment(ticket, "Internal: cert expired", hidden=True)
    env.syncro.tech_comment(ticket, "Please reconnect now.")
    await webhook(env, s, "ticket.comment", ticket)
    # Comments are relayed in order: a hidden note relayed would have come first.
    answer = (await env.receiver.wait_for(f"/{s.tag}/portal", 1))[0]
    activity = answer.json["activity"]
    assert activity["type"] == "message:agent"
    assert activity["message"] == {"type": "text", "text": "Please reconnect now."}
    assert activity["sender"]["name"] == "Tina Tech"
    assert activity["conversationId"] == answer.json["conversationId"]


async def test_timeouts_after_syncro_wrote_make_no_second_customer_or_ticket(env: Env) -> None:
    s = await shop(env)
    customer = "+1613" + str(uuid.uuid4().int)[:7]
    # Syncro creates the customer, then the ticket, but answers each too late: the hub
    # times out (its attempt too), looks for its marker and finds what it wrote.
    env.syncro.timeout_after_create = 2
    try:
        await text(env, s, customer, "Wifi is down")
        await until(lambda: len(s.account.tickets) == 1 and env.syncro.timeout_after_create == 0)
        (ticket,) = s.account.tickets
        # The technician answers while the hub is still retrying: the webhook may find no
        # conversation yet, the hub's retry then finds the answer on the ticket. Once.
        env.syncro.tech_comment(ticket, "Rebooting the router.")
        await webhook(env, s, "ticket.comment", ticket)
        await texts_until(env, customer, "Rebooting the router.")
    finally:
        env.syncro.timeout_after_create = 0
    env.syncro.tech_comment(ticket, "Back up?")
    await webhook(env, s, "ticket.comment", ticket)
    assert await texts_until(env, customer, "Back up?") == ["Rebooting the router.",
                                                            "Back up?"]
    assert len(s.account.tickets) == 1 and len(s.account.customers) == 1
    assert len(ticket["comments"]) == 3
    assert is_hub_text(s.account.customers[0]["notes"])
