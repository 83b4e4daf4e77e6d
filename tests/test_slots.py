"""Every way out of a request gives back what it took: its upstream in-flight slot and its key's
token reservation (settled exactly once).

The gateway runs on a real uvicorn server with a small `max_in_flight`, in front of a raw-TCP
upstream (`tests.faults.RawUpstream`) that answers each request by the fault its user text names.
Each fault is driven three times past the bound: a leaked slot would turn the later requests, and
the healthy ones after them, into 503s.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from proxy.gateway import Gateway
from tests.faults import (
    BLOCK_START,
    BLOCK_STOP,
    CLIENT_KEY,
    LAST_CHUNK,
    MESSAGE_STOP,
    MODEL,
    SSE_HEAD,
    Conn,
    RawUpstream,
    chat_request,
    http_response,
    last_user_text,
    message,
    message_start,
    read_response,
    reply_ok,
    serve_gateway,
    sse,
    text_delta,
)
from tests.polling import eventually_async

pytestmark = pytest.mark.anyio

MAX_IN_FLIGHT = 4
ROUNDS = 3 * MAX_IN_FLIGHT
# A request-id no HTTP header may carry as latin-1 (starlette encodes response headers so).
NON_LATIN_1_ID = "req_✓_日本".encode()


def _delta(usage: dict[str, Any]) -> bytes:
    return sse("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage})


def _stream(*events: bytes, head: bytes = SSE_HEAD) -> Callable[[Conn], Awaitable[None]]:
    async def send(conn: Conn) -> None:
        await conn.send(head)
        await conn.send_events(list(events))
        await conn.send(LAST_CHUNK)

    return send


async def _string_usage_at_start(conn: Conn) -> None:
    start = message()
    start.update(content=[], stop_reason=None, usage={"input_tokens": "7", "output_tokens": 1})
    await _stream(sse("message_start", {"message": start}), BLOCK_START, text_delta("Hi"))(conn)


async def _bad_id_reply(conn: Conn) -> None:
    await conn.send(http_response(200, orjson.dumps(message())).replace(b"req_fault", NON_LATIN_1_ID))


async def _malformed_message(conn: Conn) -> None:
    await conn.send(http_response(200, b'{"id": "msg_1", "content": [{"type": "text"'))


async def _negative_usage_message(conn: Conn) -> None:
    await conn.send(http_response(200, orjson.dumps(message(output_tokens=-5))))


async def _cut_mid_stream(conn: Conn) -> None:
    await conn.send(SSE_HEAD)
    await conn.send_events([message_start(), BLOCK_START, text_delta("Hel")])
    conn.close()  # the chunked body never ends


async def _hold_after_start(conn: Conn) -> None:
    await conn.send(SSE_HEAD)
    await conn.send_events([message_start(), BLOCK_START, text_delta("Hel")])
    await conn.hold()


FAULTS: dict[str, Callable[[Conn], Awaitable[None]]] = {
    "string-usage": _stream(message_start(), BLOCK_START, text_delta("Hi"), BLOCK_STOP, _delta({"output_tokens": "3"})),
    "string-usage-at-start": _string_usage_at_start,
    "negative-usage": _stream(message_start(), BLOCK_START, BLOCK_STOP, _delta({"output_tokens": -3}), MESSAGE_STOP),
    "bad-id-stream": _stream(
        message_start(),
        BLOCK_START,
        BLOCK_STOP,
        _delta({"output_tokens": 3}),
        MESSAGE_STOP,
        head=SSE_HEAD.replace(b"req_fault", NON_LATIN_1_ID),
    ),
    "bad-id-reply": _bad_id_reply,
    "malformed-message": _malformed_message,
    "negative-usage-message": _negative_usage_message,
    "malformed-event": _stream(message_start(), b"event: content_block_delta\ndata: {nope\n\n"),
    "cut": _cut_mid_stream,
    "hold": _hold_after_start,
}


async def by_user_text(conn: Conn) -> None:
    assert conn.request is not None
    fault = FAULTS.get(last_user_text(conn.request.json()))
    await (fault or reply_ok)(conn)


class Bookkeeping:
    """Counts the gateway's admissions and settlements per admission, by wrapping its key service."""

    def __init__(self, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.admitted: list[object] = []
        self.settled: Counter[int] = Counter()
        keys = gateway.keys
        admit, settle_usage = keys.admit, keys.settle_usage

        async def counted_admit(*args: Any, **kwargs: Any) -> Any:
            admission = await admit(*args, **kwargs)
            self.admitted.append(admission)
            return admission

        async def counted_settle(admission: Any, **kwargs: Any) -> None:
            self.settled[id(admission)] += 1
            await settle_usage(admission, **kwargs)

        monkeypatch.setattr(keys, "admit", counted_admit)
        monkeypatch.setattr(keys, "settle_usage", counted_settle)

    def each_settled_once(self) -> bool:
        return all(self.settled[id(a)] == 1 for a in self.admitted) and sum(self.settled.values()) == len(self.admitted)


@pytest.fixture
async def gateway(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Gateway, Bookkeeping]]:
    async with RawUpstream(by_user_text) as upstream:
        upstream_settings = {"max_in_flight": MAX_IN_FLIGHT, "first_byte_timeout": 5.0, "max_attempts": 1}
        async with serve_gateway(upstream.url, upstream=upstream_settings) as served:
            app: Any = served.server.config.app
            gateway: Gateway = app.state.gateway
            yield served.url, gateway, Bookkeeping(gateway, monkeypatch)
            upstream.drop_connections()


def _chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}


def _native(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}], **fields}


async def _all_released(url: str, gateway: Gateway, books: Bookkeeping) -> None:
    await eventually_async(lambda: gateway.upstream.in_flight == 0, what="every in-flight slot released")
    await eventually_async(books.each_settled_once, what="every admission settled exactly once")
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
        # More healthy requests than the bound, at once: none may be refused for capacity.
        replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=_chat("ok")) for _ in range(4)))
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        streamed = await client.post("/v1/chat/completions", json=_chat("ok", stream=True))
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    await eventually_async(lambda: gateway.upstream.in_flight == 0, what="healthy requests released theirs")


@pytest.mark.parametrize(
    ("path", "body", "statuses"),
    [
        ("/v1/chat/completions", _chat("string-usage", stream=True), {200}),
        ("/v1/chat/completions", _chat("string-usage", stream=True, stream_options={"include_usage": True}), {200}),
        ("/v1/chat/completions", _chat("string-usage-at-start", stream=True), {200}),
        ("/v1/chat/completions", _chat("negative-usage", stream=True), {200}),
        ("/v1/chat/completions", _chat("string-usage", stream=True, n=2), {200}),
        ("/v1/chat/completions", _chat("bad-id-stream", stream=True), {200}),
        ("/v1/chat/completions", _chat("bad-id-reply"), {200}),
        ("/v1/chat/completions", _chat("malformed-message"), {502}),
        ("/v1/chat/completions", _chat("negative-usage-message"), {502}),
        ("/v1/chat/completions", _chat("malformed-event", stream=True), {200}),
        ("/v1/chat/completions", _chat("cut", stream=True), {200}),
        ("/v1/messages", _native("string-usage", stream=True), {200}),
        ("/v1/messages", _native("bad-id-stream", stream=True), {200}),
        ("/v1/messages", _native("negative-usage-message"), {200}),
        ("/v1/messages", _native("cut", stream=True), {200}),
    ],
    ids=[
        "chat-stream-string-usage",
        "chat-stream-string-usage-with-usage-chunk",
        "chat-stream-string-usage-at-start",
        "chat-stream-negative-usage",
        "chat-n2-stream-string-usage",
        "chat-stream-non-latin-1-request-id",
        "chat-reply-non-latin-1-request-id",
        "chat-malformed-message",
        "chat-negative-usage-message",
        "chat-stream-malformed-event",
        "chat-stream-cut",
        "native-stream-string-usage",
        "native-stream-non-latin-1-request-id",
        "native-negative-usage-message",
        "native-stream-cut",
    ],
)
async def test_bad_upstream_replies_beyond_max_in_flight_release_their_slots_and_settle_once(
    gateway: tuple[str, Gateway, Bookkeeping], path: str, body: dict[str, Any], statuses: set[int]
) -> None:
    url, state, books = gateway
    # The non-latin-1 request-id was a 500 that kept its slot; now the upstream module passes on
    # only sane ids, so its stream is sound, and like every fault here it gives back what it took.
    faulty_stream = (
        body.get("stream") and path == "/v1/chat/completions" and body["messages"][0]["content"] != "bad-id-stream"
    )
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
        for _ in range(ROUNDS):
            response = await client.post(path, json=body)
            assert response.status_code in statuses, response.text
            if faulty_stream:
                assert b'"error"' in response.content, "a faulty stream must end with an error event"
                assert not response.text.endswith("data: [DONE]\n\n")
    await _all_released(url, state, books)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", _chat("hold", stream=True)),
        ("/v1/chat/completions", _chat("hold", stream=True, n=2)),
        ("/v1/messages", _native("hold", stream=True)),
    ],
    ids=["chat", "chat-n2", "native"],
)
async def test_clients_that_leave_mid_stream_beyond_max_in_flight_release_their_slots_and_settle_once(
    gateway: tuple[str, Gateway, Bookkeeping], path: str, body: dict[str, Any]
) -> None:
    url, state, books = gateway
    host, _, port = url.removeprefix("http://").partition(":")
    for _ in range(ROUNDS):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(chat_request(body, path=path))
        await reader.readuntil(b"Hel")  # the stream has started: the gateway holds the upstream open
        writer.close()
        await writer.wait_closed()
    await _all_released(url, state, books)


async def test_a_client_that_leaves_while_the_stream_opens_releases_every_choice(
    gateway: tuple[str, Gateway, Bookkeeping], monkeypatch: pytest.MonkeyPatch
) -> None:
    # n = 2 where one choice opens at once and the other never answers: the client leaving cancels
    # the opening, and the stream that did open must still be closed.
    url, state, books = gateway
    host, _, port = url.removeprefix("http://").partition(":")
    answered = Counter[str]()
    opened = Counter[str]()

    async def one_opens_one_hangs(conn: Conn) -> None:
        answered["n"] += 1
        if answered["n"] % 2:
            await FAULTS["hold"](conn)
        else:
            await conn.hold()  # no status line at all

    open_stream = state.upstream.open_stream

    async def counted_open_stream(*args: Any, **kwargs: Any) -> Any:
        result = await open_stream(*args, **kwargs)
        opened["n"] += 1
        return result

    monkeypatch.setattr(state.upstream, "open_stream", counted_open_stream)
    monkeypatch.setitem(FAULTS, "half-open", one_opens_one_hangs)
    for round_ in range(1, ROUNDS + 1):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(chat_request(_chat("half-open", stream=True, n=2)))
        await eventually_async(lambda: opened["n"] == round_, what="one choice opened")  # noqa: B023
        writer.close()
        await writer.wait_closed()
        await eventually_async(lambda: state.upstream.in_flight == 0, what="both choices released")
    await _all_released(url, state, books)


async def test_healthy_requests_still_settle_once(gateway: tuple[str, Gateway, Bookkeeping]) -> None:
    url, state, books = gateway
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(chat_request(_chat("ok")))
    assert (await read_response(reader)).status == 200
    writer.close()
    await _all_released(url, state, books)
    assert len(books.admitted) == 6
