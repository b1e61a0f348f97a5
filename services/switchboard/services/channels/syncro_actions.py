"""`/api/v1/integrations/{integrationId}/syncro/...`: Syncro's customers, tickets and
leads, and a raw API call, through a Syncro integration's own token.

Auth is the integration routes' own (another hub's integration answers 404); the
bodies, search parameters and path checks are pure (`switchboard.providers.
syncro_records`); requests go through the process's one `SyncroClient` (the account's
rate window, 429 honoured, creates made once by marker).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import jsonsafe
from switchboard.channels import SyncroConfig
from switchboard.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    SwitchboardError,
    Unavailable,
)
from switchboard.inbound import check_json_content_type
from switchboard.model import ChannelId
from switchboard.providers import syncro, syncro_call, syncro_search
from switchboard.providers import syncro_idempotency as idem
from switchboard.providers import syncro_records as records
from switchboard.providers.syncro_records import KINDS, Kind
from switchboard.sealing import open_config_secret
from switchboard.services.channels.syncro_client import SyncroClient, refusal
from switchboard.services.http import JSON, read_body
from switchboard.services.http_client import HttpAnswer, HttpError

if TYPE_CHECKING:
    from switchboard.services.api import Api

log = logging.getLogger(__name__)
BODY_LIMIT = 64 * 1024
# How many listing pages a create's idempotency lookup reads.
LOOKUP_PAGES = 3
_any = msgspec.json.Decoder(Any)


class Account(Struct, frozen=True):
    """The Syncro account an action runs against."""

    integration_id: str
    subdomain: str
    token: str
    config: SyncroConfig


def action_refusal(status: int, body: bytes) -> SwitchboardError:
    """Syncro's error answer in our shape: an unknown record is our 404
    (``provider_not_found``), the rest as `refusal` (4xx → 400, 429/5xx → 503)."""
    if status == 404:
        return NotFound("provider_not_found", syncro.parse_error(status, body).describe())
    return refusal(status, body)


def _not_found_as_404(exc: BadRequest) -> SwitchboardError:
    # The client's writes report Syncro's refusals as `refusal` (400); a 404 there is an
    # unknown ticket id, which this API answers as 404 like its reads do.
    if exc.code == "provider_error" and exc.description.endswith("(HTTP 404)"):
        return NotFound("provider_not_found", exc.description)
    return exc


class SyncroActions:
    """The routes, over the API's auth and the Syncro plugin's client."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.runtime = api.runtime
        plugin = api.plugins.get(ChannelId.SYNCRO)
        # One client per process: the account windows are shared with the channel.
        client = getattr(plugin, "client", None)
        self.client: SyncroClient = client if isinstance(client, SyncroClient) \
            else SyncroClient(api.runtime)

    def routes(self) -> list[Route]:
        base = "/api/v1/integrations/{integrationId}/syncro"
        out: list[Route] = []
        for kind in KINDS.values():
            one = f"{base}/{kind.plural}/{{recordId}}"
            methods = ["GET", "PUT", "DELETE"]
            out += [
                Route(f"{base}/{kind.plural}", self._bind(self.search, kind), methods=["GET"]),
                Route(f"{base}/{kind.plural}", self._bind(self.create, kind), methods=["POST"]),
                Route(one, self._bind(self.record, kind), methods=methods),
            ]
        out += [
            Route(f"{base}/tickets/{{recordId}}/comments", self.comment, methods=["POST"]),
            Route(f"{base}/call", self.call, methods=["POST"]),
        ]
        return out

    @staticmethod
    def _bind(handler: Any, kind: Kind) -> Any:
        async def endpoint(request: Request) -> Response:
            result: Response = await handler(request, kind)
            return result
        return endpoint

    # ---- plumbing --------------------------------------------------------------------

    async def _account(self, request: Request) -> Account:
        principal, view = await self.api._session(request)
        rec = self.api._own_integration(principal, view, request.path_params["integrationId"])
        cfg = rec.configuration
        if not isinstance(cfg, SyncroConfig):
            raise NotFound("not_syncro", f"integration {rec.integration_id} is a "
                           f"{rec.channel_id.value} integration, not Syncro")
        token = open_config_secret(self.runtime.sealer, rec, "api_token")
        if token is None:  # never for a stored Syncro integration (the token is required)
            raise NotFound("not_syncro", "the integration has no Syncro token")
        return Account(rec.integration_id, cfg.subdomain, token, cfg)

    @staticmethod
    async def _body(request: Request, into: type[Any]) -> Any:
        check_json_content_type(request.headers.get("content-type"))
        raw = await read_body(request, BODY_LIMIT)
        return records.decode_body(raw, into)

    async def _send(self, acc: Account, method: str, path: str, *,
                    params: dict[str, str] | None = None, json: Any = None,
                    headers: dict[str, str] | None = None) -> HttpAnswer:
        """One request; no answer → 503, an error answer → `action_refusal`."""
        try:
            resp = await self.client.request(acc.subdomain, acc.token, method, path,
                                             params=params, json=json, headers=headers)
        except HttpError as exc:
            log.warning("syncro action: %s %s: %s", method, path, exc.reason)
            raise Unavailable("provider_unavailable", "Syncro could not be reached; retry",
                              retry_after=5) from None
        if not resp.is_success:
            raise action_refusal(resp.status_code, resp.content)
        return resp

    def _key(self, request: Request, acc: Account, what: str) -> tuple[str, bool]:
        """The write's idempotency key, and whether the caller named it (a retry of the
        same key looks for the earlier write before it POSTs)."""
        given = records.idempotency_key(request.headers.get("idempotency-key"))
        name = given if given is not None else uuid.uuid4().hex
        return f"syncro-action:{acc.integration_id}:{what}:{name}", given is not None

    # ---- the modules -----------------------------------------------------------------

    async def search(self, request: Request, kind: Kind) -> Response:
        acc = await self._account(request)
        search = syncro_search.parse_search(kind, request.query_params.multi_items())
        found: list[dict[str, Any]] = []
        number, read = 1, 0
        while True:
            resp = await self._send(acc, "GET", f"/{kind.plural}",
                                    params=syncro.page_params(search.params, number))
            page = syncro.unwrap_page(resp.content, kind.plural, number)
            read += 1
            found.extend(page.records)
            following = syncro.next_page(page, read)
            if len(found) >= search.limit:
                more = len(found) > search.limit or following is not None
                break
            if following is None:
                # Also when the page bound stopped it before the last page.
                more = bool(page.records) and page.page < page.total_pages
                break
            number = following
        return JSON({kind.plural: found[:search.limit], "count": min(len(found), search.limit),
                     "more": more})

    async def record(self, request: Request, kind: Kind) -> Response:
        acc = await self._account(request)
        record_id = records.record_id(request.path_params["recordId"], f"{kind.one}Id")
        if request.method == "DELETE" and not kind.deletable:
            raise MethodNotAllowed(
                "not_supported", f"Syncro's API does not delete {kind.plural}: update it "
                "instead (disabled: true, or converted: true once it is a customer)")
        path = f"/{kind.plural}/{record_id}"
        if request.method == "GET":
            resp = await self._send(acc, "GET", path)
            return JSON({kind.one: syncro.unwrap_one(resp.content, kind.one)})
        if request.method == "DELETE":
            await self._send(acc, "DELETE", path)
            return Response(status_code=204)
        body = records.to_wire(await self._body(request, kind.update))
        if not body:
            raise BadRequest("empty_update", "give at least one field to change")
        resp = await self._send(acc, "PUT", path, json=body)
        return JSON({kind.one: syncro.unwrap_one(resp.content, kind.one)})

    async def create(self, request: Request, kind: Kind) -> Response:
        acc = await self._account(request)
        body = records.to_wire(await self._body(request, kind.create))
        if kind.plural == "tickets":
            body = records.ticket_defaults(body, acc.config.default_ticket_status,
                                           acc.config.problem_type)
        key, retried = self._key(request, acc, kind.plural)
        payload = records.mark_create(kind, body, idem.token_for(key))
        params = records.lookup_params(kind, body)
        seen: dict[Any, dict[str, Any]] = {}

        async def lookup() -> list[dict[str, Any]]:
            listed = await self.client.list_all(acc.subdomain, acc.token, f"/{kind.plural}",
                                                kind.plural, params, max_pages=LOOKUP_PAGES)
            seen.update((r.get("id"), r) for r in listed)
            return records.marked_as_body(kind, listed)

        try:
            answer = await self.client.create_idempotent(
                acc.subdomain, acc.token, f"/{kind.plural}", payload, key, lookup,
                retried=retried)
        except BadRequest as exc:
            raise _not_found_as_404(exc) from None
        made = answer.get(kind.one)
        # Not wrapped: the record an earlier try made, found by the lookup.
        record = made if isinstance(made, dict) else seen.get(answer.get("id"), answer)
        return JSON({kind.one: record}, status_code=201)

    async def comment(self, request: Request) -> Response:
        acc = await self._account(request)
        ticket_id = records.record_id(request.path_params["recordId"], "ticketId")
        body: records.CommentCreate = await self._body(request, records.CommentCreate)
        key, retried = self._key(request, acc, f"tickets/{ticket_id}/comment")
        hidden = acc.config.comment_hidden if body.hidden is None else body.hidden
        try:
            made = await self.client.add_comment(
                acc.subdomain, acc.token, ticket_id, subject=body.subject, body=body.body,
                key=key, hidden=hidden, do_not_email=body.do_not_email, retried=retried)
        except BadRequest as exc:
            raise _not_found_as_404(exc) from None
        return JSON({"comment": made}, status_code=201)

    async def call(self, request: Request) -> Response:
        acc = await self._account(request)
        call: syncro_call.RawCall = await self._body(request, syncro_call.RawCall)
        path = syncro_call.call_path(call.path)
        headers = syncro_call.check_call_headers(call.headers)
        if call.body is not None and call.method in ("GET", "DELETE"):
            raise BadRequest("invalid_request", f"a {call.method} call takes no body", "body")
        resp = await self._send(acc, call.method, path, params=syncro_call.call_query(call.query),
                                json=call.body, headers=headers)
        return JSON({"status": resp.status_code, "body": _answer_body(resp.content)})


def _answer_body(content: bytes) -> Any:
    """Syncro's answer: its JSON, or its text when it is not JSON (None when empty)."""
    if not content.strip():
        return None
    try:
        return jsonsafe.decode(content, _any, invalid="invalid_provider_answer")
    except BadRequest:
        return content.decode("utf-8", "replace")


# ---- the OpenAPI document ------------------------------------------------------------------

BODY_TYPES = [records.CustomerFields, records.TicketCreate, records.TicketUpdate,
              records.LeadFields, records.CommentCreate, syncro_call.RawCall]


def openapi_paths(op: Any, iid: dict[str, Any]) -> dict[str, Any]:
    """The actions' paths, built with the docs module's `op` helper."""
    base = "/api/v1/integrations/{integrationId}/syncro"
    rid = {"name": "recordId", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1}}
    key = {"name": "Idempotency-Key", "in": "header", "required": False,
           "schema": {"type": "string", "maxLength": 200},
           "description": "a retry with the same key does not create twice"}
    syncro_errors = (400, 401, 404, 413, 415, 429, 503)
    paths: dict[str, Any] = {}
    names = {"customers": "CustomerFields", "tickets": "TicketCreate", "leads": "LeadFields"}
    updates = {"customers": "CustomerFields", "tickets": "TicketUpdate", "leads": "LeadFields"}
    for kind in KINDS.values():
        query = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                 for n in kind.search] + [
            {"name": "limit", "in": "query", "required": False, "schema": {
                "type": "integer", "minimum": 1, "maximum": syncro_search.MAX_LIMIT,
                "default": syncro_search.DEFAULT_LIMIT}}]
        create = op(f"Create a Syncro {kind.one} (made once: Idempotency-Key): 201 "
                    f"{{{kind.one}}}", names[kind.plural], 201, responses=syncro_errors)
        create["parameters"] = [key]
        paths[f"{base}/{kind.plural}"] = {
            "parameters": [iid],
            "get": {**op(f"Search Syncro's {kind.plural} (Syncro's query parameters, limit): "
                         f"{{{kind.plural}, count, more}}", responses=syncro_errors),
                    "parameters": query},
            "post": create,
        }
        item: dict[str, Any] = {
            "parameters": [iid, rid],
            "get": op(f"One Syncro {kind.one}: {{{kind.one}}}", responses=syncro_errors),
            "put": op(f"Change fields of a Syncro {kind.one}: {{{kind.one}}}",
                      updates[kind.plural], responses=syncro_errors),
        }
        if kind.deletable:
            item["delete"] = op(f"Delete a Syncro {kind.one}", ok=204, responses=syncro_errors)
        else:
            # Served, so that the refusal says why: always 405 not_supported.
            item["delete"] = op(f"Not supported: Syncro's API does not delete {kind.plural} "
                                "(update it instead)", ok=405, responses=syncro_errors,
                                answer="Error")
        paths[f"{base}/{kind.plural}/{{recordId}}"] = item
    comment = op("Comment on a Syncro ticket (made once: Idempotency-Key): 201 {comment}",
                 "CommentCreate", 201, responses=syncro_errors)
    comment["parameters"] = [key]
    paths[f"{base}/tickets/{{recordId}}/comments"] = {"parameters": [iid, rid],
                                                      "post": comment}
    paths[f"{base}/call"] = {"parameters": [iid], "post": op(
        "An authorised request to any path of the account's Syncro API: {status, body}",
        "RawCall", responses=syncro_errors)}
    return paths
