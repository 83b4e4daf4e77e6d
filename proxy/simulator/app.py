"""The simulator's HTTP surface: routes, authentication, error bodies and streaming."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, get_args

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.models import EFFORT_LEVELS, CapsRow, Lifecycle, ModelCaps, ModelTable, ThinkingMode
from proxy.simulator.reply import (
    build_message,
    input_tokens,
    last_user_text,
    request_digest,
    simulated_error,
    stream_events,
)
from proxy.simulator.validate import MODEL_IDS, SimError, invalid, validate_count, validate_create

MAX_BODY_BYTES = 32 * 1024 * 1024
_DATE = re.compile(r"\d{8}")
_LINES = ("haiku", "sonnet", "opus", "fable", "mythos")
_EPOCH = "1970-01-01T00:00:00Z"
_LIFECYCLES = frozenset(get_args(Lifecycle))
DEFAULT_CONTEXT_WINDOW = 200_000  # max_input_tokens for a row that does not say


def _display_name(model_id: str) -> str:
    words: list[str] = []
    for part in model_id.split("-")[1:]:
        if _DATE.fullmatch(part):
            continue
        if part.isdigit() and words and words[-1][-1:].isdigit():
            words[-1] += "." + part
        else:
            words.append(part if part.isdigit() else part.capitalize())
    return "Claude " + " ".join(words)


def _model_infos(ids: Iterable[str], table: ModelTable) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """ModelInfo objects for ``ids`` (newest first, as the SDK lists them), from the table's rows.

    Like the API, the list names a dated id (``claude-haiku-4-5-20251001``) rather than its alias
    (``claude-haiku-4-5``); the returned alias map lets ``GET /v1/models/{alias}`` resolve.
    """
    ids = tuple(dict.fromkeys(ids))
    dated: dict[str, str] = {}
    for model_id in ids:
        head, _, tail = model_id.rpartition("-")
        if _DATE.fullmatch(tail):
            dated[head] = model_id
    infos = []
    for model_id in ids:
        if model_id in dated:
            continue
        head, _, tail = model_id.rpartition("-")
        day = tail if _DATE.fullmatch(tail) else None
        caps = table.capabilities(model_id)
        line = model_id.split("-")[1] if "-" in model_id else ""
        ending = caps.lifecycle != "active"  # the API dates deprecation and retirement only once they begin
        infos.append(
            {
                "type": "model",
                "id": model_id,
                "display_name": _display_name(model_id),
                "created_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z" if day else _EPOCH,
                "lifecycle": caps.lifecycle,
                "deprecated_at": _EPOCH if ending else None,  # when is not in the table: "unknown"
                "retires_at": f"{caps.retires}T00:00:00Z" if ending and caps.retires else None,
                "line": line if line in _LINES else None,
                "max_tokens": caps.max_output_tokens,
                "max_input_tokens": caps.max_input_tokens or DEFAULT_CONTEXT_WINDOW,
                "capabilities": _capabilities(caps),
            }
        )
    return infos, dated


def _supported(flag: bool) -> dict[str, bool]:
    return {"supported": flag}


def _capabilities(caps: ModelCaps) -> dict[str, Any]:
    """The API's ``ModelCapabilities`` (every key present, as it sends them) from a table row. What
    the table does not track (batch, context management, code execution) is reported as supported."""
    return {
        "batch": _supported(True),
        "citations": _supported(caps.citations),
        "code_execution": _supported(True),
        "context_management": {
            "supported": True,
            "clear_thinking_20251015": _supported(True),
            "clear_tool_uses_20250919": _supported(True),
            "compact_20260112": _supported(True),
        },
        "effort": {
            "supported": bool(caps.effort),
            **{level: _supported(level in caps.effort) for level in EFFORT_LEVELS},
        },
        "image_input": _supported(caps.image_input),
        "pdf_input": _supported(caps.pdf_input),
        "server_tools": {
            "supported": True,
            "code_execution": _supported(True),
            "web_search": _supported(caps.web_search is not None),
        },
        "structured_outputs": _supported(caps.structured_outputs),
        "thinking": {
            "supported": bool(caps.thinking & {"adaptive", "enabled"}),
            "types": {mode: _supported(mode in caps.thinking) for mode in get_args(ThinkingMode)},
        },
    }


def _lifecycle_filter(request: Request) -> frozenset[str]:
    """The ``lifecycle`` query filter (sent as ``lifecycle[]=…`` by the SDK, or repeated); by default
    active and deprecated models, as the API lists them."""
    given = request.query_params.getlist("lifecycle[]") + request.query_params.getlist("lifecycle")
    if not given:
        return frozenset({"active", "deprecated"})
    if len(given) > 3 or not set(given) <= _LIFECYCLES:
        raise invalid("lifecycle: each value should be 'active', 'deprecated' or 'retired', at most 3 of them")
    return frozenset(given)


class _Simulator:
    def __init__(
        self, table: ModelTable, api_key: str | None, event_delay: float, extra_models: Mapping[str, CapsRow]
    ) -> None:
        self.table = table.with_rows(extra_models) if extra_models else table
        self.api_key = api_key
        self.event_delay = event_delay
        self.counter = itertools.count(1)
        self.models, self.aliases = _model_infos((*extra_models, *MODEL_IDS), self.table)
        self.models_by_id = {info["id"]: info for info in self.models}

    # --- plumbing ---

    def request_id(self) -> str:
        return f"req_011CSim{next(self.counter):015d}"

    def error(self, exc: SimError, request_id: str) -> Response:
        body = {
            "type": "error",
            "error": {"type": exc.type, "message": exc.message},
            "request_id": request_id,
        }
        return Response(
            orjson.dumps(body),
            status_code=exc.status,
            media_type="application/json",
            headers={"request-id": request_id, **exc.headers},
        )

    def json(self, body: Any, request_id: str) -> Response:
        return Response(orjson.dumps(body), media_type="application/json", headers={"request-id": request_id})

    def authorize(self, request: Request) -> None:
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            raise SimError(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise SimError(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            raise invalid("anthropic-version: header is required")

    async def read_json(self, request: Request) -> Any:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise SimError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise SimError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"There was an error parsing the body of your request: {exc}") from None

    async def paced(self, events: list[bytes]) -> AsyncIterator[bytes]:
        for k, event in enumerate(events):
            if k:
                await asyncio.sleep(self.event_delay)
            yield event

    async def once(self, events: list[bytes]) -> AsyncIterator[bytes]:
        yield b"".join(events)

    # --- endpoints ---

    async def messages(self, request: Request) -> Response:
        request_id = self.request_id()
        try:
            self.authorize(request)
            body, _, stream = validate_create(await self.read_json(request), self.table)
            text = last_user_text(body)
            forced = simulated_error(text) if "SIMULATE_ERROR" in text else None
            if forced is not None:
                status, kind, detail = forced
                headers = {"retry-after": "1"} if status == 429 else {}
                raise SimError(status, kind, detail, headers)
        except SimError as exc:
            return self.error(exc, request_id)
        message = build_message(body, request_digest(body), input_tokens(body))
        if not stream:
            return self.json(message, request_id)
        failure = None
        if "SIMULATE_STREAM_ERROR" in text:
            failure = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
                "request_id": request_id,
            }
        events = stream_events(message, fail_with=failure)
        return StreamingResponse(
            self.paced(events) if self.event_delay > 0 else self.once(events),
            media_type="text/event-stream",
            headers={"request-id": request_id, "cache-control": "no-cache"},
        )

    async def count_tokens(self, request: Request) -> Response:
        request_id = self.request_id()
        try:
            self.authorize(request)
            body = validate_count(await self.read_json(request), self.table)
        except SimError as exc:
            return self.error(exc, request_id)
        return self.json({"input_tokens": input_tokens(body)}, request_id)

    async def list_models(self, request: Request) -> Response:
        request_id = self.request_id()
        try:
            self.authorize(request)
            params = request.query_params
            limit_text = params.get("limit", "20")
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
                raise invalid("limit: Input should be an integer between 1 and 1000")
            limit = int(limit_text)
            stages = _lifecycle_filter(request)
            listed = [info for info in self.models if info["lifecycle"] in stages]
            ids = [info["id"] for info in listed]
            after, before = params.get("after_id"), params.get("before_id")
            for name, cursor in (("after_id", after), ("before_id", before)):
                if cursor is not None and cursor not in ids:
                    raise invalid(f"{name}: unknown model id {cursor!r}")
        except SimError as exc:
            return self.error(exc, request_id)
        if before is not None:
            end = ids.index(before)
            start = max(0, end - limit)
            has_more = start > 0
        else:
            start = ids.index(after) + 1 if after is not None else 0
            end = min(len(ids), start + limit)
            has_more = end < len(ids)
        page = listed[start:end]
        return self.json(
            {
                "data": page,
                "has_more": has_more,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
            request_id,
        )

    async def get_model(self, request: Request) -> Response:
        request_id = self.request_id()
        try:
            self.authorize(request)
            model_id = request.path_params["model_id"]
            model_id = self.aliases.get(model_id, model_id)
            if model_id not in self.models_by_id:
                raise SimError(404, "not_found_error", f"model: {model_id}")
        except SimError as exc:
            return self.error(exc, request_id)
        return self.json(self.models_by_id[model_id], request_id)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else "api_error"
        )
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return self.error(SimError(exc.status_code, kind, message), self.request_id())

    async def server_error(self, request: Request, exc: Exception) -> Response:
        return self.error(SimError(500, "api_error", "Internal server error"), self.request_id())


def create_app(
    *,
    table: ModelTable | None = None,
    api_key: str | None = None,
    event_delay: float = 0.0,
    extra_models: Mapping[str, CapsRow] | None = None,
) -> Starlette:
    """A deterministic stand-in for Anthropic's Messages API, as an ASGI app (see the package docstring).
    ``extra_models`` declares more model ids (newest, listed first), each with its table row: a model
    the shipped table has never heard of, or one with ``lifecycle: deprecated`` / ``retired``."""
    sim = _Simulator(table or ModelTable.with_overrides(), api_key, event_delay, dict(extra_models or {}))
    routes = [
        Route("/v1/messages", sim.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", sim.count_tokens, methods=["POST"]),
        Route("/v1/models", sim.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", sim.get_model, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: sim.http_error, Exception: sim.server_error},
    )
