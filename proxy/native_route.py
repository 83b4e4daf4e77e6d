"""POST /v1/messages and /v1/messages/count_tokens for Anthropic-native clients.

The body goes upstream as the client wrote it (aliases resolved), through the same client keys,
retries, key pool and metrics as chat completions; errors come back in Anthropic's shape, which
Anthropic SDKs parse. Pure helpers live in ``proxy/native.py``.

What a request takes (the key's reservation, the upstream response it opens) has one owner, as
on the chat route (see ``proxy/chat.py``): released on every way out, by the stream's response
when the request streams. ``count_tokens`` counts against the key's requests per minute like
every request; it reserves and books no tokens (counting is free upstream).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.chat import answer_headers, note_usage, owned, settle
from proxy.disconnect import until_disconnect
from proxy.errors import ProxyError, UpstreamAuthFailed
from proxy.keys import estimate_tokens
from proxy.native import NativeUsage, anthropic_error, anthropic_error_event, message_usage, prepare_native
from proxy.sse import SSEDecoder
from proxy.streaming import EventStreamResponse
from proxy.upstream import UpstreamReply, UpstreamStream
from proxy.usage import Usage

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger("proxy.native")

# Headers a native client may set that the upstream should see; credentials are never among them.
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")


async def native_messages(request: Request) -> Response:
    return await _handle(request, "/v1/messages", count_tokens=False)


async def native_count_tokens(request: Request) -> Response:
    return await _handle(request, "/v1/messages/count_tokens", count_tokens=True)


async def _handle(request: Request, path: str, *, count_tokens: bool) -> Response:
    async with contextlib.AsyncExitStack() as owner:
        owner.push_async_callback(settle, request)  # last: after the usage is noted and the upstream closed
        try:
            response = await _forward(request, path, owner, count_tokens=count_tokens)
        except ProxyError as exc:
            response = _error_response(request, exc)
        if isinstance(response, EventStreamResponse):
            response.adopt(owner.pop_all())  # nothing can fail between here and the response's start
        return response


async def _forward(request: Request, path: str, owner: contextlib.AsyncExitStack, *, count_tokens: bool) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    principal = await gateway.authenticate(request)
    body = await gateway.read_json(request)
    native = prepare_native(body, gateway.models, count_tokens=count_tokens)
    request.state.model, request.state.stream = native.model, native.stream
    gateway.keys.check_model(principal, native.model)
    # Counting tokens is free upstream, so it reserves none here: it counts as one request only.
    estimate = 0 if count_tokens or not principal.limited else estimate_tokens(body)
    request.state.admission = await gateway.keys.admit(principal, native.model, estimate)
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    if native.stream:
        opening = owned(owner, gateway.upstream.open_stream(path, native.payload, headers))
        opened = await until_disconnect(request.receive, opening)
        if isinstance(opened, UpstreamStream):
            usage = NativeUsage()
            owner.callback(lambda: note_usage(request, usage.tokens))
            return EventStreamResponse(
                _relay(opened, usage, request),
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
        call = gateway.upstream.request("POST", path, native.payload, headers)
        reply = await until_disconnect(request.receive, call)
    return _passthrough(request, reply, started, count_tokens=count_tokens)


def _error_response(request: Request, error: ProxyError) -> Response:
    request.state.error = error.type
    headers = {**_limit_headers(request), **error.headers}
    return Response(
        anthropic_error(error), status_code=error.status_code, headers=headers, media_type="application/json"
    )


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
            note_usage(request, Usage.from_anthropic(usage))
    headers = {**answer_headers(reply, started), **_limit_headers(request)}
    for name in ("retry-after", "content-type"):
        if name in reply.headers:
            headers[name] = reply.headers[name]
    return Response(reply.body, status_code=reply.status, headers=headers)


async def _relay(stream: UpstreamStream, usage: NativeUsage, request: Request) -> AsyncIterator[bytes]:
    """Forward the upstream bytes unchanged, reading usage from the events on the way. Closing
    the upstream response and settling are the request owner's."""
    decoder = SSEDecoder(stream.max_event_bytes)
    try:
        async for chunk in stream.iter_bytes():
            for event, data in decoder.feed(chunk):
                usage.feed(event, data)
            yield chunk
    except ProxyError as exc:
        log.warning("native upstream stream failed: %r", exc)
        request.state.error = exc.type
        yield anthropic_error_event(exc)
