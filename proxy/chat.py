"""POST /v1/chat/completions: translate, call the upstream, translate back.

Glue only: every mapping decision lives in ``proxy/translate``, every network decision in
``proxy/upstream.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from proxy import metrics
from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.sse import SSEDecoder
from proxy.translate.errors import from_upstream
from proxy.translate.request import TranslatedRequest, to_messages_request
from proxy.translate.response import to_chat_completion
from proxy.translate.stream import StreamTranslator
from proxy.upstream import UpstreamReply, UpstreamStream

if TYPE_CHECKING:
    from proxy.app import Gateway

log = logging.getLogger("proxy.chat")

MESSAGES_PATH = "/v1/messages"
SSE_HEADERS = {
    "cache-control": "no-cache",
    # Tells nginx-style proxies in front of us not to buffer the stream.
    "x-accel-buffering": "no",
}


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    gateway.authenticate(request)
    body = await gateway.read_json(request)
    translated = to_messages_request(body, gateway.models)
    state = request.state
    state.model, state.stream = translated.model, translated.stream
    if gateway.settings.log_payloads:
        state.request_body = body
    try:
        payload = orjson.dumps(translated.upstream)
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes (it reads deeper than it writes)
        raise InvalidRequest(f"The request cannot be forwarded: {exc}.") from None
    if translated.stream:
        return await _stream(gateway, request, translated, payload, started)
    return await _complete(gateway, request, payload, started)


async def _complete(gateway: Gateway, request: Request, payload: bytes, started: float) -> Response:
    reply = await gateway.upstream.request("POST", MESSAGES_PATH, payload)
    _note_upstream(request, reply)
    if reply.status != 200:
        raise _with_request_id(from_upstream(reply.status, reply.body, reply.headers), reply)
    try:
        message = orjson.loads(reply.body)
        completion = to_chat_completion(message, created=int(time.time()))
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError("the upstream API answered with a malformed message") from exc
    _note_usage(request, completion.get("usage"))
    if gateway.settings.log_payloads:
        request.state.response_body = completion
    return Response(orjson.dumps(completion), media_type="application/json", headers=_answer_headers(reply, started))


async def _stream(
    gateway: Gateway, request: Request, translated: TranslatedRequest, payload: bytes, started: float
) -> Response:
    opened = await gateway.upstream.open_stream(MESSAGES_PATH, payload)
    _note_upstream(request, opened)
    if isinstance(opened, UpstreamReply):
        # Nothing has reached the client yet, so an error here is an ordinary JSON error response.
        raise _with_request_id(from_upstream(opened.status, opened.body, opened.headers), opened)
    translator = StreamTranslator(
        created=int(time.time()), include_usage=translated.include_usage, model=translated.model
    )
    return StreamingResponse(
        _relay(opened, translator, request, started),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **_answer_headers(opened, started)},
    )


async def _relay(
    stream: UpstreamStream, translator: StreamTranslator, request: Request, started: float
) -> AsyncIterator[bytes]:
    """Forward each upstream event as soon as it is decoded. Starlette cancels this generator
    when the client disconnects; the ``finally`` then closes the upstream response at once and
    still accounts for the tokens used so far."""
    decoder = SSEDecoder()
    first_token_seen = False
    metrics.STREAMS_OPEN.inc()
    try:
        async for chunk in stream.iter_bytes():
            for event, data in decoder.feed(chunk):
                out = translator.feed(event, data)
                if out:
                    if not first_token_seen and event == "content_block_delta":
                        first_token_seen = True
                        ttft = time.perf_counter() - started
                        metrics.TIME_TO_FIRST_TOKEN.labels(metrics.model_label(request.state.model)).observe(ttft)
                    yield out
                if translator.done:
                    return
        if translator.done:
            return
        if translator.finish_reason is None:
            # The upstream closed without message_delta/message_stop: never pass that off as a clean stop.
            yield translator.fail(UpstreamError("the upstream stream ended before the message was complete"))
            return
        yield translator.finish()
    except ProxyError as exc:
        log.warning("upstream stream failed: %r", exc)
        request.state.error = exc.type
        yield translator.fail(exc)
    finally:
        metrics.STREAMS_OPEN.dec()
        _note_usage(request, translator.usage)
        await stream.aclose()


def _note_upstream(request: Request, reply: UpstreamReply | UpstreamStream) -> None:
    request.state.attempts = reply.attempts
    request.state.upstream_request_id = reply.request_id


def _note_usage(request: Request, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    state = request.state
    state.prompt_tokens = usage.get("prompt_tokens")
    state.completion_tokens = usage.get("completion_tokens")
    state.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    metrics.record_tokens(getattr(state, "key_name", "") or "", state.model, usage)


def _answer_headers(reply: UpstreamReply | UpstreamStream, started: float) -> dict[str, str]:
    total_ms = (time.perf_counter() - started) * 1000
    upstream_ms = reply.elapsed * 1000
    headers = {"server-timing": f"upstream;dur={upstream_ms:.1f}, gateway;dur={max(total_ms - upstream_ms, 0):.1f}"}
    if reply.request_id:
        headers["request-id"] = reply.request_id
    return headers


def _with_request_id(error: ProxyError, reply: UpstreamReply) -> ProxyError:
    if reply.request_id:
        error.headers.setdefault("request-id", reply.request_id)
    return error
