"""A Direct customer without webhookUrl gets its answers on the websocket, end to end."""

from __future__ import annotations

import orjson
import websockets

from tests.conftest import RunningHub
from tests.support import Receiver, message, sign_with_cryptography


async def test_agent_answer_arrives_on_the_customer_websocket(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="app",
            configuration={"integrationType": "Customer"})
        agent = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/a"})
        # The token in a header (the query string form is deprecated: it ends up in logs).
        ws_url = f"ws://127.0.0.1:{hub.port}/v1/integrations/{cust['integrationId']}/stream"
        body = message("is anyone there?")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202
        conversation = (await receiver.wait_for("/a", 1))[0].json["conversationId"]

        async with websockets.connect(ws_url, additional_headers=auth) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            for i in range(3):
                answer = message(f"answer {i}", sender="agent", conversation=conversation)
                r = await hub.client.post(
                    f"/ingress/{agent['integrationId']}", content=answer,
                    headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"],
                                                   answer))
                assert r.status_code == 202
            frames = [orjson.loads(await ws.recv()) for _ in range(3)]
            texts = [f["payload"]["activity"]["message"]["text"] for f in frames]
            assert texts == ["answer 0", "answer 1", "answer 2"]
            assert all(f["payload"]["conversationId"] == conversation for f in frames)
            await ws.send(orjson.dumps({"type": "ack", "cursor": frames[0]["cursor"]}))

        # Reconnect without a cursor: everything after the last ack, in order.
        async with websockets.connect(ws_url, additional_headers=auth) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            again = [orjson.loads(await ws.recv()) for _ in range(2)]
            assert [f["payload"]["activity"]["message"]["text"] for f in again] == [
                "answer 1", "answer 2"]
            assert [f["webhookId"] for f in again] == [f["webhookId"] for f in frames[1:]]
    finally:
        await receiver.stop()
