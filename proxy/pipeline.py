"""The request lifecycle, written once for every dialect.

    authenticate → read the body → parse (the dialect, pure) → check the model → admit
      → call the upstream (retries, key pool, load shedding: `proxy.upstream`)
      → answer (the dialect, pure) | relay the stream as it arrives (the dialect's translator)
      → settle the key's usage

Every stage is here and nowhere else; a dialect (`proxy.dialects`) owns only shapes. What a request
takes — the key's token reservation, every upstream response it opens (each holds one of the
upstream's in-flight slots) — has one owner, an `AsyncExitStack` opened by `serve`: whatever way the
request ends (an answer, an error, an exception, the client leaving, a cancellation), the stack
closes the upstream responses and then settles the reservation, once (`Exchange.settle`). A stream
outlives `serve`: its response adopts the stack and releases it at the stream's end
(`proxy.streaming.EventStreamResponse`).

`n > 1` (several choices) is a fan-out over any dialect whose `Outbound.n` asks for it: n upstream
calls made concurrently, merged by the dialect's `answer`, or interleaved as they arrive through its
`relay_choices` translator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import metrics, tracing
from proxy.dialects.base import Answer, Dialect, Endpoint, Inbound, Outbound
from proxy.disconnect import ClientGone, until_disconnect
from proxy.errors import ProxyError, UpstreamError
from proxy.exchange import Exchange, exchange_of
from proxy.keys import estimate_tokens
from proxy.sse import SSEDecoder
from proxy.streaming import EventStreamResponse
from proxy.translators import ChoiceTranslator, StreamTranslator
from proxy.upstream import UpstreamReply, UpstreamStream

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.keys import Principal

log = logging.getLogger("proxy.pipeline")

_T = TypeVar("_T")

SSE_HEADERS: Final = {
    "cache-control": "no-cache",
    # Tells nginx-style proxies in front of us not to buffer the stream.
    "x-accel-buffering": "no",
}
# With `log_payloads`, a streamed answer is logged as the bytes sent, up to this many.
LOGGED_STREAM_BYTES: Final = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def endpoint(dialect: Dialect, where: Endpoint) -> Handler:
    """The route handler serving ``where`` through the pipeline."""

    async def handle(request: Request) -> Response:
        return await serve(dialect, where, request)

    handle.__name__ = handle.__qualname__ = where.name
    return handle


async def serve(dialect: Dialect, where: Endpoint, request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    exchange = exchange_of(request.scope)
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as owner:
        if gateway.settings.tracing:  # off, the one thing tracing costs a request
            # Pushed first, so ended last: after the upstream is closed and the usage settled.
            owner.push(tracing.start(request, where, exchange, gateway.settings.log_payloads).exit)
        owner.push_async_callback(exchange.settle, gateway.keys)  # after usage is noted and the upstream closed
        try:
            response = await _serve(dialect, where, gateway, request, exchange, started, owner)
        except ProxyError as exc:
            response = _error_response(dialect, exchange, exc)
        except ClientGone:
            exchange.error = "client_disconnected"
            response = Response(status_code=499)  # nobody reads it; the status is for the access line
        if exchange.trace is not None:
            exchange.trace.answered(response.status_code)
        if isinstance(response, EventStreamResponse):
            response.adopt(owner.pop_all())  # nothing can fail between here and the response's start
        return response


async def _serve(
    dialect: Dialect,
    where: Endpoint,
    gateway: Gateway,
    request: Request,
    exchange: Exchange,
    started: float,
    owner: contextlib.AsyncExitStack,
) -> Response:
    principal = await gateway.authenticate(request, exchange)
    body = await gateway.read_json(request)
    if gateway.settings.log_payloads:
        exchange.payloads_logged = True
        exchange.request_body = body
    loaded = await dialect.load(where, body, gateway, principal)
    models = gateway.models  # one table for the whole request, even if a refresh swaps it meanwhile
    outbound = dialect.parse(where, body, Inbound(models, gateway.settings, request.headers, loaded))
    exchange.model, exchange.stream, exchange.dropped = outbound.model, outbound.stream, outbound.dropped
    if exchange.trace is not None:
        exchange.trace.request(outbound)
    exchange.model_warning = models.check_serving(outbound.model)  # retired / unknown: a 404 here
    gateway.keys.check_model(principal, outbound.model)
    # Only token limits and budgets reserve an estimate; walking the body for nothing costs every request.
    reserve = outbound.reserves_tokens and principal.limited
    estimate = estimate_tokens(outbound.body) * outbound.n if reserve else 0
    exchange.admission = await gateway.keys.admit(principal, outbound.model, estimate)
    if outbound.stream:
        return await _stream(dialect, gateway, request, exchange, outbound, started, owner, principal)
    response, result = await _complete(dialect, gateway, request, exchange, outbound, started)
    if dialect.keeps and result is not None:
        await _keep(dialect, outbound, result, gateway, principal)
    return response


# --- complete answers -------------------------------------------------------------------


async def _complete(
    dialect: Dialect, gateway: Gateway, request: Request, exchange: Exchange, outbound: Outbound, started: float
) -> tuple[Response, Any]:
    def call() -> Awaitable[UpstreamReply]:
        return gateway.upstream.request("POST", outbound.path, outbound.payload, outbound.headers, trace=exchange.trace)

    if outbound.n == 1:
        replies = [await until_disconnect(request.receive, call())]
    else:
        replies = await until_disconnect(request.receive, _all(call for _ in range(outbound.n)))
    # Any failed choice fails the request: a partial answer would mislead.
    failed = next((reply for reply in replies if reply.status != 200), None)
    exchange.note_upstream(failed or replies[0])
    if exchange.trace is not None:
        exchange.trace.replies(replies)
    if failed is not None:
        answer = _failure(dialect, failed)
    else:
        answer = dialect.answer(replies, outbound)
        exchange.note_usage(answer.usage)
    if exchange.payloads_logged:
        exchange.response_body = _logged_json(answer.body)
    headers = {**answer_headers(failed or replies[0], started), **answer.headers, **_limit_headers(exchange)}
    response = Response(answer.body, status_code=answer.status, headers=headers, media_type="application/json")
    return response, answer.result


async def _keep(dialect: Dialect, outbound: Outbound, result: Any, gateway: Gateway, principal: Principal) -> None:
    """The dialect's `keep`; a store that fails is logged, never the client's failure (its answer
    is complete)."""
    try:
        await dialect.keep(outbound, result, gateway, principal)
    except Exception:
        log.exception("keeping the %s answer failed", type(dialect).__name__)


async def _all(calls: Any) -> list[UpstreamReply]:
    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the other calls
            tasks = [group.create_task(call()) for call in calls]
    except* ProxyError as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _failure(dialect: Dialect, reply: UpstreamReply) -> Answer:
    """A non-200 upstream reply: the dialect's error (raised), or what it passes on as it came."""
    verdict = dialect.upstream_failure(reply)
    if isinstance(verdict, ProxyError):
        if reply.request_id:
            verdict.headers.setdefault("request-id", reply.request_id)
        raise verdict
    return verdict


# --- streams ---------------------------------------------------------------------------


async def _stream(
    dialect: Dialect,
    gateway: Gateway,
    request: Request,
    exchange: Exchange,
    outbound: Outbound,
    started: float,
    owner: contextlib.AsyncExitStack,
    principal: Principal,
) -> Response:
    trace = exchange.trace
    # Each opening is owned on its own: one that completes while the others are cancelled (the
    # client left) is still closed, which a bare gather would lose.
    openings = [
        owned(owner, gateway.upstream.open_stream(outbound.path, outbound.payload, outbound.headers, trace=trace))
        for _ in range(outbound.n)
    ]
    if outbound.n == 1:
        opened: Sequence[Any] = [await until_disconnect(request.receive, openings[0])]
    else:
        opened = await until_disconnect(request.receive, asyncio.gather(*openings, return_exceptions=True))
    failure = next((o for o in opened if not isinstance(o, UpstreamStream)), None)
    if (
        failure is not None
    ):  # nothing has reached the client: an ordinary response; open streams are closed by the owner
        if not isinstance(failure, UpstreamReply):
            raise failure
        exchange.note_upstream(failure)
        answer = _failure(dialect, failure)
        headers = {**answer_headers(failure, started), **answer.headers, **_limit_headers(exchange)}
        return Response(answer.body, status_code=answer.status, headers=headers, media_type="application/json")
    streams: list[UpstreamStream] = list(opened)
    exchange.note_upstream(streams[0])
    body: AsyncGenerator[bytes, None]
    if outbound.n == 1:
        translator = dialect.relay(outbound)
        owner.callback(lambda: exchange.note_usage(translator.tokens))  # the tokens used so far, however it ends
        keep = None
        if dialect.keeps:

            async def keep() -> None:
                await _keep_streamed(dialect, outbound, translator, gateway, principal)

        relayed = translator if trace is None else trace.watch(translator)
        body = _relay(streams[0], relayed, dialect.passthrough, exchange, started, keep)
    else:
        choices = dialect.relay_choices(outbound)
        owner.callback(lambda: exchange.note_usage(choices.tokens))
        merged = choices if trace is None else trace.watch_choices(choices, outbound.n)
        body = _relay_choices(streams, merged, exchange, started)
    if exchange.payloads_logged:
        body = _logged_stream(body, exchange)
    headers = {**SSE_HEADERS, **answer_headers(streams[0], started), **_limit_headers(exchange)}
    return EventStreamResponse(body, media_type="text/event-stream", headers=headers)


async def _relay(
    stream: UpstreamStream,
    translator: StreamTranslator,
    passthrough: bool,
    exchange: Exchange,
    started: float,
    keep: Callable[[], Awaitable[None]] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Forward each upstream read as soon as it is decoded and translated (or, for a passthrough
    dialect, as it came). The response cancels this generator when the client disconnects; the
    request's owner then closes the upstream response and still accounts for the tokens used.
    ``keep`` (the dialect's store) runs before the closing bytes go out: a client that reads the
    end of the stream and at once refers to it finds it stored."""
    decoder = SSEDecoder(stream.max_event_bytes)
    timing = True  # until the first token is out
    parts: list[bytes] = []  # what one upstream read became
    try:
        async for chunk in stream.iter_bytes():
            for event, data in decoder.feed(chunk):
                out = translator.feed(event, data)
                if timing and event == "content_block_delta" and (out or passthrough):
                    timing = False
                    _first_token(exchange, started)
                if out:
                    parts.append(out)
                if translator.done:
                    break
            if translator.done and keep is not None:
                await keep()
            if passthrough:
                yield chunk
            elif parts:
                out = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()
                yield out
            if translator.done:
                return
        out = translator.end()
        if keep is not None:
            await keep()
        yield out
    except ProxyError as exc:  # what the same read translated before the failure still goes first
        log.warning("upstream stream failed: %r", exc)
        exchange.error = exc.type
        yield b"".join(parts) + translator.fail(exc)


_END: Final = object()


async def _relay_choices(
    streams: list[UpstreamStream], choices: ChoiceTranslator, exchange: Exchange, started: float
) -> AsyncGenerator[bytes, None]:
    """Interleave n upstream streams as their events arrive, each translated for its choice. The
    streams themselves belong to the request's owner, which closes them."""
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
    timing = True
    try:
        while not choices.done:
            index, event, data = await queue.get()
            if event is _END:
                out = choices.end(index)
            elif isinstance(event, ProxyError):
                log.warning("upstream stream of choice %d failed: %r", index, event)
                exchange.error = event.type
                out = choices.fail(event)
            else:
                out = choices.feed(index, event, data)
                if timing and out and event == "content_block_delta":
                    timing = False
                    _first_token(exchange, started)
            if out:
                yield out
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # no read in flight while the owner closes


async def _keep_streamed(
    dialect: Dialect, outbound: Outbound, translator: StreamTranslator, gateway: Gateway, principal: Principal
) -> None:
    result = dialect.streamed_result(translator)
    if result is not None:
        await _keep(dialect, outbound, result, gateway, principal)


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


def _first_token(exchange: Exchange, started: float) -> None:
    metrics.series(metrics.TIME_TO_FIRST_TOKEN, metrics.model_label(exchange.model)).observe(
        time.perf_counter() - started
    )
    if exchange.trace is not None:
        exchange.trace.first_token()


# --- headers, errors, payload logging ----------------------------------------------------


def answer_headers(reply: UpstreamReply | UpstreamStream, started: float) -> dict[str, str]:
    total_ms = (time.perf_counter() - started) * 1000
    upstream_ms = reply.elapsed * 1000
    headers = {"server-timing": f"upstream;dur={upstream_ms:.1f}, gateway;dur={max(total_ms - upstream_ms, 0):.1f}"}
    if request_id := reply.request_id:
        headers["request-id"] = request_id
    return headers


DROPPED_HEADER: Final = "x-claude-proxy-dropped"


def _limit_headers(exchange: Exchange) -> dict[str, str]:
    """The headers every answer of an admitted request carries: the key's limits, and which fields
    the client sent that did not reach the upstream as sent."""
    admission = exchange.admission
    headers = dict(admission.headers) if admission is not None else {}
    if exchange.dropped:
        headers[DROPPED_HEADER] = ", ".join(exchange.dropped)
    if exchange.model_warning is not None:  # a deprecated model
        headers["warning"] = exchange.model_warning
    return headers


def _error_response(dialect: Dialect, exchange: Exchange, error: ProxyError) -> Response:
    exchange.error = error.type
    body = dialect.error_body(error)
    if exchange.payloads_logged:
        exchange.response_body = _logged_json(body)
    headers = {**_limit_headers(exchange), **error.headers}
    return Response(body, status_code=error.status_code, headers=headers, media_type="application/json")


def _logged_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:LOGGED_STREAM_BYTES].decode("utf-8", "replace")


async def _logged_stream(body: AsyncGenerator[bytes, None], exchange: Exchange) -> AsyncGenerator[bytes, None]:
    """The stream, with the bytes sent kept (up to `LOGGED_STREAM_BYTES`) for the access line."""
    kept: list[bytes] = []
    room = LOGGED_STREAM_BYTES
    try:
        async for chunk in body:
            if room > 0:
                kept.append(chunk[:room])
                room -= len(chunk)
            yield chunk
    finally:
        text = b"".join(kept).decode("utf-8", "replace")
        exchange.response_body = text + ("…" if room < 0 else "")
        await body.aclose()
