"""The ASGI application: the app factory, its lifespan, the routes and error rendering."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pydantic
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from proxy import metrics
from proxy.abuse import BadKeyThrottle, refuse_if_throttled
from proxy.access import AccessMiddleware
from proxy.chat import chat_completions
from proxy.config import Settings
from proxy.disconnect import ClientGone
from proxy.errors import AuthenticationFailed, BodyTooLarge, InvalidRequest, NotFound, ProxyError, UpstreamError
from proxy.keys import KeyService, PriceTable, Principal, keys_from_config
from proxy.keys.admin import routes as admin_routes
from proxy.lifecycle import LIFECYCLE
from proxy.models import ModelTable
from proxy.native_route import native_count_tokens, native_messages
from proxy.server import install_drain
from proxy.translate.errors import from_upstream
from proxy.upstream import InProcessTransport, Upstream

log = logging.getLogger("proxy")


class Gateway:
    """What every request handler needs, built once at start-up."""

    def __init__(self, settings: Settings, upstream: Upstream, keys: KeyService) -> None:
        self.settings = settings
        self.models: ModelTable = settings.model_table()
        self.keys = keys
        self.upstream = upstream
        self.bad_keys = BadKeyThrottle(settings.bad_key_max_failures, settings.bad_key_window)
        self._model_list: tuple[float, list[dict[str, Any]]] | None = None

    async def authenticate(self, request: Request) -> Principal:
        """The caller's key, checked before anything else. An address that keeps sending wrong keys
        is throttled: its guesses get 429 whatever they are, while keys already used from it keep
        working (see `proxy.abuse`)."""
        address = request.client.host if request.client else None
        try:
            principal = await self.keys.authenticate(request.headers)
        except AuthenticationFailed as exc:
            if exc.code == "missing_api_key":  # a misconfigured client, not a guess
                raise
            refuse_if_throttled(self.bad_keys.refuse_bad_key(address))
            raise
        refuse_if_throttled(self.bad_keys.refuse_valid_key(address, principal.name))
        request.state.principal = principal
        request.state.key_name = principal.name
        return principal

    async def read_json(self, request: Request) -> Any:
        """The request body parsed as JSON, refusing bodies over the configured limit early."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
        except ClientDisconnect:
            raise InvalidRequest("the client closed the connection before sending the whole body") from None
        raw = b"".join(parts)
        if not raw:
            raise InvalidRequest("The request body is empty; send a JSON object.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's models in OpenAI's shape, cached briefly, plus the configured aliases."""
        now = time.monotonic()
        if self._model_list and now - self._model_list[0] < self.settings.models_cache_seconds:
            return self._model_list[1]
        reply = await self.upstream.request("GET", "/v1/models?limit=1000")
        if reply.status != 200:
            raise from_upstream(reply.status, reply.body, reply.headers)
        models = [_openai_model(entry) for entry in _upstream_models(reply.body)]
        for alias in self.models.aliases:
            models.append({"id": alias, "object": "model", "created": 0, "owned_by": "claude-proxy"})
        self._model_list = (now, models)
        return models


class _UpstreamModel(pydantic.BaseModel):
    """One entry of the upstream's model list, as far as the gateway reads it (extra fields ignored)."""

    model_config = pydantic.ConfigDict(strict=True)

    id: str = pydantic.Field(min_length=1)
    created_at: Any = None  # cosmetic: one that cannot be read is shown as 0, not refused


class _UpstreamModelList(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)

    data: list[_UpstreamModel]


def _upstream_models(body: bytes) -> list[_UpstreamModel]:
    """The upstream's ``GET /v1/models`` answer checked; anything but a list of models is a 502."""
    try:
        return _UpstreamModelList.model_validate_json(body).data
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[:3]  # a list of 1000 bad entries stays one line
        log.warning("the upstream model list is malformed (%d errors): %s", exc.error_count(), first)
        raise UpstreamError("the upstream API answered the model list with malformed data") from None


def _openai_model(entry: _UpstreamModel) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "model",
        "created": _epoch(entry.created_at),
        "owned_by": "anthropic",
    }


def _epoch(rfc3339: Any) -> int:
    if not isinstance(rfc3339, str):
        return 0
    try:
        return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"The request body is larger than this gateway accepts ({limit} bytes).")


# --- routes -------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    if LIFECYCLE.serving:
        return Response(b'{"status":"ready"}', media_type="application/json")
    status = b"draining" if LIFECYCLE.draining else b"starting"
    return Response(b'{"status":"' + status + b'"}', status_code=503, media_type="application/json")


async def metrics_endpoint(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    metrics.record_key_pool(gateway.upstream.keys.state())
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


async def models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    await gateway.authenticate(request)
    data = await gateway.list_models()
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def model(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    await gateway.authenticate(request)
    wanted = request.path_params["model"]
    for entry in await gateway.list_models():
        if entry["id"] == wanted:
            return Response(orjson.dumps(entry), media_type="application/json")
    raise NotFound(f"The model '{wanted}' does not exist.", param="model", code="model_not_found")


# --- errors -------------------------------------------------------------------------


def error_response(error: ProxyError) -> Response:
    return Response(
        error.to_json(), status_code=error.status_code, media_type="application/json", headers=error.headers
    )


async def _on_proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    request.state.error = exc.type
    return error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: ProxyError = NotFound(f"Unknown route: {request.method} {request.url.path}", code="unknown_url")
    else:
        error = InvalidRequest(str(exc.detail), status=exc.status_code)
    return error_response(error)


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    # Nobody will read this; the status is for the access log (nginx's "client closed request").
    request.state.error = "client_disconnected"
    return Response(status_code=499)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ProxyError("The gateway hit an internal error; it has been logged."))


# --- factory ------------------------------------------------------------------------


def create_app(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None, drain_on_signal: bool = False
) -> Starlette:
    """Build the gateway. ``transport`` replaces the network (tests); with neither a transport nor
    an upstream key the built-in simulator answers in-process. ``drain_on_signal`` (set by ``serve``)
    makes SIGTERM drain gracefully, see ``proxy.server``."""
    if transport is None and settings.simulating:
        from proxy.simulator import create_app as create_simulator

        transport = InProcessTransport(create_simulator(table=settings.model_table()))
        log.warning(
            "SIMULATOR MODE: no ANTHROPIC_API_KEY is set, so answers come from the built-in simulator, "
            "not from Claude. Set ANTHROPIC_API_KEY to serve real completions."
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        LIFECYCLE.ready = LIFECYCLE.draining = False
        keys = await KeyService.open(
            settings.store,
            settings.api_keys,
            keys_from_config(settings.client_keys),
            admin_key=settings.admin_key,
            prices=PriceTable.shipped(settings.prices),
        )
        gateway = Gateway(settings, Upstream(settings, transport=transport), keys)
        app.state.gateway = gateway
        if drain_on_signal:
            install_drain(settings.shutdown.drain_delay)
        LIFECYCLE.ready = True
        try:
            yield
        finally:
            LIFECYCLE.ready = False
            await gateway.upstream.aclose()
            await gateway.keys.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/messages", native_messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", native_count_tokens, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        *admin_routes(
            lambda request: request.app.state.gateway.keys,
            lambda request: request.app.state.gateway.bad_keys,  # wrong admin keys count as guesses too
        ),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessMiddleware, max_header_bytes=settings.max_header_bytes)],
        exception_handlers={
            ProxyError: _on_proxy_error,
            HTTPException: _on_http_error,
            ClientGone: _on_client_gone,
            Exception: _on_unexpected,
        },
    )
