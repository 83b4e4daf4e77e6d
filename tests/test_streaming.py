"""Streaming through the real server: immediacy, failures mid-stream, and client disconnects.

The gateway runs in this process on a real uvicorn server (so disconnects are real TCP closes),
in front of small scripted upstreams served in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from proxy.simulator.transport import InProcessTransport
from proxy.streaming import EventStreamResponse
from tests.faults import serve_gateway

pytestmark = pytest.mark.anyio

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CHAT = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


MESSAGE_START = event(
    "message_start",
    {
        "message": {
            "id": "msg_01Stream",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        }
    },
)
BLOCK_START = event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})


def text_delta(text: str) -> bytes:
    return event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})


ENDING = [
    event("content_block_stop", {"index": 0}),
    event(
        "message_delta",
        {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 3}},
    ),
    event("message_stop", {}),
]


class ScriptedUpstream:
    """An ASGI Messages API that sends the given chunks with a delay, and records how it ended."""

    def __init__(self, chunks: list[bytes], delay: float = 0.0, hang_after: bool = False) -> None:
        self.chunks = chunks
        self.delay = delay
        self.hang_after = hang_after
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        self.started.set()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(self.delay)
            if self.hang_after:
                await asyncio.sleep(3600)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.finished.set()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@contextlib.asynccontextmanager
async def serve(fake: ASGIApp, **settings: Any) -> AsyncIterator[str]:
    async with serve_gateway(
        "http://upstream", transport=InProcessTransport(fake), anthropic_api_key="k", api_keys=[], **settings
    ) as gateway:
        yield gateway.url


def data_lines(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


async def test_first_chunk_arrives_while_upstream_is_still_sending() -> None:
    deltas = [text_delta(f"word{i} ") for i in range(10)]
    upstream = ScriptedUpstream([MESSAGE_START, BLOCK_START, *deltas, *ENDING], delay=0.1)
    async with serve(upstream) as url, httpx.AsyncClient() as client:
        started = time.perf_counter()
        async with client.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first_content_at = None
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"content":"word0' in line:
                    first_content_at = time.perf_counter() - started
                    break
            assert first_content_at is not None
            # The upstream needs ~1.5 s to send everything; the first word must not wait for it.
            assert first_content_at < 0.6
            assert not upstream.finished.is_set()


async def test_client_disconnect_closes_the_upstream_call() -> None:
    upstream = ScriptedUpstream([MESSAGE_START, BLOCK_START, text_delta("Hello")], hang_after=True)
    async with serve(upstream) as url, httpx.AsyncClient() as client:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as response:
            async for line in response.aiter_lines():
                if "Hello" in line:
                    break
        await asyncio.wait_for(upstream.cancelled.wait(), timeout=5)


async def test_mid_stream_upstream_error_reaches_the_client_as_an_error() -> None:
    error = event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    upstream = ScriptedUpstream([MESSAGE_START, BLOCK_START, text_delta("Hel"), error])
    async with serve(upstream) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/chat/completions", json=CHAT)
    payloads = data_lines(response.content)
    parsed = [orjson.loads(p) for p in payloads if p != b"[DONE]"]
    assert any("error" in p for p in parsed)
    assert not any(c.get("finish_reason") == "stop" for p in parsed for c in p.get("choices", []))


async def test_upstream_that_drops_the_stream_is_not_a_clean_stop() -> None:
    upstream = ScriptedUpstream([MESSAGE_START, BLOCK_START, text_delta("Hel")])
    async with serve(upstream) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/chat/completions", json=CHAT)
    parsed = [orjson.loads(p) for p in data_lines(response.content) if p != b"[DONE]"]
    assert any("error" in p for p in parsed)
    assert not any(c.get("finish_reason") == "stop" for p in parsed for c in p.get("choices", []))


async def test_stalled_upstream_stream_times_out_with_an_error_event() -> None:
    upstream = ScriptedUpstream([MESSAGE_START, BLOCK_START, text_delta("Hel")], hang_after=True)
    async with serve(upstream, upstream={"idle_timeout": 0.3}) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/chat/completions", json=CHAT, timeout=5)
    parsed = [orjson.loads(p) for p in data_lines(response.content) if p != b"[DONE]"]
    assert any("error" in p for p in parsed)
    await asyncio.wait_for(upstream.cancelled.wait(), timeout=5)


async def test_ping_becomes_an_sse_comment() -> None:
    upstream = ScriptedUpstream([MESSAGE_START, event("ping", {}), BLOCK_START, text_delta("Hi"), *ENDING])
    async with serve(upstream) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/chat/completions", json=CHAT)
    assert b"\n: ping" in response.content or response.content.startswith(b": ping")
    assert response.content.rstrip().endswith(b"data: [DONE]")


# --- the streamed response itself (proxy/streaming.py), at the ASGI level ------------------------


class Wire:
    """An ASGI server's side of one response: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


async def test_the_streamed_response_sends_every_chunk_then_ends() -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            yield part

    wire = Wire()
    await EventStreamResponse(body(), media_type="text/event-stream")(SCOPE, wire.receive, wire.send)
    assert wire.sent[0]["type"] == "http.response.start"
    assert [m.get("body") for m in wire.sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert wire.sent[-1]["more_body"] is False


async def test_a_client_that_leaves_cancels_the_body_where_it_waits_and_its_cleanup_runs() -> None:
    cleaned = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await asyncio.Event().wait()  # an upstream that sends nothing more
            yield b"never"
        finally:
            cleaned.set()

    wire = Wire()
    answer = asyncio.ensure_future(EventStreamResponse(body())(SCOPE, wire.receive, wire.send))
    await asyncio.sleep(0.01)
    wire.gone.set()
    await asyncio.wait_for(answer, 1)
    assert cleaned.is_set()
    assert [m.get("body") for m in wire.sent[1:]] == [b"data: first\n\n"]  # no end: nobody is listening


async def test_an_error_in_the_body_is_raised_and_a_cancelled_response_stays_cancelled() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError, match="upstream broke"):
        await EventStreamResponse(failing())(SCOPE, Wire().receive, Wire().send)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.001)
            yield b"data: tick\n\n"

    answer = asyncio.ensure_future(EventStreamResponse(endless())(SCOPE, Wire().receive, Wire().send))
    await asyncio.sleep(0.01)
    answer.cancel()  # the server shutting down: the cancellation must not be swallowed
    with pytest.raises(asyncio.CancelledError):
        await answer


async def test_the_adopted_owner_is_released_when_the_body_never_starts() -> None:
    # A response whose first send fails (the connection is already gone): the body generator never
    # runs, so only the response itself can give back what the request took.
    released: list[str] = []
    body_started = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal body_started
        body_started = True
        yield b"data: 1\n\n"

    async def broken_send(message: dict[str, Any]) -> None:
        raise OSError("connection reset")

    owner = contextlib.AsyncExitStack()
    owner.callback(released.append, "settled")
    owner.callback(released.append, "upstream closed")
    response = EventStreamResponse(body())
    response.adopt(owner)
    with pytest.raises(OSError, match="connection reset"):
        await response(SCOPE, Wire().receive, broken_send)
    assert not body_started
    assert released == ["upstream closed", "settled"]


async def test_the_adopted_owner_is_released_once_when_the_client_leaves_at_a_yield() -> None:
    released: list[str] = []
    sending = asyncio.Event()
    wire = Wire()

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    async def slow_send(message: dict[str, Any]) -> None:
        if message.get("body") == b"data: 1\n\n":
            sending.set()
            await asyncio.Event().wait()  # a client that stopped reading: the body waits at its yield
        wire.sent.append(message)

    owner = contextlib.AsyncExitStack()
    owner.callback(released.append, "released")
    response = EventStreamResponse(body())
    response.adopt(owner)
    answer = asyncio.ensure_future(response(SCOPE, wire.receive, slow_send))
    await sending.wait()
    wire.gone.set()
    await asyncio.wait_for(answer, 5)
    assert released == ["released"]
