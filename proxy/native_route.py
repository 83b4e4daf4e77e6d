"""POST /v1/messages and /v1/messages/count_tokens for Anthropic-native clients.

The body goes upstream as the client wrote it (aliases resolved), through the same client keys,
retries, key pool and metrics as chat completions; errors come back in Anthropic's shape, which
Anthropic SDKs parse. Pure helpers live in ``proxy/native.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import metrics
from proxy.chat import answer_headers, note_usage, settle
from proxy.disconnect import until_disconnect
from proxy.errors import ProxyError, UpstreamAuthFailed
from proxy.keys import estimate_tokens
from proxy.native import NativeUsage, anthropic_error, anthropic_error_event, message_usage, prepare_native
from proxy.sse import SSEDecoder
from proxy.streaming import EventStreamResponse
from proxy.translate.response import to_openai_usage
from proxy.upstream import UpstreamReply, UpstreamStream

if TYPE_CHECKING:
    from proxy.app import Gateway

log = logging.getLogger("proxy.native")

# Headers a native client may set that the upstream should see; credentials are never among them.
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")


async def native_messages(request: Request) -> Response:
    return await _handle(request, "/v1/messages", count_tokens=False)


async def native_count_tokens(request: Request) -> Response:
    return await _handle(request, "/v1/messages/count_tokens", count_tokens=True)


async def _handle(request: Request, path: str, *, count_tokens: bool) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    try:
        principal = await gateway.authenticate(request)
        body = await gateway.read_json(request)
        native = prepare_native(body, gateway.models, count_tokens=count_tokens)
        request.state.model, request.state.stream = native.model, native.stream
        gateway.keys.check_model(principal, native.model)
        if not count_tokens:  # counting tokens is free upstream, so it spends nothing here either
            request.state.admission = await gateway.keys.admit(principal, native.model, estimate_tokens(body))
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        if native.stream:
            opened = await until_disconnect(
                request.receive, gateway.upstream.open_stream(path, native.payload, headers)
            )
            if isinstance(opened, UpstreamStream):
                return EventStreamResponse(
                    _relay(opened, request),
                    media_type="text/event-stream",
                    headers={
                        "cache-control": "no-cache",
                        "x-accel-buffering": "no",
                        **answer_headers(opened, started),
                        **_limit_headers(request),
                    },
                )
            reply = opened
        else:
            reply = await until_disconnect(
                request.receive, gateway.upstream.request("POST", path, native.payload, headers)
            )
    except ProxyError as exc:
        request.state.error = exc.type
        headers = {**_limit_headers(request), **exc.headers}
        await settle(request)
        return Response(
            anthropic_error(exc), status_code=exc.status_code, headers=headers, media_type="application/json"
        )
    except BaseException:
        await settle(request)
        raise
    response = _passthrough(request, reply, started, count_tokens=count_tokens)
    await settle(request)
    return response


def _limit_headers(request: Request) -> dict[str, str]:
    admission = getattr(request.state, "admission", None)
    return dict(admission.headers) if admission is not None else {}


def _passthrough(request: Request, reply: UpstreamReply, started: float, *, count_tokens: bool) -> Response:
    if reply.status == 401:  # the gateway's own upstream key was refused: not the client's fault
        error = UpstreamAuthFailed("The gateway's upstream credentials were rejected; the operator has been alerted.")
        return Response(anthropic_error(error), status_code=error.status_code, media_type="application/json")
    if reply.status == 200 and not count_tokens:
        try:
            usage = message_usage(orjson.loads(reply.body))
        except orjson.JSONDecodeError:
            usage = None
        if usage:
            note_usage(request, to_openai_usage(usage))
    headers = {**answer_headers(reply, started), **_limit_headers(request)}
    for name in ("retry-after", "content-type"):
        if name in reply.headers:
            headers[name] = reply.headers[name]
    return Response(reply.body, status_code=reply.status, headers=headers)


async def _relay(stream: UpstreamStream, request: Request) -> AsyncIterator[bytes]:
    """Forward the upstream bytes unchanged, reading usage from the events on the way."""
    decoder = SSEDecoder()
    usage = NativeUsage()
    metrics.STREAMS_OPEN.inc()
    try:
        async for chunk in stream.iter_bytes():
            for event, data in decoder.feed(chunk):
                usage.feed(event, data)
            yield chunk
    except ProxyError as exc:
        log.warning("native upstream stream failed: %r", exc)
        request.state.error = exc.type
        yield anthropic_error_event(exc)
    finally:
        metrics.STREAMS_OPEN.dec()
        note_usage(request, usage.openai_usage)
        await settle(request)
        await stream.aclose()
