"""The ASGI application: the app factory, its lifespan, the routes and error rendering."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import httpx
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy import metrics
from proxy.access import AccessMiddleware
from proxy.config import Settings
from proxy.console import routes as console_routes
from proxy.console.health import publish_upstream_in_flight
from proxy.dialects import DIALECTS
from proxy.disconnect import ClientGone
from proxy.errors import InvalidRequest, NotFound, ProxyError
from proxy.exchange import exchange_of
from proxy.gateway import Gateway
from proxy.keys import KeyService, PriceTable, keys_from_config
from proxy.keys.admin import routes as admin_routes
from proxy.lifecycle import LIFECYCLE
from proxy.models import model_not_found
from proxy.models_refresh import ModelsRefresher
from proxy.pipeline import endpoint
from proxy.server import install_drain
from proxy.simulator.transport import InProcessTransport
from proxy.upstream import Upstream

log = logging.getLogger("proxy")


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
    raise model_not_found(wanted)


# --- errors -------------------------------------------------------------------------


def error_response(error: ProxyError) -> Response:
    return Response(
        error.to_json(), status_code=error.status_code, media_type="application/json", headers=error.headers
    )


async def _on_proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    exchange_of(request.scope).error = exc.type
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
    exchange_of(request.scope).error = "client_disconnected"
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
            responses_retention=settings.responses.retention,
            responses_max_bytes=settings.responses.max_stored_bytes,
        )
        gateway = Gateway(settings, Upstream(settings, transport=transport), keys)
        app.state.gateway = gateway
        refresher = ModelsRefresher(
            gateway, interval=settings.models_refresh_interval, startup_wait=settings.models_startup_wait
        )
        app.state.models_refresher = refresher
        if drain_on_signal:
            install_drain(settings.shutdown.drain_delay)
        await refresher.start()  # the upstream's capabilities, waited for briefly
        publisher = publish_upstream_in_flight(lambda: gateway.upstream.in_flight)  # the console's health page
        # Everything made at start-up (modules, tables, settings) lives as long as the process: moved
        # out of the collector's sight, a full collection no longer walks it (~5 % of CPU under load).
        gc.freeze()
        LIFECYCLE.ready = True
        try:
            yield
        finally:
            LIFECYCLE.ready = False
            if publisher is not None:
                publisher.cancel()
            await refresher.aclose()
            await gateway.upstream.aclose()
            await gateway.keys.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *(
            Route(where.path, endpoint(dialect, where), methods=["POST"])
            for dialect in DIALECTS
            for where in dialect.endpoints
        ),
        *(route for dialect in DIALECTS for route in dialect.routes()),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        *admin_routes(
            lambda request: request.app.state.gateway.keys,
            lambda request: request.app.state.gateway.bad_keys,  # wrong admin keys count as guesses too
        ),
        # The web console: more routes, no middleware (nothing on the completion path).
        *console_routes(lambda request: request.app.state.gateway),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessMiddleware, routes=routes, max_header_bytes=settings.max_header_bytes)],
        exception_handlers={
            ProxyError: _on_proxy_error,
            HTTPException: _on_http_error,
            ClientGone: _on_client_gone,
            Exception: _on_unexpected,
        },
    )
