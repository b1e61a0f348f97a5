"""The paths channels speak through in the OpenAPI document, outside `/api/v1`.

The ingress (a Direct integration's signed activity, Twilio's form, Syncro's secret URL,
Meta's and Slack's provider routes), the stream and feed websockets, and WebChat's page,
widget script and visitor websocket.
"""

from __future__ import annotations

from typing import Any

from switchboard.services.openapi_ops import op, path_param, ref


def openapi_paths() -> dict[str, Any]:
    """The ingress, websocket and WebChat paths, by path."""
    iid = path_param("integrationId")
    out: dict[str, Any] = {
        "/ingress/{integrationId}": {
            "parameters": [iid],
            "post": op(
                "A Direct integration's Standard Webhooks-signed activity (v1a, Ed25519: "
                "202 {activityId}), or a TwilioSMS integration's Twilio webhook (form, "
                "X-Twilio-Signature: 200 empty TwiML). Before the signature verifies, every "
                "refusal is the same 401 (but 408 for a body that does not arrive in time, "
                "413 for one announced too large). After it: 400 for a body that is not an "
                "activity, 404 conversation_not_found for an agent's or bot's answer to a "
                "conversation that does not exist in its hub, 409 for a paused "
                "integration, 429 over its rate, 503 when the broker cannot take it",
                ok=202, security=False, responses=(400, 401, 404, 408, 409, 413, 429, 503),
                answer="ActivityAccepted",
                request={"application/json": ref("InboundActivity"),
                         "application/x-www-form-urlencoded": ref("TwilioWebhook")}),
        },
        "/ingress/{integrationId}/{secret}": {
            "parameters": [iid, path_param("secret", "the Syncro integration's inbound "
                                                     "secret (shown once)")],
            "post": op("A Syncro Notification Center webhook to a Syncro integration's "
                       "secret inbound URL; a wrong or missing secret is the ingress's "
                       "one 401", ok=200, security=False,
                       responses=(400, 401, 408, 409, 413, 415, 429, 503),
                       answer="SyncroAccepted", request={"application/json":
                                                         ref("SyncroWebhook")}),
        },
        "/ingress/meta": {
            "get": {**op("Meta's subscription handshake: hub.challenge echoed when "
                         "hub.verify_token is the configured one", security=False,
                         responses=(403, 429), answer={"type": "string"},
                         media="text/plain"),
                    "parameters": [
                        {"name": n, "in": "query", "required": True, "schema": {"type": "string"}}
                        for n in ("hub.mode", "hub.verify_token", "hub.challenge")]},
            "post": op("Messenger webhooks for every Messenger integration (routed by Page "
                       "id; signed with the app secret): 200 once every activity is "
                       "durable", security=False, responses=(400, 401, 408, 413, 429, 503),
                       request={"application/json": ref("MetaWebhook")}),
        },
        "/ingress/slack": {
            "post": op("Slack's Events API for every Slack integration (routed by team; "
                       "signed with the signing secret): url_verification answers the "
                       "challenge; an agent's reply in a thread the hub opened becomes an "
                       "activity", security=False, responses=(400, 401, 408, 413, 429, 503),
                       request={"application/json": ref("SlackEvent")},
                       answer={"type": "object"}),
        },
        # ---- websockets ----
        "/v1/integrations/{integrationId}/stream": {
            "parameters": [iid],
            "get": op("Websocket: deliveries for a Direct integration without webhookUrl "
                      "(the bearer token in the Authorization header)", ok=101,
                      responses=(403,)),
        },
        "/v1/integrations/{integrationId}/feed": {
            "parameters": [iid],
            "get": op("Websocket: a live, read-only view of the deliveries to any "
                      "integration (the console's feed); the first frame authenticates: "
                      '{"type":"auth","token":"…"}', ok=101, security=False, responses=()),
        },
        # ---- WebChat ----
        "/webchat/{integrationId}": {
            "parameters": [iid],
            "get": op("A page running the WebChat widget full-window (to try it out)",
                      security=False, responses=(404,), answer={"type": "string"},
                      media="text/html"),
        },
        "/webchat/{integrationId}/widget.js": {
            "parameters": [iid],
            "get": op("The embeddable WebChat widget script", security=False,
                      responses=(404,), answer={"type": "string"}, media="text/javascript"),
        },
        "/webchat/{integrationId}/ws": {
            "parameters": [iid],
            "get": op("Websocket: a visitor's session (README: The websocket protocol); "
                      "the page's Origin must be one of allowedOrigins", ok=101,
                      security=False, responses=()),
        },
    }
    # TwilioSMS's answer: Twilio reads TwiML.
    out["/ingress/{integrationId}"]["post"]["responses"]["200"] = {
        "description": "TwilioSMS: the webhook is durable; empty TwiML",
        "content": {"text/xml": {"schema": {"type": "string"}}}}
    return out
