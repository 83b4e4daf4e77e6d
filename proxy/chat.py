"""POST /v1/chat/completions: translate, call the upstream, translate back.

Glue only: every mapping decision lives in ``proxy/translate``, every network decision in
``proxy/upstream/``.

What a request takes — the key's token reservation, every upstream response it opens (each holds
one of the upstream's in-flight slots) — has one owner, an `AsyncExitStack` opened by the route:
whatever way the request ends (an answer, an error, an exception, the client leaving, a
cancellation), the stack closes the upstream responses and then settles the reservation, once. A
stream outlives the route: its response adopts the stack and releases it at the stream's end
(`proxy.streaming.EventStreamResponse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

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
from proxy.translate.response import merge_completions, to_chat_completion
from proxy.translate.stream import ChoiceStreams, StreamTranslator
from proxy.upstream import UpstreamReply, UpstreamStream
from proxy.usage import Usage

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger("proxy.chat")

_T = TypeVar("_T")

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
    translated = to_messages_request(
        body,
        gateway.models,
        max_n=settings.max_n,
        auto_cache=settings.auto_cache,
        max_messages=settings.max_messages,
        max_content_blocks=settings.max_content_blocks,
        max_tools=settings.max_tools,
    )
    state = request.state
    state.model, state.stream = translated.model, translated.stream
    if gateway.settings.log_payloads:
        state.request_body = body
    try:
        payload = orjson.dumps(translated.upstream)
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes (it reads deeper than it writes)
        raise InvalidRequest(f"The request cannot be forwarded: {exc}.") from None
    gateway.keys.check_model(principal, translated.model)
    # Only token limits and budgets reserve an estimate; walking the body for nothing costs every request.
    estimate = estimate_tokens(translated.upstream) * translated.n if principal.limited else 0
    admission = await gateway.keys.admit(principal, translated.model, estimate)
    state.admission = admission
    async with contextlib.AsyncExitStack() as owner:
        owner.push_async_callback(settle, request)  # last: after the usage is noted and the upstream closed
        try:
            response = await _dispatch(gateway, request, translated, payload, started, owner)
        except ProxyError as exc:
            for name, value in admission.headers.items():
                exc.headers.setdefault(name, value)
            raise
        response.headers.update(admission.headers)
        if isinstance(response, EventStreamResponse):
            response.adopt(owner.pop_all())  # nothing can fail between here and the response's start
        return response


async def _dispatch(
    gateway: Gateway,
    request: Request,
    translated: TranslatedRequest,
    payload: bytes,
    started: float,
    owner: contextlib.AsyncExitStack,
) -> Response:
    if translated.n > 1:
        if translated.stream:
            return await _stream_choices(gateway, request, translated, payload, started, owner)
        return await _complete_choices(gateway, request, translated.n, payload, started)
    if translated.stream:
        return await _stream(gateway, request, translated, payload, started, owner)
    return await _complete(gateway, request, payload, started)


async def _complete(gateway: Gateway, request: Request, payload: bytes, started: float) -> Response:
    reply = await until_disconnect(request.receive, gateway.upstream.request("POST", MESSAGES_PATH, payload))
    _note_upstream(request, reply)
    if reply.status != 200:
        raise _with_request_id(from_upstream(reply.status, reply.body, reply.headers), reply)
    completion, usage = _chat_completion(reply, created=int(time.time()))
    note_usage(request, usage)
    if gateway.settings.log_payloads:
        request.state.response_body = completion
    return Response(orjson.dumps(completion), media_type="application/json", headers=answer_headers(reply, started))


def _chat_completion(reply: UpstreamReply, *, created: int) -> tuple[dict[str, Any], Usage]:
    """The chat.completion for an upstream Message and the tokens it used; a malformed one is the
    upstream's fault (502)."""
    try:
        message = orjson.loads(reply.body)
        usage = Usage.from_anthropic(message.get("usage"))  # counts that metering and billing can add up
        return to_chat_completion(message, created=created, usage=usage), usage
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError("the upstream API answered with a malformed message") from exc


def owned(owner: contextlib.AsyncExitStack, opening: Awaitable[_T]) -> asyncio.Future[_T]:
    """``opening`` (an upstream ``open_stream`` call) started, with the stream it opens owned by
    ``owner``: closed when the request ends, even if it opens after the client has gone or the
    request was cancelled while it was opening."""
    call = asyncio.ensure_future(opening)
    owner.push_async_callback(_close_opened, call)
    return call


async def _close_opened(call: asyncio.Future[Any]) -> None:
    if not call.done():
        call.cancel()
        await asyncio.wait((call,))
    if call.cancelled() or call.exception() is not None:
        return
    opened = call.result()
    if isinstance(opened, UpstreamStream):
        await opened.aclose()  # idempotent: a stream already closed is left alone


async def _stream(
    gateway: Gateway,
    request: Request,
    translated: TranslatedRequest,
    payload: bytes,
    started: float,
    owner: contextlib.AsyncExitStack,
) -> Response:
    opening = owned(owner, gateway.upstream.open_stream(MESSAGES_PATH, payload))
    opened = await until_disconnect(request.receive, opening)
    _note_upstream(request, opened)
    if isinstance(opened, UpstreamReply):
        # Nothing has reached the client yet, so an error here is an ordinary JSON error response.
        raise _with_request_id(from_upstream(opened.status, opened.body, opened.headers), opened)
    translator = StreamTranslator(
        created=int(time.time()), include_usage=translated.include_usage, model=translated.model
    )
    owner.callback(lambda: note_usage(request, translator.tokens))  # the tokens used so far, however it ends
    return EventStreamResponse(
        _relay(opened, translator, request, started),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **answer_headers(opened, started)},
    )


async def _relay(
    stream: UpstreamStream, translator: StreamTranslator, request: Request, started: float
) -> AsyncIterator[bytes]:
    """Forward each upstream event as soon as it is decoded. The response cancels this generator
    when the client disconnects; the request's owner then closes the upstream response at once
    and still accounts for the tokens used so far."""
    decoder = SSEDecoder(stream.max_event_bytes)
    first_token_seen = False
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
    answers = [_chat_completion(reply, created=created) for reply in replies]
    completion = merge_completions([completion for completion, _ in answers])
    _note_upstream(request, replies[0])
    note_usage(request, sum((usage for _, usage in answers), Usage()))
    return Response(
        orjson.dumps(completion), media_type="application/json", headers=answer_headers(replies[0], started)
    )


async def _stream_choices(
    gateway: Gateway,
    request: Request,
    translated: TranslatedRequest,
    payload: bytes,
    started: float,
    owner: contextlib.AsyncExitStack,
) -> Response:
    # Each opening is owned on its own: one that completes while the others are cancelled (the
    # client left) is still closed, which a bare gather would lose.
    openings = [owned(owner, gateway.upstream.open_stream(MESSAGES_PATH, payload)) for _ in range(translated.n)]
    opened = await until_disconnect(request.receive, asyncio.gather(*openings, return_exceptions=True))
    streams = [o for o in opened if isinstance(o, UpstreamStream)]
    failure = next((o for o in opened if not isinstance(o, UpstreamStream)), None)
    if failure is not None:  # the streams that did open are closed by the owner
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
    owner.callback(lambda: note_usage(request, _merged_usage(choices)))
    return EventStreamResponse(
        _relay_choices(streams, choices, request),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **answer_headers(streams[0], started)},
    )


_END = object()


async def _relay_choices(
    streams: list[UpstreamStream], choices: ChoiceStreams, request: Request
) -> AsyncIterator[bytes]:
    """Interleave n upstream streams as their events arrive, each chunk tagged with its choice.
    The streams themselves belong to the request's owner, which closes them."""
    queue: asyncio.Queue[tuple[int, Any, bytes]] = asyncio.Queue()

    async def pump(index: int, stream: UpstreamStream) -> None:
        decoder = SSEDecoder(stream.max_event_bytes)
        try:
            async for chunk in stream.iter_bytes():
                for event, data in decoder.feed(chunk):
                    await queue.put((index, event, data))
        except ProxyError as exc:
            await queue.put((index, exc, b""))
            return
        except Exception:  # a bug must not leave the relay waiting for this choice forever
            log.exception("reading choice %d's upstream stream failed", index)
            await queue.put((index, UpstreamError("the upstream stream could not be read"), b""))
            return
        await queue.put((index, _END, b""))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
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
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # no read in flight while the owner closes


def _merged_usage(choices: ChoiceStreams) -> Usage | None:
    usages = [tokens for t in choices.translators if (tokens := t.tokens) is not None]
    return sum(usages, Usage()) if usages else None


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


def note_usage(request: Request, usage: Usage | None) -> None:
    """Record what the request used: for its key's ledger and limits (``settle``), the metrics and
    the access line (whose fields keep OpenAI's names: the whole prompt, output, cache reads)."""
    if usage is None:
        return
    state = request.state
    state.usage = usage
    state.prompt_tokens = usage.prompt
    state.completion_tokens = usage.output
    state.cached_tokens = usage.cache_read
    metrics.record_tokens(getattr(state, "key_name", "") or "", state.model, usage)


def answer_headers(reply: UpstreamReply | UpstreamStream, started: float) -> dict[str, str]:
    total_ms = (time.perf_counter() - started) * 1000
    upstream_ms = reply.elapsed * 1000
    headers = {"server-timing": f"upstream;dur={upstream_ms:.1f}, gateway;dur={max(total_ms - upstream_ms, 0):.1f}"}
    if request_id := reply.request_id:
        headers["request-id"] = request_id
    return headers


def _with_request_id(error: ProxyError, reply: UpstreamReply) -> ProxyError:
    if reply.request_id:
        error.headers.setdefault("request-id", reply.request_id)
    return error
