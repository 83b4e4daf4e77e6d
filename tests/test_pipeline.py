"""The one request pipeline (proxy/pipeline.py) behaves the same over every dialect and path:
time to first token, payload logging, the texts of the same failures, and settling exactly once
(counted as ledger writes), whether the request is answered, fails or is cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import respx
from prometheus_client import REGISTRY

from proxy.errors import stream_ended_early
from proxy.gateway import Gateway
from tests.polling import eventually_async
from tests.test_app import MESSAGE, UPSTREAM_KEY, app_client, settings

pytestmark = pytest.mark.anyio

MODEL = "claude-haiku-4-5"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
NATIVE = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
RESPONSES = {"model": MODEL, "input": "Hi"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps({"type": event, **data}) + b"\n\n"


START = sse("message_start", {"message": {**MESSAGE, "content": [], "stop_reason": None}})
TEXT = [
    sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello there."}}),
    sse("content_block_stop", {"index": 0}),
]
END = [
    sse("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 4}}),
    sse("message_stop", {}),
]
WHOLE_STREAM = b"".join([START, *TEXT, *END])
CUT_STREAM = b"".join([START, *TEXT])  # the upstream closed before message_delta / message_stop

# (path, body): every dialect and path the pipeline serves.
PATHS = {
    "chat": ("/v1/chat/completions", CHAT),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "chat-n2": ("/v1/chat/completions", {**CHAT, "n": 2}),
    "chat-n2-stream": ("/v1/chat/completions", {**CHAT, "n": 2, "stream": True}),
    "native": ("/v1/messages", NATIVE),
    "native-stream": ("/v1/messages", {**NATIVE, "stream": True}),
    "responses": ("/v1/responses", RESPONSES),
    "responses-stream": ("/v1/responses", {**RESPONSES, "stream": True}),
}
STREAMED = [name for name in PATHS if name.endswith("stream")]


def reply_for(body: dict[str, Any], stream: bytes = WHOLE_STREAM) -> httpx.Response:
    if body.get("stream"):
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=MESSAGE)


def answer_upstream(mock: respx.MockRouter, stream: bytes = WHOLE_STREAM) -> None:
    mock.post("/v1/messages").mock(side_effect=lambda request: reply_for(orjson.loads(request.content), stream))


class Ledger:
    """Counts the ledger's writes (one per settled request) by wrapping the gateway's ledger."""

    def __init__(self, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes = 0
        book = gateway.keys.ledger.book

        def counted(*args: Any, **kwargs: Any) -> None:
            self.writes += 1
            book(*args, **kwargs)

        monkeypatch.setattr(gateway.keys.ledger, "book", counted)


@pytest.fixture
def mock() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(base_url="https://upstream.test", assert_all_called=False) as router:
        yield router  # type: ignore[misc]


@pytest.fixture
async def gateway(mock: respx.MockRouter) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    served = app_client(settings(log_payloads=True, upstream={"max_backoff": 0.001, "max_attempts": 1}), mock)
    async with served as client:
        yield client, served.app.state.gateway


def ttft_count(model: str = MODEL) -> float:
    return REGISTRY.get_sample_value("claude_proxy_time_to_first_token_seconds_count", {"model": model}) or 0.0


def access_line(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    lines = [r for r in caplog.records if r.name == "proxy.access"]
    assert lines, "no access line was written"
    fields: dict[str, Any] = lines[-1].fields  # type: ignore[attr-defined]
    return fields


@pytest.mark.parametrize("name", STREAMED)
async def test_time_to_first_token_is_recorded_for_every_streamed_dialect_and_choice_count(
    name: str, gateway: tuple[httpx.AsyncClient, Gateway], mock: respx.MockRouter
) -> None:
    client, _ = gateway
    answer_upstream(mock)
    path, body = PATHS[name]
    before = ttft_count()
    reply = await client.post(path, json=body)
    assert reply.status_code == 200
    assert ttft_count() == before + 1  # once per request, however many choices


@pytest.mark.parametrize("name", list(PATHS))
async def test_payloads_are_logged_on_every_dialect_and_path(
    name: str, gateway: tuple[httpx.AsyncClient, Gateway], mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = gateway
    answer_upstream(mock)
    path, body = PATHS[name]
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        reply = await client.post(path, json=body)
    assert reply.status_code == 200
    fields = access_line(caplog)
    assert fields["request_body"] == body
    assert "Hello there." in orjson.dumps(fields["response_body"]).decode()


@pytest.mark.parametrize("name", ["chat", "native", "chat-stream", "responses"])
async def test_a_refused_request_logs_its_payload_and_the_error_answer(
    name: str, gateway: tuple[httpx.AsyncClient, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = gateway
    path, body = PATHS[name]
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        reply = await client.post(path, json={**body, "model": 7})
    assert reply.status_code == 400
    fields = access_line(caplog)
    assert fields["request_body"]["model"] == 7
    assert fields["response_body"] == reply.json()


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_upstream_401_reads_the_same_on_every_dialect(
    streamed: bool, gateway: tuple[httpx.AsyncClient, Gateway], mock: respx.MockRouter
) -> None:
    client, _ = gateway
    refusal = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    mock.post("/v1/messages").mock(return_value=httpx.Response(401, json=refusal))
    chat = await client.post("/v1/chat/completions", json={**CHAT, "stream": streamed})
    native = await client.post("/v1/messages", json={**NATIVE, "stream": streamed})
    responses = await client.post("/v1/responses", json={**RESPONSES, "stream": streamed})
    assert chat.status_code == native.status_code == responses.status_code == 502
    assert chat.json()["error"]["message"] == native.json()["error"]["message"] == responses.json()["error"]["message"]
    assert native.json()["error"]["type"] == "api_error"  # the gateway's fault, never the client's key
    assert UPSTREAM_KEY not in chat.text + native.text


def last_error_message(stream: str) -> str:
    """The message of the error event a stream ended with, in either family's shape."""
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: {")]
    last = orjson.loads(payloads[-1])
    error = last["response"]["error"] if last.get("type") == "response.failed" else last["error"]
    message: str = error["message"]
    return message


@pytest.mark.parametrize("name", STREAMED)
async def test_a_cut_off_stream_ends_with_the_same_error_on_every_dialect_and_choice_count(
    name: str, gateway: tuple[httpx.AsyncClient, Gateway], mock: respx.MockRouter
) -> None:
    client, _ = gateway
    answer_upstream(mock, stream=CUT_STREAM)
    path, body = PATHS[name]
    reply = await client.post(path, json=body)
    assert reply.status_code == 200
    assert "[DONE]" not in reply.text and "message_stop" not in reply.text
    assert last_error_message(reply.text) == stream_ended_early().message


FAILURES: dict[str, Callable[[respx.MockRouter], None]] = {
    "upstream-500": lambda mock: mock.post("/v1/messages").mock(return_value=httpx.Response(500, json={})),
    "malformed-message": lambda mock: mock.post("/v1/messages").mock(return_value=httpx.Response(200, content=b"{")),
    "cut-stream": lambda mock: answer_upstream(mock, stream=CUT_STREAM),
    "answered": answer_upstream,
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("name", list(PATHS))
async def test_every_admitted_request_writes_the_ledger_exactly_once(
    name: str,
    failure: str,
    gateway: tuple[httpx.AsyncClient, Gateway],
    mock: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, gw = gateway
    ledger = Ledger(gw, monkeypatch)
    FAILURES[failure](mock)
    path, body = PATHS[name]
    await client.post(path, json=body)
    await eventually_async(lambda: ledger.writes >= 1, what="the request settled")
    await client.get("/healthz")  # a later request: anything written twice would have been by now
    assert ledger.writes == 1


@pytest.mark.parametrize("name", list(PATHS))
async def test_a_request_cancelled_while_waiting_for_the_upstream_writes_the_ledger_once(
    name: str, gateway: tuple[httpx.AsyncClient, Gateway], mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, gw = gateway
    ledger = Ledger(gw, monkeypatch)
    called = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        called.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    mock.post("/v1/messages").mock(side_effect=hang)
    path, body = PATHS[name]
    call = asyncio.create_task(client.post(path, json=body))
    await called.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually_async(lambda: ledger.writes == 1, what="the cancelled request settled")
    await eventually_async(lambda: gw.upstream.in_flight == 0, what="its upstream slots released")
    assert ledger.writes == 1
