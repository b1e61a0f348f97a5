"""An activity's names in any case through the real ingress, router and deliverer: the
activity `type` and its message's `type` tag are folded to the canonical lower case
(`switchboard.names`), so receivers and the log see one spelling."""

from __future__ import annotations

import orjson

from tests.conftest import RunningHub
from tests.support import Receiver, sign_with_cryptography


async def test_message_type_tags_in_any_case_are_delivered_canonical(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer"})
        await hub.create_integration(
            hub_id, auth, channelId="System", name="audit",
            configuration={"webhookUrl": receiver.url + "/system", "events": ["message:*"]})
        key = cust["configuration"]["privateSigningKey"]
        sent = [("Message", {"type": "TEXT", "text": "hi"}),
                ("MESSAGE", {"type": "Image", "url": "https://example.test/a.png"}),
                ("message", {"type": "cArD", "title": "Plans"}),
                ("message", {"type": "text", "text": "last"})]  # canonical, and the sentinel
        for kind, msg in sent:
            body = orjson.dumps({"type": kind, "sender": {"id": "cust-1"}, "message": msg})
            r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                      headers=sign_with_cryptography(key, body))
            assert r.status_code == 202, r.text
        body = orjson.dumps({"type": "message", "sender": {"id": "cust-1"},
                             "message": {"type": "Video", "url": "https://example.test/v"}})
        r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["field"] == "message.type", r.text

        got = await receiver.wait_until("/system", lambda got: any(
            a["message"].get("text") == "last" for g in got for a in g.json["activities"]))
        messages = [a["message"] for g in got for a in g.json["activities"]]
        assert messages == [{"type": "text", "text": "hi"},
                            {"type": "image", "url": "https://example.test/a.png"},
                            {"type": "card", "title": "Plans"},
                            {"type": "text", "text": "last"}], messages
    finally:
        await receiver.stop()
