"""The loopback Graph checked with Microsoft's Graph SDK (msgraph-sdk) as the oracle: the
SDK's typed models parse what the fake serves, so the fake speaks Graph."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.contact import Contact as SdkContact
from msgraph.generated.models.email_address import EmailAddress as SdkEmailAddress
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from tests.fakes.graph import FakeGraph


class StaticToken:
    """An async token credential that always gives the same access token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, 4_102_444_800)

    async def close(self) -> None:
        return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraph]:
    graph = FakeGraph(page_size=2)
    await graph.start()
    yield graph
    await graph.stop()


def sdk(fake: FakeGraph, token: str) -> GraphServiceClient:
    auth = AzureIdentityAuthenticationProvider(StaticToken(token),  # type: ignore[arg-type]
                                               allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = fake.url
    return GraphServiceClient(request_adapter=adapter)


async def test_the_sdk_reads_the_fakes_contacts_events_tasks_and_mail(fake: FakeGraph) -> None:
    fake.add("contacts", {"givenName": "Ada", "surname": "Lovelace", "displayName": "Ada L",
                          "emailAddresses": [{"address": "ada@example.com", "name": "Ada"}],
                          "businessPhones": ["+1 555"], "categories": ["vip"]})
    for i in range(2):
        fake.add("contacts", {"givenName": f"P{i}"})
    fake.add("events", {"subject": "Standup", "start": {
        "dateTime": "2030-01-15T09:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2030-01-15T09:30:00.0000000", "timeZone": "UTC"},
        "attendees": [{"emailAddress": {"address": "bob@example.com"}, "type": "required"}]})
    fake.add("tasks", {"title": "Call Ada", "dueDateTime": {
        "dateTime": "2030-01-15T00:00:00.0000000", "timeZone": "UTC"}})
    fake.add("messages", {"subject": "Hello", "internetMessageId": "<m1@example.com>",
                          "receivedDateTime": "2030-01-01T10:00:00Z",
                          "from": {"emailAddress": {"address": "ada@example.com"}}})
    client = sdk(fake, fake.token)

    page = await client.me.contacts.get()
    assert page is not None and page.value is not None and len(page.value) == 2
    assert page.odata_next_link is not None and page.odata_next_link.startswith(fake.url)
    rest = await client.me.contacts.with_url(page.odata_next_link).get()
    assert rest is not None and rest.value is not None
    ada = page.value[0]
    assert (ada.given_name, ada.surname, ada.business_phones, ada.categories) == (
        "Ada", "Lovelace", ["+1 555"], ["vip"])
    assert ada.email_addresses is not None and ada.email_addresses[0].address == \
        "ada@example.com"
    assert ada.last_modified_date_time is not None

    delta = await client.me.contacts.delta.get()
    assert delta is not None and delta.odata_next_link is not None
    last = await client.me.contacts.delta.with_url(delta.odata_next_link).get()
    assert last is not None and last.odata_delta_link is not None
    assert await client.me.contacts.by_contact_id(ada.id or "").delete() is None
    after = await client.me.contacts.delta.with_url(last.odata_delta_link).get()
    assert after is not None and after.value is not None
    assert [(c.id, c.additional_data.get("@removed")) for c in after.value] == [
        (ada.id, {"reason": "deleted"})]

    events = await client.me.events.get()
    assert events is not None and events.value is not None
    ev = events.value[0]
    assert ev.subject == "Standup" and ev.start is not None and ev.start.time_zone == "UTC"
    assert ev.i_cal_u_id and ev.organizer is not None and ev.attendees is not None

    lists = await client.me.todo.lists.get()
    assert lists is not None and lists.value is not None
    default = [x for x in lists.value if x.wellknown_list_name is not None
               and x.wellknown_list_name.value == "defaultList"]
    tasks = await client.me.todo.lists.by_todo_task_list_id(default[0].id or "").tasks.get()
    assert tasks is not None and tasks.value is not None
    assert tasks.value[0].title == "Call Ada" and tasks.value[0].due_date_time is not None
    assert tasks.value[0].status is not None and tasks.value[0].status.value == "notStarted"

    mail = await client.me.messages.get()
    assert mail is not None and mail.value is not None
    msg = mail.value[0]
    assert msg.internet_message_id == "<m1@example.com>"
    assert msg.from_ is not None and msg.from_.email_address is not None
    assert msg.from_.email_address.address == "ada@example.com"

    # Attachments: a file (bytes base64, decoded by the SDK) and an attached Outlook item.
    from msgraph.generated.models.file_attachment import FileAttachment
    from msgraph.generated.models.item_attachment import ItemAttachment

    assert msg.id is not None
    doc = fake.attachments.attach(msg.id, "a.pdf", b"%PDF-1.7\x00\xff", "application/pdf")
    fake.attachments.attach_item(msg.id, "Fwd: minutes")
    listed = await client.me.messages.by_message_id(msg.id).attachments.get()
    assert listed is not None and listed.value is not None
    [file, item] = listed.value
    assert isinstance(file, FileAttachment) and isinstance(item, ItemAttachment)
    assert file.content_bytes == b"%PDF-1.7\x00\xff" and file.name == "a.pdf"
    assert file.size is not None and file.size >= len(file.content_bytes)
    assert file.content_type == "application/pdf" and file.is_inline is False
    one = await client.me.messages.by_message_id(msg.id).attachments.by_attachment_id(
        doc["id"]).get()
    assert isinstance(one, FileAttachment) and one.content_bytes == file.content_bytes

    made = await client.me.contacts.post(SdkContact(
        given_name="Cy", email_addresses=[SdkEmailAddress(address="cy@example.com")]))
    assert made is not None and made.id in fake.items["contacts"]


async def test_the_sdk_reads_the_fakes_errors(fake: FakeGraph) -> None:
    with pytest.raises(ODataError) as err:
        await sdk(fake, "wrong").me.get()
    assert err.value.response_status_code == 401
    assert err.value.error is not None and err.value.error.code == \
        "InvalidAuthenticationToken"
    with pytest.raises(ODataError) as nf:
        await sdk(fake, fake.token).me.contacts.by_contact_id("nope").get()
    assert nf.value.response_status_code == 404
    assert nf.value.error is not None and nf.value.error.code == "ErrorItemNotFound"


async def test_the_sdk_manages_the_fakes_subscriptions(fake: FakeGraph) -> None:
    """Subscriptions as the SDK's models read them (their lifecycleNotificationUrl too),
    the validation handshake sent to both URLs first, the SDK's reauthorize, and change
    and lifecycle notifications with Graph's documented fields (this SDK build has no
    changeNotification model to read them with)."""
    from datetime import UTC, datetime, timedelta

    import orjson
    from msgraph.generated.models.subscription import Subscription as SdkSubscription
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from switchboard.brokers import free_port
    from tests.support import LoopbackServer

    got: list[bytes] = []
    lifecycle: list[bytes] = []

    async def endpoint(request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            return Response(token, 200, media_type="text/plain")
        (got if request.url.path == "/n" else lifecycle).append(await request.body())
        return Response(status_code=202)

    port = free_port()
    receiver = LoopbackServer(Starlette(routes=[Route("/n", endpoint, methods=["POST"]),
                                                Route("/l", endpoint, methods=["POST"])]),
                              port)
    await receiver.start()
    try:
        client = sdk(fake, fake.token)
        expires = datetime.now(UTC) + timedelta(minutes=4000)
        made = await client.subscriptions.post(SdkSubscription(
            change_type="created,updated,deleted", resource="/me/contacts",
            notification_url=f"http://127.0.0.1:{port}/n", client_state="s3cret",
            lifecycle_notification_url=f"http://127.0.0.1:{port}/l",
            expiration_date_time=expires))
        assert made is not None and made.id and made.client_state == "s3cret"
        assert made.expiration_date_time is not None and made.application_id
        assert made.lifecycle_notification_url == f"http://127.0.0.1:{port}/l"
        assert fake.subs.validations == [200, 200]
        listed = await client.subscriptions.get()
        assert listed is not None and listed.value is not None
        assert [s.id for s in listed.value] == [made.id]
        renewed = await client.subscriptions.by_subscription_id(made.id).patch(
            SdkSubscription(expiration_date_time=expires + timedelta(minutes=100)))
        assert renewed is not None and renewed.expiration_date_time is not None
        assert renewed.expiration_date_time > made.expiration_date_time
        renewed_at = fake.subs.subscriptions[made.id]["expirationDateTime"]
        with pytest.raises(ODataError) as too_long:
            await client.subscriptions.by_subscription_id(made.id).patch(SdkSubscription(
                expiration_date_time=expires + timedelta(days=30)))
        assert too_long.value.response_status_code == 400

        fake.add("contacts", {"givenName": "Ada"})
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
        [note] = orjson.loads(got[0])["value"]
        assert note["subscriptionId"] == made.id and note["clientState"] == "s3cret"
        assert note["changeType"] == "created" and note["tenantId"]
        assert note["resourceData"]["id"] in fake.items["contacts"]
        assert note["resourceData"]["@odata.type"] == "#Microsoft.OutlookServices.Contact"
        assert note["subscriptionExpirationDateTime"] == renewed_at

        assert await client.subscriptions.by_subscription_id(made.id).reauthorize.post() \
            is None
        assert fake.subs.reauthorized == [made.id]
        fake.subs.lifecycle(made.id, "reauthorizationRequired")
        for _ in range(200):
            if lifecycle:
                break
            await asyncio.sleep(0.05)
        [life] = orjson.loads(lifecycle[0])["value"]
        assert life == {"subscriptionId": made.id, "lifecycleEvent":
                        "reauthorizationRequired", "clientState": "s3cret",
                        "subscriptionExpirationDateTime": renewed_at,
                        "tenantId": note["tenantId"]}

        assert await client.subscriptions.by_subscription_id(made.id).delete() is None
        assert fake.subs.subscriptions == {}
    finally:
        await receiver.stop()
