"""The control plane's paths in the OpenAPI document: `/api/v1` hubs, integrations,
deliveries and jobs.

Syncro's actions (`/api/v1/integrations/{id}/syncro/...`) and the sync API
(`/api/v1/hubs/{hubId}/syncProfiles...`) contribute their own `openapi_paths`.
"""

from __future__ import annotations

from typing import Any

from switchboard.services.openapi_ops import op, path_param, ref


def openapi_paths() -> dict[str, Any]:
    """Hubs (and their stats and token), integrations (Hubster's paths, `?compat=`),
    an integration's deliveries, redeliver and replay, and their jobs."""
    hub = path_param("hubId")
    iid = path_param("integrationId")
    compat = {"name": "compat", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["hubster", "none"]},
              "description": "hubster: answer as Hubster's API does (200 on create, numeric "
                             "codes on reads, the seed's key spellings); none: the default "
                             "answers, also on a hub whose compat is hubster (any case). "
                             "`Accept: application/vnd.hubster+json` also asks for hubster."}
    integration_list = {"type": "array", "items": ref("Integration")}
    return {
        "/api/v1/hubs": {
            "post": op("Create a hub (admin token); returns its access token once", "HubCreate",
                       201, responses=(403, 409), answer="HubWithToken"),
            "get": op("List the hubs this token may see", responses=(),
                      answer={"type": "array", "items": ref("Hub")}),
        },
        "/api/v1/hubs/{hubId}": {
            "parameters": [hub],
            "get": op("Get a hub (when its token was issued and rotated, never the token)",
                      responses=(), answer="Hub"),
            "patch": op("Set the hub's retry schedule (null: the deployment's), its compat "
                        "mode (hubster; none or null: default answers) or, admin only, its "
                        "name", "HubUpdate", responses=(403, 409), answer="Hub"),
            "delete": op("Delete a hub and all its integrations (admin token)", ok=204,
                         responses=(403,)),
        },
        "/api/v1/hubs/{hubId}/stats": {
            "parameters": [hub],
            "get": op("The hub's last hour in one-minute buckets: activities in, delivery "
                      "attempts out, outcomes and latency (the console's charts)",
                      responses=(), answer="HubWindow"),
        },
        "/api/v1/hubs/{hubId}/rotateToken": {
            "parameters": [hub],
            "post": op("Replace the hub's access token (admin or the hub's token); the new "
                       "one is returned once, the old one stops working",
                       responses=(409,), answer="HubWithToken"),
        },
        # One path for two things, as in Hubster: a hub id creates, an integration id
        # updates (POST); GET lists a hub's.
        "/api/v1/integrations/hubs/{id}": {
            "parameters": [path_param("id", "a hub id (create, list) or an integration id "
                                            "(POST: update)"), compat],
            "post": op("Create an integration in hub {id} (201), or update integration {id} "
                       "(200: the given configuration replaces the old one; a Direct "
                       "integration keeps its integrationType and signatureScheme unless "
                       "named)", "IntegrationCreate", 201, responses=(403, 409),
                       answer="Integration"),
            "get": op("List a hub's integrations (id is a hub id)", responses=(400,),
                      answer=integration_list),
        },
        "/api/v1/integrations/{integrationId}": {
            "parameters": [iid, compat],
            "get": op("Get an integration (secrets masked, no private key)",
                      responses=(400,), answer="Integration"),
            "patch": op("Update an integration: configuration is a JSON Merge Patch (RFC "
                        "7396) of the stored one (null removes a field), so "
                        "{\"configuration\": {\"regenerateKeys\": true}} alone regenerates "
                        "the keys", "IntegrationUpdate", responses=(409,),
                        answer="Integration"),
            "delete": op("Delete an integration", ok=204, responses=()),
        },
        "/api/v1/integrations/{integrationId}/deliveries": {
            "parameters": [iid] + [
                {"name": n, "in": "query", "required": False, "schema": schema}
                for n, schema in (
                    ("status", {"enum": ["delivered", "pending", "failed"]}),
                    ("since", {"type": "integer", "minimum": 0}),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    ("cursor", {"type": "string"}))],
            "get": op("An integration's deliveries, newest updated first", responses=(400,),
                      answer="DeliveryPage"),
        },
        "/api/v1/deliveries/{deliveryId}": {
            "parameters": [path_param("deliveryId")],
            "get": op("One delivery with its last 20 attempts", responses=(),
                      answer="DeliveryDetail"),
        },
        "/api/v1/integrations/{integrationId}/redeliver": {
            "parameters": [iid],
            "post": op("Redeliver one delivery, or all of a status since a time",
                       "RedeliverRequest", 202, responses=(409,), answer="JobAccepted"),
        },
        "/api/v1/integrations/{integrationId}/replay": {
            "parameters": [iid],
            "post": op("Replay every delivery of a window (at most 30 days)",
                       "ReplayRequest", 202, responses=(), answer="JobAccepted"),
        },
        "/api/v1/jobs/{jobId}": {
            "parameters": [path_param("jobId")],
            "get": op("A redeliver or replay job", responses=(), answer="Job"),
        },
    }
