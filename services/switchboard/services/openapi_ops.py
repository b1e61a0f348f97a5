"""How the OpenAPI document writes an operation, and what every route of its kind answers.

`op` builds one operation (its request body, its answer, the error statuses it names),
`path_param` a path parameter, `ref` a reference to a component schema. `complete` adds
the statuses every operation of its kind can answer: a token's 401, 429 and 503, a JSON
body's 400, 408, 413 and 415, an unknown path id's 404. Each area's paths are written
with these (`openapi_control`, `openapi_channels`, and the modules whose `openapi_paths`
take `op`); `openapi` assembles the document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ERROR = {"$ref": "#/components/responses/Error"}
# What every route of a kind can answer (`complete`).
AUTHENTICATED = (401, 429, 503)
JSON_BODY = (400, 408, 413, 415)
REASONS = {
    101: "Switching Protocols (websocket)", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 405: "Method Not Allowed",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def op(summary: str, body: str | None = None, ok: int = 200, security: bool = True,
       responses: Iterable[int] = (400, 401, 404), *, answer: str | dict[str, Any] | None = None,
       media: str = "application/json", request: dict[str, Any] | None = None,
       ) -> dict[str, Any]:
    """One operation: `body` names the request's Struct schema (or `request` maps media
    types to schemas), `answer` the `ok` answer's (a schema name or a schema), `responses`
    the error statuses this route adds to those of its kind."""
    answered: dict[str, Any] = {"description": REASONS.get(ok, "OK")}
    if answer is not None:
        schema = ref(answer) if isinstance(answer, str) else answer
        answered["content"] = {media: {"schema": schema}}
    result: dict[str, Any] = {
        "summary": summary,
        "responses": {str(ok): answered} | {str(c): ERROR for c in responses},
    }
    if body:
        result["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": ref(body)}}}
    elif request:
        result["requestBody"] = {"required": True, "content": {
            m: {"schema": s} for m, s in request.items()}}
    if security:
        result["security"] = BEARER
    return result


def path_param(name: str, description: str | None = None,
               schema: dict[str, Any] | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": "path", "required": True,
                         "schema": schema or {"type": "string"}}
    if description:
        p["description"] = description
    return p


def complete(paths: dict[str, Any]) -> None:
    """Add the statuses every operation of its kind can answer, sorted."""
    for path, item in paths.items():
        has_ids = "{" in path
        for method, operation in item.items():
            if method == "parameters":
                continue
            extra: set[int] = set()
            if operation.get("security"):
                extra.update(AUTHENTICATED)
                if has_ids:
                    extra.add(404)
                body = operation.get("requestBody", {}).get("content", {})
                if "application/json" in body:
                    extra.update(JSON_BODY)
            got = operation["responses"]
            for code in extra:
                got.setdefault(str(code), ERROR)
            for code, value in got.items():
                if value is ERROR:
                    got[code] = dict(ERROR)
            operation["responses"] = dict(sorted(got.items()))

