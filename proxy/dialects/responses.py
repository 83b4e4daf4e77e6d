"""The OpenAI Responses API as a dialect: `POST /v1/responses`, and the stored responses behind
`GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`.

Shapes are `proxy.translate.responses` (pure). What this module adds is what the Responses API
keeps between requests: with `store` (the API's default), a completed response is kept in the key
store (`KeyService.responses`: the SQLite file, or Redis shared by replicas), scoped to the client
key that made it, for `responses.retention`. A record holds the response object, this request's
input items and the whole conversation so far (previous ones included), so that
`previous_response_id` costs one lookup however long the chain. The conversation keeps Claude's
signed thinking sealed in its reasoning items even when the client did not ask for
`reasoning.encrypted_content`: Claude needs those blocks back before the tool calls they led to.
The client sees them only when it asked (on create, or on `GET ?include[]=…`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.dialects.base import Answer, Dialect, Endpoint, Inbound, Outbound
from proxy.dialects.chat import MESSAGES_PATH, serialise
from proxy.errors import InvalidRequest, NotFound, ProxyError, ServiceUnavailable, UpstreamError
from proxy.keys.store import StoreError
from proxy.translate.checks import invalid_type
from proxy.translate.errors import from_upstream
from proxy.translate.responses.common import ResponsesRequest
from proxy.translate.responses.request import to_messages_request
from proxy.translate.responses.response import to_response
from proxy.translate.responses.stream import ResponsesStream
from proxy.translators import StreamTranslator
from proxy.upstream import UpstreamReply
from proxy.usage import Usage

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.keys import Principal

log = logging.getLogger("proxy.responses")

PATH: Final = "/v1/responses"
ENCRYPTED_REASONING: Final = "reasoning.encrypted_content"
_MAX_PAGE: Final = 100
_DEFAULT_PAGE: Final = 20


@dataclass(frozen=True, slots=True)
class Exchanged:
    """The dialect's record of one request (`Outbound.hints`)."""

    request: ResponsesRequest  # as the client asked
    built: ResponsesRequest  # what the answer is built from: sealed reasoning too when it is stored
    response_id: str
    created_at: int
    history: Sequence[dict[str, Any]]  # the stored conversation `previous_response_id` continues


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a request needs from the store before it is translated."""

    history: Sequence[dict[str, Any]] = ()  # the conversation `previous_response_id` continues
    references: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # item_reference → item


class Responses(Dialect):
    endpoints = (Endpoint(PATH, "responses"),)
    keeps = True

    def owns(self, path: str) -> bool:
        return path == PATH or path.startswith(PATH + "/")

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route(PATH + "/{response_id}", stored_response, methods=["GET", "DELETE"]),
            Route(PATH + "/{response_id}/input_items", stored_input_items, methods=["GET"]),
        ]

    async def load(self, endpoint: Endpoint, body: Any, gateway: Gateway, principal: Principal) -> Any:
        """The conversation `previous_response_id` continues (an unknown, expired or other key's id
        is a 404 before any upstream call), and the stored items the input's item references name."""
        if not isinstance(body, dict):
            return None
        history: Sequence[dict[str, Any]] = ()
        previous = body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str):
                invalid_type("previous_response_id", "a string", previous)
            history = (await _fetch(gateway, principal, previous, param="previous_response_id"))["conversation"]
        return Loaded(history, await _referenced(gateway, principal, body.get("input"), history))

    def parse(self, endpoint: Endpoint, body: Any, inbound: Inbound) -> Outbound:
        settings = inbound.settings
        loaded: Loaded = inbound.loaded or Loaded()
        history = loaded.history
        request = to_messages_request(
            body,
            inbound.models,
            history=history,
            references=loaded.references,
            auto_cache=settings.auto_cache,
            max_messages=settings.max_messages,
            max_content_blocks=settings.max_content_blocks,
            max_tools=settings.max_tools,
            strict=settings.strict_fields,
        )
        built = request
        if request.store and not request.include_encrypted_reasoning:
            built = dataclasses.replace(request, include_encrypted_reasoning=True)
        hints = Exchanged(request, built, "resp_" + os.urandom(24).hex(), int(time.time()), history)
        return Outbound(
            path=MESSAGES_PATH,
            payload=serialise(request.upstream),
            model=request.model,
            stream=request.stream,
            body=request.upstream,
            hints=hints,
            dropped=request.dropped,
        )

    def answer(self, replies: Sequence[UpstreamReply], outbound: Outbound) -> Answer:
        hints: Exchanged = outbound.hints
        (reply,) = replies
        try:
            message = reply.json()
            usage = Usage.from_anthropic(message.get("usage"))
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise UpstreamError("the upstream API answered with a malformed message") from exc
        built = to_response(
            message, hints.built, response_id=hints.response_id, created_at=hints.created_at, usage=usage
        )
        return Answer(orjson.dumps(client_view(built, hints.request.include_encrypted_reasoning)), usage, result=built)

    def relay(self, outbound: Outbound) -> StreamTranslator:
        hints: Exchanged = outbound.hints
        return ResponsesStream(
            hints.request,
            response_id=hints.response_id,
            created_at=hints.created_at,
            keep_sealed=hints.request.store,
        )

    def streamed_result(self, translator: StreamTranslator) -> Any:
        assert isinstance(translator, ResponsesStream)
        return translator.response

    def upstream_failure(self, reply: UpstreamReply) -> ProxyError:
        return from_upstream(reply.status, reply.body, reply.headers)

    def error_body(self, error: ProxyError) -> bytes:
        return error.to_json()

    async def keep(self, outbound: Outbound, result: Any, gateway: Gateway, principal: Principal) -> None:
        hints: Exchanged = outbound.hints
        if not hints.request.store:
            return
        inputs = with_ids(hints.request.input_items, hints.response_id)
        record = {
            "response": result,
            "sealed_for_client": hints.request.include_encrypted_reasoning,
            "input_items": inputs,
            "conversation": [*hints.history, *inputs, *result.get("output", ())],
        }
        keys = gateway.keys
        if not await keys.responses.put(
            principal.name, hints.response_id, orjson.dumps(record), ttl=keys.response_retention
        ):
            log.warning(
                "response %s not stored: larger than responses.max_stored_bytes (%d)",
                hints.response_id,
                keys.responses.max_bytes,
            )


def client_view(response: dict[str, Any], sealed: bool) -> dict[str, Any]:
    """The response as the client asked for it: reasoning items without their sealed thinking
    unless it asked for `reasoning.encrypted_content`."""
    if sealed or not any("encrypted_content" in item for item in response.get("output", ())):
        return response
    output = [
        {name: value for name, value in item.items() if name != "encrypted_content"} for item in response["output"]
    ]
    return {**response, "output": output}


def with_ids(items: Sequence[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """Input items as stored and listed: each with an id (the client's, or one made from the
    response id and its position) and a status where the item type has one."""
    suffix = response_id.removeprefix("resp_")
    listed = []
    for index, item in enumerate(items):
        named = dict(item)
        named.setdefault("id", f"in_{suffix}_{index}")
        if named.get("type", "message") == "message":
            named.setdefault("type", "message")
            named.setdefault("status", "completed")
        listed.append(named)
    return listed


# --- the stored-response routes -----------------------------------------------------------


async def _fetch(gateway: Gateway, principal: Principal, response_id: str, *, param: str | None) -> dict[str, Any]:
    try:
        raw = await gateway.keys.responses.get(principal.name, response_id)
    except StoreError as exc:
        log.error("the response store failed: %s", exc)
        raise ServiceUnavailable("The response store is unavailable; retry shortly.") from None
    if raw is None:  # unknown, expired or another key's: the same answer for all three
        raise NotFound(f"Response with id '{response_id}' not found.", param=param)
    record: dict[str, Any] = orjson.loads(raw)
    return record


# Output and input item ids are made from their response's id (`item_id`, `with_ids`), so an item
# reference leads to the one stored record that holds it.
_ITEM_ID: Final = re.compile(r"[a-z]+_([0-9a-f]{48})_[0-9]+")
# Distinct stored responses one request's item references may reach (each is one store lookup).
MAX_REFERENCED_RESPONSES: Final = 100


async def _referenced(
    gateway: Gateway, principal: Principal, items: Any, history: Sequence[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The client key's stored items that the input's item references name (beyond the history's
    own). A reference that leads nowhere is left for the translator to refuse, naming its place."""
    if not isinstance(items, list):
        return {}
    known = {item.get("id") for item in history if isinstance(item, dict)}
    wanted: dict[str, set[str]] = {}  # response id → the item ids wanted from it
    for item in items:
        if not isinstance(item, dict) or item.get("type", "item_reference") != "item_reference" or "role" in item:
            continue
        item_id = item.get("id")
        if isinstance(item_id, str) and item_id not in known and (match := _ITEM_ID.fullmatch(item_id)):
            wanted.setdefault("resp_" + match.group(1), set()).add(item_id)
    if len(wanted) > MAX_REFERENCED_RESPONSES:
        raise InvalidRequest(
            f"The input's item references name items of {len(wanted)} stored responses; at most "
            f"{MAX_REFERENCED_RESPONSES} can be looked up in one request. Use previous_response_id.",
            param="input",
        )
    records = await asyncio.gather(*(_fetch_or_none(gateway, principal, rid) for rid in wanted))
    found: dict[str, dict[str, Any]] = {}
    for ids, record in zip(wanted.values(), records, strict=True):
        if record is not None:
            for item in (*record["input_items"], *record["response"].get("output", ())):
                if item.get("id") in ids:
                    found[item["id"]] = item
    return found


async def _fetch_or_none(gateway: Gateway, principal: Principal, response_id: str) -> dict[str, Any] | None:
    try:
        return await _fetch(gateway, principal, response_id, param=None)
    except NotFound:
        return None


async def stored_response(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.authenticate(request)
    response_id = request.path_params["response_id"]
    if request.method == "DELETE":
        try:
            deleted = await gateway.keys.responses.delete(principal.name, response_id)
        except StoreError as exc:
            log.error("the response store failed: %s", exc)
            raise ServiceUnavailable("The response store is unavailable; retry shortly.") from None
        if not deleted:
            raise NotFound(f"Response with id '{response_id}' not found.")
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        return Response(orjson.dumps(body), media_type="application/json")
    record = await _fetch(gateway, principal, response_id, param=None)
    sealed = record["sealed_for_client"] or ENCRYPTED_REASONING in _included(request)
    return Response(orjson.dumps(client_view(record["response"], sealed)), media_type="application/json")


async def stored_input_items(request: Request) -> Response:
    """`GET /v1/responses/{id}/input_items`: this response's input items, a page at a time
    (`limit` 1 to 100, default 20; `order` desc by default, as OpenAI's; `after` an item id)."""
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.authenticate(request)
    limit, order, after = _page(request)
    record = await _fetch(gateway, principal, request.path_params["response_id"], param=None)
    items: list[dict[str, Any]] = record["input_items"]
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}' in this response.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _page(request: Request) -> tuple[int, str, str | None]:
    query = request.query_params
    raw = query.get("limit")
    if raw is None:
        limit = _DEFAULT_PAGE
    elif raw.isdigit() and 1 <= int(raw) <= _MAX_PAGE:
        limit = int(raw)
    else:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {_MAX_PAGE}.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    return limit, order, query.get("after")


def _included(request: Request) -> list[str]:
    return [*request.query_params.getlist("include[]"), *request.query_params.getlist("include")]
