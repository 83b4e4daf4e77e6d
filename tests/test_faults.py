"""The upstream fault matrix: what a client sees when Anthropic (or whatever sits in front of it)
misbehaves, streaming and not, and that nothing is left behind afterwards.

The gateway runs on a real uvicorn server in this process and talks real HTTP, through its
production connection pool (aiohttp), to `RawUpstream`: a loopback TCP server whose replies are
scripts of raw bytes, so resets, stalls and truncated chunked bodies are the real thing. Timeouts
are a fifth of a second and there are two attempts, so the whole matrix runs in seconds.

Every fault is sent several times in each mode; afterwards the number of asyncio tasks and of
open file descriptors must be back where it was after a warm-up round (see `Probe.run`), polled
for with a deadline rather than looked at once. The outcomes are tabulated in docs/faults.md.
"""

from __future__ import annotations

import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from proxy.errors import stream_ended_early
from tests.faults import (
    BLOCK_START,
    CHAT,
    CLIENT_KEY,
    FAST_UPSTREAM,
    LAST_CHUNK,
    SSE_HEAD,
    UPSTREAM_KEY,
    Conn,
    RawUpstream,
    Resources,
    Scenario,
    Served,
    assert_openai_error_body,
    assert_settled,
    chunk,
    error_body,
    http_head,
    http_response,
    message,
    message_start,
    metric,
    reply_ok,
    serve_gateway,
    sse,
    stream_events,
    stream_payloads,
    streamed_text,
    text_delta,
)
from tests.polling import eventually_async
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
    headers: dict[str, str] = field(default_factory=dict)

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
        headers = dict(response.headers)
        return Outcome(response.status_code, content_type, raw, int(attempts), reasons, elapsed, headers)

    async def native(self, stream: bool) -> httpx.Response:
        """One call of the native route, ``/v1/messages``, read whole."""
        async with httpx.AsyncClient(base_url=self.gateway.url, headers=AUTH, timeout=10) as client:
            request = {**CHAT, "max_tokens": 64, "stream": stream}
            async with client.stream("POST", "/v1/messages", json=request) as response:
                await response.aread()
        return response

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
        await assert_settled(baseline, fd_slack=FD_SLACK)
        return last


@contextlib.asynccontextmanager
async def fault_gateway(upstream_url: str | None = None, **upstream: Any) -> AsyncIterator[Probe]:
    async with RawUpstream() as raw:
        async with serve_gateway(upstream_url or raw.url, upstream={**FAST_UPSTREAM, **upstream}) as gw:
            yield Probe(gw, raw)
        # After shutdown nothing may linger either: the gateway closes every upstream connection
        # (looked at before the upstream itself shuts down, which would close them anyway).
        await eventually_async(lambda: raw.open_connections == 0, what="the gateway closed its upstream connections")


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
        assert outcome.attempts == 2 and outcome.retry_reasons == {"connect": 1}  # refused at once, retried once


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
    await conn.delivered()  # the RST must not overtake the bytes
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
        # Every hung attempt's connection is closed by the gateway (the warm-up's excepted).
        await eventually_async(
            lambda: probe.upstream.closed_by_peer == len(probe.upstream.seen) - 2, what="hung attempts closed"
        )
    for outcome in (plain, streamed):
        assert outcome.status == 504
        assert outcome.error() == {
            "message": "the upstream API timed out",
            "type": "timeout_error",
            "param": None,
            "code": None,
        }
        # Answered by two first-byte timeouts, not by the upstream (which never answers).
        assert outcome.attempts == 2 and outcome.retry_reasons == {"timeout": 1}


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
        await eventually_async(
            lambda: probe.upstream.closed_by_peer == len(probe.upstream.seen) - 2, what="stalled replies closed"
        )
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
    assert error["message"] == stream_ended_early().message  # the one text, on every dialect and choice count


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


# --- replies the gateway refuses -----------------------------------------------------------------


def redirect_to(url: str) -> Scenario:
    async def scenario(conn: Conn) -> None:
        await conn.send(http_response(307, b"", location=f"{url}/v1/messages"))

    return scenario


@POOLS
async def test_a_307_from_upstream_is_a_502_and_not_followed(pool: str) -> None:
    async with RawUpstream() as elsewhere, fault_gateway(transport=pool) as probe:
        plain, streamed = await probe.run(redirect_to(elsewhere.url))
        native = await probe.native(stream=False)
    # Following it would have sent the upstream key and the prompt to another host.
    assert elsewhere.seen == []
    for outcome in (plain, streamed):
        assert outcome.status == 502 and outcome.attempts == 1
        assert outcome.error() == {
            "message": "the upstream API answered with a redirect (HTTP 307), which is not followed",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    assert native.status_code == 502
    assert native.json()["error"]["message"].startswith("the upstream API answered with a redirect")


SMALL_BOUNDS = {"max_response_bytes": 64 * 1024, "max_event_bytes": 64 * 1024}
OVERSIZED_TEXT = "x" * (256 * 1024)


def oversized(framing: str) -> Scenario:
    """A body (or, streamed, one event's line) four times over the small bounds; then the upstream
    waits, so that the gateway closing the connection is counted."""

    async def scenario(conn: Conn) -> None:
        if is_stream(conn):
            await conn.send(SSE_HEAD)
            await conn.send_events(HEL)
            await conn.send(chunk(b'event: content_block_delta\ndata: {"text": "' + OVERSIZED_TEXT.encode()))
        elif framing == "content-length":
            await conn.send(http_response(200, orjson.dumps(message(OVERSIZED_TEXT))))
        else:
            await conn.send(http_head(200, {"content-type": "application/json", "transfer-encoding": "chunked"}))
            await conn.send_events([orjson.dumps(message(OVERSIZED_TEXT))])
        await conn.hold()

    return scenario


@pytest.mark.parametrize("pool", ["aiohttp", "httpx", "httpx2"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_or_an_event_over_the_bound_is_a_502_or_an_error_event_and_the_connection_closed(
    pool: str, framing: str
) -> None:
    async with fault_gateway(transport=pool, **SMALL_BOUNDS) as probe:
        plain, streamed = await probe.run(oversized(framing))
        await eventually_async(
            lambda: probe.upstream.closed_by_peer == len(probe.upstream.seen) - 2,  # the warm-up excepted
            what="the gateway closed every oversized reply's connection",
        )
        native = await probe.native(stream=True)
    assert plain.status == 502 and plain.attempts == 1  # not retried: it would be as large again
    assert plain.error() == {
        "message": "the upstream API's reply is over upstream.max_response_bytes (65536 bytes)",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert streamed.status == 200 and streamed.attempts == 1
    assert streamed_text(streamed.body) == "Hel"
    error = streamed.stream_error()
    assert error["message"] == "the upstream API sent a stream event over upstream.max_event_bytes (65536 bytes)"
    # The native route relays the upstream's bytes, and ends with the same error as an event.
    assert native.status_code == 200
    assert native.content.endswith(b"\n\n") and b"event: error\n" in native.content
    assert b"upstream.max_event_bytes" in native.content.rsplit(b"event: error\n", 1)[1]


async def gzipped(conn: Conn) -> None:
    # A gzip bomb in miniature: 16 MiB of JSON whitespace in about 16 KiB.
    body = gzip.compress(orjson.dumps(message()) + b" " * (16 * 1024 * 1024), compresslevel=9)
    head = {"content-type": "application/json", "content-encoding": "gzip", "content-length": str(len(body))}
    await conn.send(http_head(200, head) + body)


@POOLS
async def test_a_compressed_body_is_never_asked_for_and_refused_with_a_502(pool: str) -> None:
    async with fault_gateway(transport=pool) as probe:
        plain, streamed = await probe.run(gzipped)
        asked = {request.headers.get("accept-encoding") for request in probe.upstream.seen}
    assert asked == {"identity"}
    for outcome in (plain, streamed):
        assert outcome.status == 502 and outcome.attempts == 1
        expected = "the upstream API sent a gzip-encoded body; the gateway accepts only uncompressed ones"
        assert outcome.error()["message"] == expected


def huge_head(kind: str) -> Scenario:
    async def scenario(conn: Conn) -> None:
        if kind == "one huge header":
            fields = {"x-padding": "a" * (1024 * 1024)}
        else:
            fields = {f"x-header-{i}": "a" for i in range(20_000)}
        with contextlib.suppress(ConnectionError):  # the gateway may hang up before the end
            await conn.send(http_head(200, {**fields, "content-type": "application/json", "content-length": "2"}))
            await conn.send(b"{}")

    return scenario


@POOLS
@pytest.mark.parametrize("kind", ["one huge header", "too many headers"])
async def test_a_huge_upstream_head_is_a_502_that_names_neither_host_nor_port(pool: str, kind: str) -> None:
    async with fault_gateway(transport=pool) as probe:
        plain, streamed = await probe.run(huge_head(kind))
        port = probe.upstream.url.rpartition(":")[2]
    for outcome in (plain, streamed):
        assert outcome.status == 502
        message_ = outcome.error()["message"]
        assert message_.startswith("upstream transport error: ") or message_.startswith(
            "the upstream API broke the connection: "
        ), message_
        assert "127.0.0.1" not in message_ and port not in message_ and "aaaa" not in message_, message_


async def odd_request_id(conn: Conn) -> None:
    # Not latin-1 once decoded, as aiohttp decodes header bytes (UTF-8): no response could carry it.
    head = http_head(200, {"content-type": "application/json"}).replace(b"\r\n\r\n", b"\r\n")
    body = orjson.dumps(message())
    if is_stream(conn):
        events = b"".join(chunk(e) for e in stream_events(["Hi"])) + LAST_CHUNK
        await conn.send(head.replace(b"application/json", b"text/event-stream"))
        await conn.send(b"request-id: req_\xe2\x82\xac\xf0\x9f\x92\xa5\r\ntransfer-encoding: chunked\r\n\r\n" + events)
    else:
        await conn.send(head + b"request-id: req_\xe2\x82\xac\r\ncontent-length: %d\r\n\r\n" % len(body) + body)


async def test_a_request_id_that_is_not_a_sane_token_is_not_passed_on() -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(odd_request_id)
    assert plain.status == 200 and "request-id" not in plain.headers
    assert streamed.status == 200 and "request-id" not in streamed.headers
    streamed.completed_stream()


# --- the upstream key quoted back -------------------------------------------------------------------

QUOTE = f"x-api-key {UPSTREAM_KEY} may not be used here".encode()


def quoting(kind: str) -> Scenario:
    async def scenario(conn: Conn) -> None:
        if kind == "400":
            await conn.send(http_response(400, error_body("invalid_request_error", QUOTE.decode())))
        elif kind == "403":
            await conn.send(http_response(403, error_body("permission_error", QUOTE.decode())))
        elif kind == "503 html":
            page = b"<html><head><title>503 " + QUOTE + b"</title></head><body>" + QUOTE + b"</body></html>"
            await conn.send(http_response(503, page, "text/html"))
        elif kind == "first event" and is_stream(conn):
            await conn.send(SSE_HEAD)
            await conn.send_events(
                [sse("error", {"error": {"type": "invalid_request_error", "message": QUOTE.decode()}})]
            )
            await conn.send(LAST_CHUNK)
        elif kind == "mid-stream" and is_stream(conn):
            event = sse("error", {"error": {"type": "api_error", "message": QUOTE.decode()}})
            cut = event.index(UPSTREAM_KEY.encode()) + 5  # the key cut in two by the chunking
            await conn.send(SSE_HEAD)
            await conn.send_events([*HEL, event[:cut], event[cut:]], delay=0.01)
            await conn.send(LAST_CHUNK)
        else:
            await conn.send(http_response(400, error_body("invalid_request_error", QUOTE.decode())))

    return scenario


@pytest.mark.parametrize("kind", ["400", "403", "503 html", "first event", "mid-stream"])
async def test_an_upstream_message_quoting_the_upstream_key_reaches_no_client(kind: str) -> None:
    async with fault_gateway() as probe:
        plain, streamed = await probe.run(quoting(kind))
        natives = [await probe.native(stream=False), await probe.native(stream=True)]
    key = UPSTREAM_KEY.encode()
    for outcome in (plain, streamed):
        assert key not in outcome.body and UPSTREAM_KEY not in str(outcome.headers)
        assert b"[redacted]" in outcome.body, outcome.body[-500:]
    for native in natives:
        assert key not in native.content and UPSTREAM_KEY not in str(native.headers)
        assert b"[redacted]" in native.content, native.content[-500:]
