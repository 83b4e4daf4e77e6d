"""POST /v1/chat/completions: translate, call the upstream, translate back.

Glue only: every mapping decision lives in ``proxy/translate``, every network decision in
``proxy/upstream.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import metrics
from proxy.disconnect import until_disconnect
from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.keys import estimate_tokens
from proxy.sse import SSEDecoder
from proxy.streaming import EventStreamResponse
from proxy.translate.errors import from_upstream
from proxy.translate.request import TranslatedRequest, to_messages_request
from proxy.translate.response import merge_completions, merge_usage, to_chat_completion
from proxy.translate.stream import ChoiceStreams, StreamTranslator
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
    principal = await gateway.authenticate(request)
    body = await gateway.read_json(request)
    settings = gateway.settings
    translated = to_messages_request(body, gateway.models, max_n=settings.max_n, auto_cache=settings.auto_cache)
    state = request.state
    state.model, state.stream = translated.model, translated.stream
    if gateway.settings.log_payloads:
        state.request_body = body
    try:
        payload = orjson.dumps(translated.upstream)
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes (it reads deeper than it writes)
        raise InvalidRequest(f"The request cannot be forwarded: {exc}.") from None
    gateway.keys.check_model(principal, translated.model)
    estimate = estimate_tokens(translated.upstream) * translated.n
    admission = await gateway.keys.admit(principal, translated.model, estimate)
    state.admission = admission
    try:
        response = await _dispatch(gateway, request, translated, payload, started)
    except BaseException as exc:
        await settle(request)  # nothing came back: the reservation is released
        if isinstance(exc, ProxyError):
            for name, value in admission.headers.items():
                exc.headers.setdefault(name, value)
        raise
    response.headers.update(admission.headers)
    if not translated.stream:
        await settle(request)  # a stream settles when it ends, in its relay
    return response


async def _dispatch(
    gateway: Gateway, request: Request, translated: TranslatedRequest, payload: bytes, started: float
) -> Response:
    if translated.n > 1:
        if translated.stream:
            return await _stream_choices(gateway, request, translated, payload, started)
        return await _complete_choices(gateway, request, translated.n, payload, started)
    if translated.stream:
        return await _stream(gateway, request, translated, payload, started)
    return await _complete(gateway, request, payload, started)


async def _complete(gateway: Gateway, request: Request, payload: bytes, started: float) -> Response:
    reply = await until_disconnect(request.receive, gateway.upstream.request("POST", MESSAGES_PATH, payload))
    _note_upstream(request, reply)
    if reply.status != 200:
        raise _with_request_id(from_upstream(reply.status, reply.body, reply.headers), reply)
    try:
        message = orjson.loads(reply.body)
        completion = to_chat_completion(message, created=int(time.time()))
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError("the upstream API answered with a malformed message") from exc
    note_usage(request, completion.get("usage"))
    if gateway.settings.log_payloads:
        request.state.response_body = completion
    return Response(orjson.dumps(completion), media_type="application/json", headers=answer_headers(reply, started))


async def _stream(
    gateway: Gateway, request: Request, translated: TranslatedRequest, payload: bytes, started: float
) -> Response:
    opened = await until_disconnect(request.receive, gateway.upstream.open_stream(MESSAGES_PATH, payload))
    _note_upstream(request, opened)
    if isinstance(opened, UpstreamReply):
        # Nothing has reached the client yet, so an error here is an ordinary JSON error response.
        raise _with_request_id(from_upstream(opened.status, opened.body, opened.headers), opened)
    translator = StreamTranslator(
        created=int(time.time()), include_usage=translated.include_usage, model=translated.model
    )
    return EventStreamResponse(
        _relay(opened, translator, request, started),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **answer_headers(opened, started)},
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
                        model = metrics.model_label(request.state.model)
                        metrics.series(metrics.TIME_TO_FIRST_TOKEN, model).observe(ttft)
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
        note_usage(request, translator.usage)
        await settle(request)
        await stream.aclose()


# --- n > 1: one upstream call per choice, concurrently ----------------------------------------


async def _complete_choices(gateway: Gateway, request: Request, n: int, payload: bytes, started: float) -> Response:
    async def all_choices() -> list[UpstreamReply]:
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other calls
                calls = [group.create_task(gateway.upstream.request("POST", MESSAGES_PATH, payload)) for _ in range(n)]
        except* ProxyError as failed:
            raise failed.exceptions[0] from None
        return [call.result() for call in calls]

    replies = await until_disconnect(request.receive, all_choices())
    for reply in replies:
        if reply.status != 200:  # any failed choice fails the request: a partial answer would mislead
            _note_upstream(request, reply)
            raise _with_request_id(from_upstream(reply.status, reply.body, reply.headers), reply)
    created = int(time.time())
    try:
        completion = merge_completions([to_chat_completion(orjson.loads(r.body), created=created) for r in replies])
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError("the upstream API answered with a malformed message") from exc
    _note_upstream(request, replies[0])
    note_usage(request, completion.get("usage"))
    return Response(
        orjson.dumps(completion), media_type="application/json", headers=answer_headers(replies[0], started)
    )


async def _stream_choices(
    gateway: Gateway, request: Request, translated: TranslatedRequest, payload: bytes, started: float
) -> Response:
    opening = asyncio.gather(
        *(gateway.upstream.open_stream(MESSAGES_PATH, payload) for _ in range(translated.n)), return_exceptions=True
    )
    opened = await until_disconnect(request.receive, opening)
    streams = [o for o in opened if isinstance(o, UpstreamStream)]
    failure = next((o for o in opened if not isinstance(o, UpstreamStream)), None)
    if failure is not None:
        for stream in streams:
            await stream.aclose()
        if isinstance(failure, UpstreamReply):
            raise _with_request_id(from_upstream(failure.status, failure.body, failure.headers), failure)
        raise failure
    _note_upstream(request, streams[0])
    choices = ChoiceStreams(
        translated.n,
        created=int(time.time()),
        include_usage=translated.include_usage,
        model=translated.model,
        completion_id=f"chatcmpl-{uuid.uuid4().hex}",
    )
    return EventStreamResponse(
        _relay_choices(streams, choices, request),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **answer_headers(streams[0], started)},
    )


_END = object()


async def _relay_choices(
    streams: list[UpstreamStream], choices: ChoiceStreams, request: Request
) -> AsyncIterator[bytes]:
    """Interleave n upstream streams as their events arrive, each chunk tagged with its choice."""
    queue: asyncio.Queue[tuple[int, Any, bytes]] = asyncio.Queue()

    async def pump(index: int, stream: UpstreamStream) -> None:
        decoder = SSEDecoder()
        try:
            async for chunk in stream.iter_bytes():
                for event, data in decoder.feed(chunk):
                    await queue.put((index, event, data))
        except ProxyError as exc:
            await queue.put((index, exc, b""))
            return
        await queue.put((index, _END, b""))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    metrics.STREAMS_OPEN.inc()
    try:
        while not choices.done:
            index, event, data = await queue.get()
            if event is _END:
                out = choices.end(index)
            elif isinstance(event, ProxyError):
                request.state.error = event.type
                out = choices.fail(event)
            else:
                out = choices.feed(index, event, data)
            if out:
                yield out
    finally:
        metrics.STREAMS_OPEN.dec()
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()
        usages = [t.usage for t in choices.translators if t.usage is not None]
        note_usage(request, merge_usage(usages) if usages else None)
        await settle(request)


def _note_upstream(request: Request, reply: UpstreamReply | UpstreamStream) -> None:
    request.state.attempts = reply.attempts
    request.state.upstream_request_id = reply.request_id


async def settle(request: Request) -> None:
    """Replace the key's token reservation by what was used (``state.usage``; none on failure)."""
    state = request.state
    admission = getattr(state, "admission", None)
    if admission is None:
        return
    state.admission = None
    gateway: Gateway = request.app.state.gateway
    await gateway.keys.settle_usage(admission, model=state.model, usage=getattr(state, "usage", None))


def note_usage(request: Request, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    state = request.state
    state.usage = usage
    state.prompt_tokens = usage.get("prompt_tokens")
    state.completion_tokens = usage.get("completion_tokens")
    state.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    metrics.record_tokens(getattr(state, "key_name", "") or "", state.model, usage)


def answer_headers(reply: UpstreamReply | UpstreamStream, started: float) -> dict[str, str]:
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
