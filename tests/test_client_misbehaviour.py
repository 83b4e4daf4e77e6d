"""Clients that go away, read slowly, pipeline, or send absurd headers.

The gateway runs in this process on a real uvicorn server, configured as `proxy.server` configures
it; clients are raw sockets where an HTTP library would hide the misbehaviour. Upstreams are `RawUpstream`
(real TCP, so "the upstream saw the call end" means its connection was closed by the gateway) or
the in-process `EchoUpstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.server import uvicorn_config as server_config
from proxy.simulator.transport import InProcessTransport
from tests.faults import (
    BLOCK_START,
    CHAT,
    CLIENT_KEY,
    LAST_CHUNK,
    MODEL,
    SSE_HEAD,
    Conn,
    EchoUpstream,
    RawUpstream,
    Resources,
    Served,
    assert_openai_error_body,
    chat_request,
    gateway_settings,
    http_response,
    message,
    message_start,
    metric,
    read_response,
    reply_ok,
    rss_bytes,
    serve_gateway,
    settled,
    stream_events,
    streamed_text,
    text_delta,
)

pytestmark = pytest.mark.anyio

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def access_lines(caplog: pytest.LogCaptureFixture, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    return [
        r.fields for r in caplog.records if r.name == "proxy.access" and getattr(r, "fields", {}).get("path") == path
    ]


async def wait_for(predicate: Any, within: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


async def metrics_text(gateway: Served) -> str:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        return (await client.get("/metrics")).text


def tokens(text: str, kind: str) -> float:
    return metric(text, "claude_proxy_tokens_total", key="key-1", kind=kind, model=MODEL)


async def warm_up(gateway: Served) -> Resources:
    """One healthy request each way, so lazily created pools exist before the baseline is taken."""
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as client:
        for stream in (False, True):
            assert (await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})).status_code == 200
    return Resources.now()


async def assert_nothing_leaked(baseline: Resources) -> None:
    after = await settled(baseline)
    assert after.tasks <= baseline.tasks, f"asyncio tasks leaked: {baseline} -> {after}"
    assert after.fds <= baseline.fds + 2, f"file descriptors leaked: {baseline} -> {after}"


@contextlib.asynccontextmanager
async def raw_client(gateway: Served, *, rcvbuf: int | None = None) -> AsyncIterator[tuple[Any, Any]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, gateway.address)
    reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf or 2**16)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


# --- disconnects -------------------------------------------------------------------------------


async def test_disconnect_while_sending_the_body_never_reaches_the_upstream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with RawUpstream() as upstream, serve_gateway(upstream.url) as gateway:
        baseline = await warm_up(gateway)
        seen = len(upstream.seen)
        whole = chat_request(CHAT, headers={"content-length": "5000"})
        async with raw_client(gateway) as (_, writer):
            writer.write(whole[: whole.index(b"\r\n\r\n") + 4 + 20])
            await writer.drain()
            await asyncio.sleep(0.05)
        assert await wait_for(lambda: len(access_lines(caplog)) == 3)
        await assert_nothing_leaked(baseline)
    assert len(upstream.seen) == seen
    line = access_lines(caplog)[-1]
    assert line["status"] < 500 and line["error"] == "invalid_request_error"
    assert errors_logged(caplog) == []


async def never_answer(conn: Conn) -> None:
    await conn.hold()


async def test_disconnect_while_waiting_for_a_non_streaming_answer_cancels_the_upstream_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # One attempt with a 3 s first-byte timeout: the call must end within 1 s of the client leaving.
    settings = {"first_byte_timeout": 3.0, "max_attempts": 1}
    async with RawUpstream(never_answer) as upstream, serve_gateway(upstream.url, upstream=settings) as gateway:
        for stream in (False, True):  # a stream still waiting for its first byte is no different
            async with raw_client(gateway) as (_, writer):
                writer.write(chat_request({**CHAT, "stream": stream}))
                await writer.drain()
                seen, closed = len(upstream.seen) + 1, upstream.closed_by_peer + 1
                assert await wait_for(lambda: len(upstream.seen) == seen)  # noqa: B023 - awaited right here
            left = await wait_for(lambda: upstream.closed_by_peer == closed, within=1.0)  # noqa: B023
            assert left, "the upstream call outlived its client"
        assert await wait_for(lambda: len(access_lines(caplog)) == 2)
    for line in access_lines(caplog):
        assert (line["status"], line["error"]) == (499, "client_disconnected")
    assert errors_logged(caplog) == []


NATIVE = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", NATIVE),
        ("/v1/messages", {**NATIVE, "stream": True}),
        ("/v1/messages/count_tokens", {"model": MODEL, "messages": NATIVE["messages"]}),
    ],
    ids=["messages", "messages-stream", "count_tokens"],
)
async def test_disconnect_while_waiting_for_a_native_answer_cancels_the_upstream_call(
    path: str, body: dict[str, Any]
) -> None:
    settings = {"first_byte_timeout": 3.0, "max_attempts": 1}
    async with RawUpstream(never_answer) as upstream, serve_gateway(upstream.url, upstream=settings) as gateway:
        async with raw_client(gateway) as (_, writer):
            writer.write(chat_request(body, path=path))
            await writer.drain()
            assert await wait_for(lambda: len(upstream.seen) == 1)
        left = await wait_for(lambda: upstream.closed_by_peer == 1, within=1.0)
        upstream.drop_connections()
        assert left, "the upstream call outlived its client"


async def hello_then_hang(conn: Conn) -> None:
    await conn.send(SSE_HEAD)
    await conn.send_events([message_start(input_tokens=123, output_tokens=2), BLOCK_START, text_delta("Hello")])
    await conn.hold()


@pytest.mark.parametrize("n", [1, 3], ids=["one choice", "n=3"])
async def test_disconnect_mid_stream_cancels_the_upstream_calls_and_records_usage(
    caplog: pytest.LogCaptureFixture, n: int
) -> None:
    caplog.set_level(logging.INFO)
    async with RawUpstream() as upstream, serve_gateway(upstream.url) as gateway:
        baseline = await warm_up(gateway)
        before = await metrics_text(gateway)
        upstream.scenario = hello_then_hang
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as client:
            request = {**CHAT, "stream": True, "n": n}
            async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                async for line in response.aiter_lines():
                    if "Hello" in line:
                        break
        assert await wait_for(lambda: upstream.closed_by_peer == n), "an upstream stream outlived its client"
        assert await wait_for(lambda: len(access_lines(caplog)) == 3)
        after = await metrics_text(gateway)
        await assert_nothing_leaked(baseline)
    line = access_lines(caplog)[-1]
    assert (line["status"], line["stream"]) == (200, True)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (123 * n, 2 * n)  # every choice's usage so far
    assert tokens(after, "input") - tokens(before, "input") == 123 * n
    assert tokens(after, "output") - tokens(before, "output") == 2 * n
    assert metric(after, "claude_proxy_streams_open") == 0
    assert errors_logged(caplog) == []


BIG = "z" * (8 * 1024 * 1024)


async def big_answer(conn: Conn) -> None:
    assert conn.request is not None
    if conn.request.json().get("stream"):
        await conn.send(SSE_HEAD)
        await conn.send_events(stream_events([BIG[i : i + 4096] for i in range(0, len(BIG), 4096)], input_tokens=77))
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, orjson.dumps(message(BIG, input_tokens=77))))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_disconnect_after_the_upstream_answered_is_recorded_without_errors(
    caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    caplog.set_level(logging.INFO)
    async with RawUpstream() as upstream, serve_gateway(upstream.url) as gateway:
        baseline = await warm_up(gateway)
        upstream.scenario = big_answer
        async with raw_client(gateway) as (reader, writer):
            writer.write(chat_request({**CHAT, "stream": stream}))
            await writer.drain()
            assert (await reader.readexactly(12)) == b"HTTP/1.1 200"
        # The client left with megabytes unread: the gateway's writes fail, quietly.
        assert await wait_for(lambda: len(access_lines(caplog)) == 3)
        await assert_nothing_leaked(baseline)
    line = access_lines(caplog)[-1]
    assert line["status"] == 200 and line["prompt_tokens"] == 77
    assert errors_logged(caplog) == []


# --- a slow reader -----------------------------------------------------------------------------

EVENT_TEXT = "s" * 16384
STREAM_CAP = 256 * 1024 * 1024  # what the upstream would send if nothing slowed it down


async def endless_stream(conn: Conn) -> None:
    await conn.send(SSE_HEAD)
    await conn.send_events([message_start(), BLOCK_START])
    event = text_delta(EVENT_TEXT)
    while conn.upstream.bytes_sent < STREAM_CAP:
        await conn.send_events([event])
    await conn.hold()


async def test_slow_reader_throttles_the_upstream_instead_of_buffering_the_stream() -> None:
    async with RawUpstream(endless_stream) as upstream, serve_gateway(upstream.url) as gateway:
        rss_before = rss_bytes()
        async with raw_client(gateway, rcvbuf=64 * 1024) as (reader, writer):
            writer.write(chat_request({**CHAT, "stream": True}))
            await writer.drain()
            assert b"200" in await reader.readuntil(b"\r\n")
            await reader.readexactly(256 * 1024)  # the stream is flowing
            # Now the client stops reading. The upstream may fill the socket buffers on the way, then stalls.
            await asyncio.sleep(0.5)
            stalled_at = upstream.bytes_sent
            await asyncio.sleep(0.5)
            sent_while_paused = upstream.bytes_sent - stalled_at
            rss_paused = rss_bytes()
            # And the stream resumes where it stopped once the client reads again.
            resumed = await reader.readexactly(1024 * 1024)
            assert b"s" * 16384 in resumed
        assert await wait_for(lambda: upstream.closed_by_peer == 1), "the upstream stream outlived its client"
    assert stalled_at < 48 * 1024 * 1024, f"{stalled_at} bytes sent to a client that read 256 KiB"
    assert sent_while_paused <= 256 * 1024, f"the upstream kept sending ({sent_while_paused} bytes) while paused"
    assert rss_paused - rss_before < 96 * 1024 * 1024


# --- pipelining --------------------------------------------------------------------------------


async def test_pipelined_requests_on_one_connection_are_answered_in_order() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo)) as gateway:
        first = {**CHAT, "messages": [{"role": "user", "content": "first"}]}
        second = {**CHAT, "messages": [{"role": "user", "content": "second"}], "stream": True}
        third = {**CHAT, "messages": [{"role": "user", "content": "third"}]}
        async with raw_client(gateway) as (reader, writer):
            writer.write(
                chat_request(first, headers={"x-request-id": "one"})
                + chat_request(second, headers={"x-request-id": "two"})
                + chat_request(third, headers={"x-request-id": "three"})
            )
            await writer.drain()
            answers = [await asyncio.wait_for(read_response(reader), 5) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.headers["x-request-id"] for a in answers] == ["one", "two", "three"]
    assert orjson.loads(answers[0].body)["choices"][0]["message"]["content"] == "first"
    assert streamed_text(answers[1].body) == "second" and answers[1].body.endswith(b"data: [DONE]\n\n")
    assert orjson.loads(answers[2].body)["choices"][0]["message"]["content"] == "third"
    assert echo.problems == []


async def test_a_slow_stream_pipelined_before_a_quick_request_keeps_the_order() -> None:
    echo = EchoUpstream(event_delay=0.05)
    async with serve_gateway(transport=InProcessTransport(echo)) as gateway:
        slow = {**CHAT, "messages": [{"role": "user", "content": "slow stream"}], "stream": True}
        quick = {**CHAT, "messages": [{"role": "user", "content": "quick"}]}
        async with raw_client(gateway) as (reader, writer):
            writer.write(chat_request(slow, headers={"x-request-id": "slow"}))
            writer.write(chat_request(quick, headers={"x-request-id": "quick"}))
            await writer.drain()
            stream = await asyncio.wait_for(read_response(reader), 5)
            answer = await asyncio.wait_for(read_response(reader), 5)
    assert (stream.headers["x-request-id"], answer.headers["x-request-id"]) == ("slow", "quick")
    assert stream.body.endswith(b"data: [DONE]\n\n")
    assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "quick"


# --- oversized headers -------------------------------------------------------------------------


async def send_and_read(gateway: Served, request: bytes) -> bytes:
    """Whatever comes back before the gateway closes the connection or 2 s pass."""
    async with raw_client(gateway) as (reader, writer):
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()
        received = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(2):
                while chunk := await reader.read(65536):
                    received += chunk
                    if b"\r\n\r\n" in received:
                        break
        return received


OVERSIZED = {
    "one 1 MiB header": {"x-padding": "a" * (1024 * 1024)},
    "20000 headers": {f"x-h{i}": "v" for i in range(20000)},
    "64 KiB authorization": {"authorization": "Bearer " + "k" * 65536},
}


@pytest.mark.parametrize("headers", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_oversized_headers_never_cause_a_500(headers: dict[str, str]) -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo)) as gateway:
        received = await send_and_read(gateway, chat_request(CHAT, headers={**headers, "connection": "close"}))
    if received:
        assert received.startswith(b"HTTP/1.1 ") and not received.startswith(b"HTTP/1.1 5"), received[:200]
    assert echo.problems == []


async def test_oversized_headers_are_refused_with_431_before_any_handler_runs() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo)) as gateway:
        for headers in OVERSIZED.values():
            async with raw_client(gateway) as (reader, writer):
                writer.write(chat_request(CHAT, headers=headers))
                response = await asyncio.wait_for(read_response(reader), 5)
            assert response.status == 431
            assert (
                "larger than this gateway accepts" in assert_openai_error_body(orjson.loads(response.body))["message"]
            )
    assert echo.requests == 0


async def test_a_request_head_that_never_ends_is_cut_off_near_the_limit() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo)) as gateway:
        reader, writer = await asyncio.open_connection(*gateway.address)
        answer = asyncio.ensure_future(reader.read(65536))  # a 431, or the end of the connection
        sent = 0
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nx-padding: ")
            while sent < 16 * 1024 * 1024 and not answer.done():  # 256 times max_header_bytes, never ending the line
                writer.write(b"a" * 65536)
                sent += 65536
                await asyncio.wait_for(writer.drain(), 2)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            await asyncio.sleep(0.05)
            refused = answer.done()
            answer.cancel()
            writer.close()
    assert refused, f"{sent} bytes of one header line were accepted and nothing came back"


async def test_the_gateway_still_serves_after_every_misbehaviour_above() -> None:
    async with RawUpstream(reply_ok) as upstream, serve_gateway(upstream.url) as gateway:
        async with raw_client(gateway) as (_, writer):
            writer.write(chat_request(CHAT, headers={"content-length": "999"})[:-5])
        await send_and_read(gateway, chat_request(CHAT, headers=OVERSIZED["20000 headers"]))
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=5) as client:
            response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200


# --- slow clients ------------------------------------------------------------------------------

SLOW = {"request_head_timeout": 0.5, "request_body_timeout": 0.5}


async def trickle(
    gateway: Served, start: bytes, drip: bytes = b"a", *, every: float = 0.05, within: float = 5.0
) -> bytes | None:
    """Sends `start`, then `drip` every `every` seconds while nothing comes back. Returns all that
    came back once the gateway closed the connection, or None if it was still open after `within`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    reader, writer = await asyncio.open_connection(*gateway.address)
    received = b""
    try:
        writer.write(start)
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), every)
            except TimeoutError:
                with contextlib.suppress(ConnectionError):
                    writer.write(drip)
                    await writer.drain()
                continue
            except ConnectionError:
                return received
            if not data:
                return received
            received += data
        return None
    finally:
        writer.close()


def head_of(raw: bytes) -> bytes:
    return raw[: raw.index(b"\r\n\r\n") + 4]


async def test_request_heads_trickled_a_byte_at_a_time_are_answered_408_and_closed() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo), **SLOW) as gateway:
        start = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nx-padding: "
        answers = await asyncio.gather(*(trickle(gateway, start) for _ in range(20)))
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=5) as client:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert None not in answers, "a trickled head held its connection open"
    for answer in answers:
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 ")
        error = assert_openai_error_body(orjson.loads(answer[answer.index(b"\r\n\r\n") + 4 :]))
        assert error["code"] == "request_timeout"
    assert echo.requests == 1


async def test_a_connection_that_never_sends_a_request_is_closed() -> None:
    async with serve_gateway(transport=InProcessTransport(EchoUpstream()), **SLOW) as gateway:
        reader, writer = await asyncio.open_connection(*gateway.address)
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"], ids=["openai", "native"])
async def test_a_request_body_trickled_a_byte_at_a_time_gets_a_408_and_the_connection_closed(
    caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo), **SLOW) as gateway:
        whole = chat_request(CHAT if path.endswith("completions") else NATIVE, path=path)
        start = head_of(whole).replace(b"content-length: ", b"content-length: 9") + b'{"model": '
        answer = await trickle(gateway, start, b" ")  # JSON whitespace, forever
        assert await wait_for(lambda: len(access_lines(caplog, path)) == 1)
    assert answer is not None, "a trickled body held its connection open"
    assert answer.startswith(b"HTTP/1.1 408 ")
    body = orjson.loads(answer[answer.index(b"\r\n\r\n") + 4 :])
    if path == "/v1/messages":
        assert body["type"] == "error" and "not received within 0.5 seconds" in body["error"]["message"]
    else:
        error = assert_openai_error_body(body)
        assert error["code"] == "request_timeout" and "body" in error["message"]
    line = access_lines(caplog, path)[0]
    assert (line["status"], line["error"], line["client"]) == (408, "request_timeout", "127.0.0.1")
    assert echo.requests == 0
    assert errors_logged(caplog) == []


async def test_a_body_nobody_reads_cannot_hold_the_connection_after_the_answer() -> None:
    async with serve_gateway(transport=InProcessTransport(EchoUpstream()), **SLOW) as gateway:
        start = chat_request(b"", headers={"authorization": "Bearer sk-wrong", "content-length": "100000"})
        answer = await trickle(gateway, start, b" ")
    assert answer is not None, "a trickled body held its connection open after the 401"
    assert answer.startswith(b"HTTP/1.1 401 ") and answer.count(b"HTTP/1.1") == 1


async def test_answers_slower_than_the_timeouts_and_kept_alive_connections_are_not_cut() -> None:
    echo = EchoUpstream(event_delay=0.3)  # some eight events: two and a half seconds
    async with serve_gateway(transport=InProcessTransport(echo), **SLOW) as gateway:
        slow = {**CHAT, "messages": [{"role": "user", "content": "a slow stream"}], "stream": True}
        quick = chat_request({**CHAT, "messages": [{"role": "user", "content": "quick"}]})
        head = len(head_of(quick))
        async with raw_client(gateway) as (reader, writer):
            started = asyncio.get_running_loop().time()
            writer.write(chat_request(slow) + quick)  # pipelined behind a slow stream
            # Then a head, and later a body, each sent slower than its timeout while the stream goes on:
            # the client cannot be told anything meanwhile, and is not at fault.
            for part in (quick[:20], quick[20:head], quick[head : head + 5]):
                writer.write(part)
                await asyncio.sleep(0.6)
            writer.write(quick[head + 5 :])
            answers = [await asyncio.wait_for(read_response(reader), 10) for _ in range(3)]
            took = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.7)  # idle between requests is keep-alive's business, not the head's
            writer.write(quick)
            again = await asyncio.wait_for(read_response(reader), 5)
    assert took > 1.8, "the stream was meant to outlast the slow head and body"
    assert answers[0].body.endswith(b"data: [DONE]\n\n")
    assert [answer.status for answer in [*answers, again]] == [200] * 4


def test_the_protocol_factory_still_pickles_for_workers() -> None:
    factory = server_config(gateway_settings(request_head_timeout=7.0, request_body_timeout=9.0)).http
    copy = pickle.loads(pickle.dumps(factory))
    assert copy.keywords == {"max_head_bytes": 64 * 1024, "head_timeout": 7.0, "body_timeout": 9.0}
