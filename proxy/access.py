"""The outermost middleware: request ids, the access log line, request metrics and timing.

A plain ASGI middleware (not starlette's BaseHTTPMiddleware) so that streamed bodies pass through
untouched and unbuffered. It opens the request's `Exchange` (`proxy.exchange`), which the pipeline
fills with what it learns (key name, model, usage, upstream request id); the line is written from it
when the last byte has gone out.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy import metrics, tracing
from proxy.errors import InvalidRequest
from proxy.exchange import Exchange, open_exchange

log = logging.getLogger("proxy.access")

QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_CLIENT_ID = re.compile(r"^[\w.:\-]{1,128}$")
_CONVERTER = re.compile(r":\w+\}")  # `{model:path}` → `{model}`


class RouteLabels:
    """A request path's metrics label, read off the app's own route table (so the route list exists
    once): a route's path, a parametrised route's template (``/v1/models/{model}``), a mounted
    sub-app's prefix (``/admin``), and "other" for anything else, so scanners cannot grow the metrics."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._exact: dict[str, str] = {}
        self._prefixes: list[tuple[str, str]] = []
        for route in routes:
            path = getattr(route, "path", "")
            if isinstance(route, Mount):
                self._prefixes.append((path + "/", path))
            elif "{" in path:
                self._prefixes.append((path[: path.index("{")], _CONVERTER.sub("}", path)))
            elif path:
                self._exact[path] = path

    def __call__(self, path: str) -> str:
        label = self._exact.get(path)
        if label is not None:
            return label
        for prefix, label in self._prefixes:
            if path.startswith(prefix):
                return label
        return "other"


def request_id(scope: Scope) -> str:
    """The client's ``x-request-id`` when it is a sane token, else a fresh one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _CLIENT_ID.match(candidate):
                return candidate
    return "req_" + os.urandom(16).hex()  # 128 random bits, as uuid4 without building a UUID


class AccessMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = (), max_header_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.route_label = RouteLabels(routes)
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        exchange = open_exchange(scope, rid)
        status = 500
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append(rid_header)
                if not any(name == b"server-timing" for name, _ in headers):
                    gateway_ms = (time.perf_counter() - started) * 1000
                    headers.append((b"server-timing", f"gateway;dur={gateway_ms:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
                await _too_many_header_bytes(send_with_id, self.max_header_bytes)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            metrics.IN_FLIGHT.dec()
            self._record(scope, exchange, status, time.perf_counter() - started)

    def _record(self, scope: Scope, exchange: Exchange, status: int, elapsed: float) -> None:
        path = scope["path"]
        route = self.route_label(path)
        error = exchange.error
        if exchange.answered_by_server is not None:  # the server answered over the app's head
            status, error = exchange.answered_by_server
        model = metrics.model_label(exchange.model)
        metrics.series(metrics.REQUESTS, route, model, str(status)).inc()
        metrics.series(metrics.REQUEST_DURATION, route, model).observe(elapsed)
        fields: dict[str, Any] = {
            "request_id": exchange.request_id,
            "method": scope["method"],
            "path": path if route != "other" else route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": _client_host(scope),  # as uvicorn reports it: X-Forwarded-For only from trusted proxies
            "key": exchange.key_name,
            "model": exchange.model,
            "stream": exchange.stream,
        }
        usage = exchange.usage
        if usage is not None:  # OpenAI's names: the whole prompt, the output, the cache reads
            fields["prompt_tokens"] = usage.prompt
            fields["completion_tokens"] = usage.output
            fields["cached_tokens"] = usage.cache_read
        if exchange.attempts is not None:
            fields["attempts"] = exchange.attempts
        if exchange.upstream_request_id is not None:
            fields["upstream_request_id"] = exchange.upstream_request_id
        if exchange.dropped:
            fields["dropped"] = list(exchange.dropped)
        if error is not None:
            fields["error"] = error
        if exchange.trace is not None:  # a log line leads to its trace
            fields["trace_id"] = exchange.trace.trace_id
            fields["span_id"] = exchange.trace.span_id
            # The request's last line: a later request served in this task (a test client's) is not this one.
            tracing.CURRENT.set(None)
        if exchange.payloads_logged:  # only when log_payloads is on
            fields["request_body"] = exchange.request_body
            fields["response_body"] = exchange.response_body
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        log.log(level, "%s %s %s", scope["method"], fields["path"], status, extra={"fields": fields})


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


async def _too_many_header_bytes(send: Send, limit: int) -> None:
    # The server has buffered them already (httptools sets no limit); refuse before any handler sees them.
    error = InvalidRequest(f"The request headers are larger than this gateway accepts ({limit} bytes).", status=431)
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": error.to_json()})
