"""The upstream fault matrix: what a client sees when Anthropic (or whatever sits in front of it)
misbehaves, streaming and not, and that nothing is left behind afterwards.

The gateway runs on a real uvicorn server in this process and talks real HTTP, through its
production connection pool (aiohttp), to `RawUpstream`: a loopback TCP server whose replies are
scripts of raw bytes, so resets, stalls and truncated chunked bodies are the real thing. Timeouts
are a fifth of a second and there are two attempts, so the whole matrix runs in seconds.

Every fault is sent several times in each mode; afterwards the number of asyncio tasks and of
open file descriptors must be back where it was after a warm-up round (see `Probe.run`). The
outcomes are tabulated in docs/faults.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.faults import (
    BLOCK_START,
    CHAT,
    CLIENT_KEY,
    FAST_UPSTREAM,
    LAST_CHUNK,
    SSE_HEAD,
    Conn,
    RawUpstream,
    Resources,
    Scenario,
    Served,
    assert_openai_error_body,
    chunk,
    error_body,
    http_response,
    message,
    message_start,
    metric,
    reply_ok,
    serve_gateway,
    settled,
    sse,
    stream_events,
    stream_payloads,
    streamed_text,
    text_delta,
)
from tests.servers import free_port

pytestmark = pytest.mark.anyio

ROUNDS = 3  # of each fault in each mode after the warm-up round; a per-request leak shows up 3 times over
FD_SLACK = 2
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


@dataclass
class Outcome:
    status: int
    content_type: str
    body: bytes
    attempts: int  # upstream attempts, from the gateway's own counter
    retry_reasons: dict[str, float]
    elapsed: float

    def error(self) -> dict[str, Any]:
        assert self.content_type.startswith("application/json"), self.content_type
        return assert_openai_error_body(orjson.loads(self.body))

    def payloads(self) -> list[dict[str, Any]]:
        assert self.content_type.startswith("text/event-stream"), (self.status, self.body[:500])
        return stream_payloads(self.body)

    def stream_error(self) -> dict[str, Any]:
        """The error a failed stream ends with, after checking it ends like a failed stream."""
        payloads = self.payloads()
        assert b"data: [DONE]" not in self.body, "a failed stream must not end with [DONE]"
        assert not any(c.get("finish_reason") for p in payloads for c in p.get("choices", [])), "no clean stop"
        assert "error" in payloads[-1], payloads[-1]
        return assert_openai_error_body(payloads[-1])

    def completed_stream(self) -> list[dict[str, Any]]:
        payloads = self.payloads()
        assert self.body.endswith(b"data: [DONE]\n\n"), self.body[-300:]
        assert not any("error" in p for p in payloads)
        return payloads


class Probe:
    def __init__(self, gateway: Served, upstream: RawUpstream) -> None:
        self.gateway = gateway
        self.upstream = upstream

    async def call(self, stream: bool, body: dict[str, Any] | None = None) -> Outcome:
        async with httpx.AsyncClient(base_url=self.gateway.url, headers=AUTH, timeout=10) as client:
            before = (await client.get("/metrics")).text
            started = time.perf_counter()
            request = {**(body or CHAT), "stream": stream}
            async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                raw = await response.aread()
            elapsed = time.perf_counter() - started
            after = (await client.get("/metrics")).text
        path = "/v1/messages"
        attempts = metric(after, "claude_proxy_upstream_attempts_total", path=path)
        attempts -= metric(before, "claude_proxy_upstream_attempts_total", path=path)
        reasons = {}
        for reason in ("connect", "timeout", "transport", "502", "529"):
            name = "claude_proxy_upstream_retries_total"
            delta = metric(after, name, reason=reason) - metric(before, name, reason=reason)
            if delta:
                reasons[reason] = delta
        content_type = response.headers.get("content-type", "")
        return Outcome(response.status_code, content_type, raw, int(attempts), reasons, elapsed)

    async def run(self, scenario: Scenario, *, healthy_warm_up: bool = True) -> tuple[Outcome, Outcome]:
        """Warm up (a healthy round, then one round of the fault), take the resource baseline, run
        `ROUNDS` more rounds of the fault in both modes, and check that every round answered the
        same and that no task, socket or descriptor outlived its request."""
        if healthy_warm_up:
            self.upstream.scenario = reply_ok
            for stream in (False, True):
                assert (await self.call(stream)).status == 200
        self.upstream.scenario = scenario
        first = (await self.call(False), await self.call(True))
        baseline = Resources.now()
        last = first
        for _ in range(ROUNDS):
            last = (await self.call(False), await self.call(True))
            for earlier, now in zip(first, last, strict=True):
                assert (now.status, now.attempts) == (earlier.status, earlier.attempts), (earlier, now)
        after = await settled(baseline, fd_slack=FD_SLACK)
        assert after.tasks <= baseline.tasks, f"asyncio tasks leaked: {baseline.tasks} -> {after.tasks}"
        assert after.fds <= baseline.fds + FD_SLACK, f"file descriptors leaked: {baseline.fds} -> {after.fds}"
        return last


@contextlib.asynccontextmanager
async def fault_gateway(upstream_url: str | None = None, **upstream: Any) -> AsyncIterator[Probe]:
    async with (
        RawUpstream() as raw,
        serve_gateway(upstream_url or raw.url, upstream={**FAST_UPSTREAM, **upstream}) as gw,
    ):
        yield Probe(gw, raw)
    # After shutdown nothing may linger either: the upstream's connections are all closed.
    assert raw.open_connections == 0


def is_stream(conn: Conn) -> bool:
    assert conn.request is not None
    return bool(conn.request.json().get("stream"))


HEL = [message_start(), BLOCK_START, text_delta("Hel")]
PARTIAL_MESSAGE = http_response(200, orjson.dumps(message()))[:-20]  # content-length promises 20 bytes more
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>cloud-lb</center>\r\n</body>\r\n</html>\r\n"
)


# --- connection-level faults ------------------------------------------------------------------


# production's pool, the one tests inject, and the optional httpx2
POOLS = pytest.mark.parametrize("pool", ["aiohttp", "httpx", "httpx2"])


@POOLS
async def test_connection_refused_is_a_fast_retried_503_and_leaks_nothing(pool: str) -> None:
    port = free_port()
    async with fault_gateway(f"http://127.0.0.1:{port}", transport=pool) as probe:
        plain, streamed = await probe.run(reply_ok, healthy_warm_up=False)
    for outcome in (plain, streamed):
        assert outcome.status == 503
        error = outcome.error()
        assert error["type"] == "server_error"
        # What failed, but not where: the upstream's address stays in the gateway's log.
        assert error["message"].startswith("cannot connect to the upstream API: ")
        assert "127.0.0.1" not in error["message"] and str(port) not in error["message"]
        assert outcome.attempts == 2 and outcome.retry_reasons == {"connect": 1}
        assert outcome.elapsed < 1.0


async def reset_before_headers(conn: Conn) -> None:
    conn.reset()


@POOLS
async def test_reset_before_headers_is_retried_then_502_and_leaks_nothing(pool: str) -> None:
    async with fault_gateway(transport=pool) as probe:
        plain, streamed = await probe.run(reset_before_headers)
    for outcome in (plain, streamed):
        assert outcome.status == 502
        error = outcome.error()
        assert error["type"] == "server_error"
        assert error["message"] in (
            "upstream transport error: Connection reset by peer",
            "the upstream API broke the connection: Server disconnected",  # when the RST races the request
        ), error["message"]
        assert outcome.attempts == 2 and outcome.retry_reasons == {"transport": 1}


async def reset_mid_body(conn: Conn) -> None:
    if is_stream(conn):
        await conn.send(SSE_HEAD)
        await conn.send_events(HEL)
    else:
        await conn.send(PARTIAL_MESSAGE)
    await asyncio.sleep(0.02)  # let the bytes land before the RST overtakes them
    conn.reset()


async def test_reset_mid_body_is_a_retried_502_or_an_error_event_after_the_text_so_far() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(reset_mid_body)
    # Nothing has reached the client yet: the body read is retried, then 502.
    assert plain.status == 502 and plain.attempts == 2
    assert plain.error()["type"] == "server_error"
    assert "not completed" in plain.error()["message"]
    # Text has reached the client: no retry, the stream ends with an error event instead of [DONE].
    assert streamed.status == 200 and streamed.attempts == 1
    assert streamed_text(streamed.body) == "Hel"
    error = streamed.stream_error()
    assert error["type"] == "server_error" and "not completed" in error["message"]


# --- timing faults -----------------------------------------------------------------------------


async def never_answer(conn: Conn) -> None:
    await conn.hold()


async def test_slow_headers_past_the_timeout_are_504_and_the_upstream_connection_is_closed() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(never_answer)
        closed = probe.upstream.closed_by_peer
        sent = len(probe.upstream.seen)
    for outcome in (plain, streamed):
        assert outcome.status == 504
        assert outcome.error() == {
            "message": "the upstream API timed out",
            "type": "timeout_error",
            "param": None,
            "code": None,
        }
        assert outcome.attempts == 2 and outcome.retry_reasons == {"timeout": 1}
        assert outcome.elapsed < 1.5  # two first-byte timeouts of 0.2 s and a short backoff
    assert closed == sent - 2  # every hung attempt's connection closed by the gateway (warm-up excepted)


async def stall_after_some_events(conn: Conn) -> None:
    if is_stream(conn):
        await conn.send(SSE_HEAD)
        await conn.send_events(HEL)
    else:
        await conn.send(PARTIAL_MESSAGE)
    await conn.hold()


async def test_stall_between_events_is_504_or_a_timeout_event_and_the_connection_is_closed() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(stall_after_some_events)
        closed = probe.upstream.closed_by_peer
        sent = len(probe.upstream.seen)
    assert plain.status == 504 and plain.attempts == 2
    assert plain.error()["type"] == "timeout_error"
    assert streamed.status == 200 and streamed.attempts == 1
    assert streamed_text(streamed.body) == "Hel"
    assert streamed.stream_error() == {
        "message": "the upstream API timed out",
        "type": "timeout_error",
        "param": None,
        "code": None,
    }
    assert streamed.elapsed < 1.0  # one idle timeout
    assert closed == sent - 2


# --- malformed bodies --------------------------------------------------------------------------


async def truncated(conn: Conn) -> None:
    if is_stream(conn):
        # A clean end of the chunked body in the middle of an event, with no message_delta/message_stop.
        await conn.send(SSE_HEAD)
        await conn.send_events(HEL)
        await conn.send(chunk(b'event: content_block_delta\ndata: {"type":"content_bl'))
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(PARTIAL_MESSAGE)
        conn.close()


async def test_truncated_body_is_a_retried_502_or_an_incomplete_stream_error() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(truncated)
    assert plain.status == 502 and plain.attempts == 2
    assert "not completed" in plain.error()["message"]
    assert streamed.status == 200 and streamed.attempts == 1
    assert streamed_text(streamed.body) == "Hel"
    error = streamed.stream_error()
    assert error["type"] == "server_error"
    assert error["message"] == "the upstream stream ended before the message was complete"


async def invalid_json(conn: Conn) -> None:
    if is_stream(conn):
        await conn.send(SSE_HEAD)
        await conn.send_events([*HEL, sse("content_block_delta", b'{"type":"content_block_delta","index":0,delta')])
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, b'{"id":"msg_01","type":"message","content":[{"type":"text","te'))


async def test_invalid_json_is_502_malformed_or_an_error_event() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(invalid_json)
    assert plain.status == 502 and plain.attempts == 1
    assert plain.error()["message"] == "the upstream API answered with a malformed message"
    assert streamed.status == 200 and streamed.attempts == 1
    assert streamed_text(streamed.body) == "Hel"
    assert streamed.stream_error()["message"] == "Upstream sent a malformed 'content_block_delta' stream event."


async def html_502(conn: Conn) -> None:
    await conn.send(http_response(502, HTML_502, "text/html"))


async def test_html_502_from_a_load_balancer_is_retried_then_503_naming_the_page() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(html_502)
    for outcome in (plain, streamed):
        assert outcome.status == 503 and outcome.attempts == 2
        assert outcome.retry_reasons == {"502": 1}
        assert outcome.error() == {
            "message": "Upstream returned HTTP 502: 502 Bad Gateway",
            "type": "server_error",
            "param": None,
            "code": None,
        }


async def error_first(conn: Conn) -> None:
    if is_stream(conn):
        await conn.send(SSE_HEAD)
        await conn.send_events([sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})])
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, error_body("overloaded_error", "Overloaded")))


async def test_200_with_an_error_first_is_retried_then_503_overloaded_when_streaming() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(error_first)
    # Before anything reached the client, an error event counts as an error status: retried, then mapped.
    assert streamed.status == 503 and streamed.attempts == 2
    assert streamed.retry_reasons == {"529": 1}
    assert streamed.error() == {
        "message": "Upstream returned HTTP 529: Overloaded",
        "type": "overloaded_error",
        "param": None,
        "code": None,
    }
    # A non-streaming 200 whose body is an error object is not a Messages API reply: malformed, not retried.
    assert plain.status == 502 and plain.attempts == 1
    assert plain.error()["message"] == "the upstream API answered with a malformed message"


HUGE_TEXT = "0123456789abcdef" * (512 * 1024)  # 8 MiB


async def huge(conn: Conn) -> None:
    if is_stream(conn):
        await conn.send(SSE_HEAD)
        await conn.send_events(stream_events([HUGE_TEXT[i : i + 65536] for i in range(0, len(HUGE_TEXT), 65536)]))
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, orjson.dumps(message(HUGE_TEXT))))


async def test_huge_response_arrives_whole_in_both_modes() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(huge)
    assert plain.status == 200
    assert orjson.loads(plain.body)["choices"][0]["message"]["content"] == HUGE_TEXT
    streamed.completed_stream()
    assert streamed_text(streamed.body) == HUGE_TEXT


async def unknown_event(conn: Conn) -> None:
    if is_stream(conn):
        events = stream_events(["Hel", "lo"])
        events.insert(3, sse("fancy_new_event", {"index": 0, "sparkle": True}))
        events.insert(1, sse("content_block_delta", {"index": 0, "delta": {"type": "fancy_delta", "x": 1}}))
        await conn.send(SSE_HEAD)
        await conn.send_events(events)
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, orjson.dumps(message(extra_blocks=[{"type": "fancy_block", "x": 1}]))))


async def test_unknown_event_and_block_types_are_ignored() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(unknown_event)
    assert plain.status == 200
    assert orjson.loads(plain.body)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello there.",
        "refusal": None,
    }
    streamed.completed_stream()
    assert streamed_text(streamed.body) == "Hello"


async def unknown_stop_reason(conn: Conn) -> None:
    if is_stream(conn):
        await conn.send(SSE_HEAD)
        await conn.send_events(stream_events(["Hi"], stop_reason="galaxy_brain"))
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, orjson.dumps(message(stop_reason="galaxy_brain"))))


async def test_unknown_stop_reason_finishes_as_stop() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(unknown_stop_reason)
    assert plain.status == 200
    assert orjson.loads(plain.body)["choices"][0]["finish_reason"] == "stop"
    payloads = streamed.completed_stream()
    reasons = [c["finish_reason"] for p in payloads for c in p.get("choices", []) if c.get("finish_reason")]
    assert reasons == ["stop"]
