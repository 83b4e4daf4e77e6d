"""Today's per-model rules (issue 16) through the HTTP API, against the in-process simulator, which
refuses what the real API refuses: forced tool use on the models that refuse it, a thinking budget
where a model has none, an effort above the cap with thinking off, a retired model; thinking tokens
reported as reasoning tokens; a refusal's explanation and the newer error codes reaching the client.
Every body the gateway sends upstream is checked against the installed SDK's request types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from proxy.app import create_app
from proxy.config import Settings
from proxy.simulator import create_app as create_simulator
from proxy.simulator.transport import InProcessTransport
from proxy.sse import SSEDecoder
from tests.anthropic_schema import assert_valid_messages_request

pytestmark = pytest.mark.anyio

CLIENT_KEY = "sk-model-rules-client"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
NATIVE = "/v1/messages"
TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
FLAT_TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


class RecordingTransport(InProcessTransport):
    """The simulator in-process, keeping every Messages API body the gateway sends it."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == NATIVE:
            self.bodies.append(orjson.loads(await request.aread()))
        return await super().handle_async_request(request)


class Gateway:
    def __init__(self, client: httpx.AsyncClient, upstream: RecordingTransport | None) -> None:
        self.client = client
        self.upstream = upstream

    @property
    def sent(self) -> list[dict[str, Any]]:
        """The upstream bodies so far, each a valid Messages API request."""
        bodies = self.upstream.bodies if self.upstream is not None else []
        for body in bodies:
            assert_valid_messages_request({key: value for key, value in body.items() if key != "stream"})
        return bodies

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(path, json=body)


@asynccontextmanager
async def gateway(
    *, models: dict[str, Any] | None = None, upstream: Callable[[httpx.Request], httpx.Response] | None = None
) -> AsyncIterator[Gateway]:
    """The gateway answering from the simulator (with the operator's `models` rows, which the
    simulator consults too), or from `upstream`, a handler standing in for the API."""
    settings = Settings(simulate=True, api_keys=CLIENT_KEY, models=models or {})
    recording = None if upstream else RecordingTransport(create_simulator(table=settings.model_table()))
    transport = httpx.MockTransport(upstream) if upstream else recording
    app = create_app(settings, transport=transport)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"authorization": f"Bearer {CLIENT_KEY}", "anthropic-version": "2023-06-01"},
        ) as client,
    ):
        yield Gateway(client, recording)


def chat(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "What time is it?"}], **fields}


def responses(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "input": "What time is it?", **fields}


def native(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 4096, "messages": [{"role": "user", "content": "Hi"}], **fields}


def events(response: httpx.Response) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    found = decoder.feed(response.content)
    return [orjson.loads(data) for _, data in found if data != b"[DONE]"]


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# --- forced tool use ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-fable-5-1", "claude-mythos-5-1", "claude-opus-5-5"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, lambda m: chat(m, tools=[TOOL], tool_choice="required")),
        (CHAT, lambda m: chat(m, tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_time"}})),
        (RESPONSES, lambda m: responses(m, tools=[FLAT_TOOL], tool_choice="required")),
        (RESPONSES, lambda m: responses(m, tools=[FLAT_TOOL], tool_choice={"type": "function", "name": "get_time"})),
    ],
    ids=["chat-required", "chat-named", "responses-required", "responses-named"],
)
async def test_forced_tool_choice_on_a_model_that_refuses_it_is_a_400_naming_tool_choice(
    model: str, path: str, body: Callable[[str], dict[str, Any]]
) -> None:
    async with gateway() as gw:
        error = openai_error(await gw.post(path, body(model)), 400)
        assert (error["param"], error["code"], error["type"]) == (
            "tool_choice",
            "unsupported_value",
            "invalid_request_error",
        )
        assert model in error["message"]
        assert gw.sent == []  # refused before any upstream call


@pytest.mark.parametrize("path", [CHAT, RESPONSES])
async def test_auto_tool_choice_on_a_model_that_refuses_forcing_calls_the_tool(path: str) -> None:
    body = (
        chat("claude-fable-5-1", tools=[TOOL], tool_choice="auto")
        if path == CHAT
        else responses("claude-fable-5-1", tools=[FLAT_TOOL], tool_choice="auto")
    )
    async with gateway() as gw:
        response = await gw.post(path, body)
        assert response.status_code == 200, response.text
        assert gw.sent[-1]["tool_choice"] == {"type": "auto"}


async def test_the_simulator_refuses_forced_tool_use_where_the_model_does() -> None:
    tools = [{"name": "get_time", "input_schema": {"type": "object"}}]
    async with gateway() as gw:
        refused = await gw.post(NATIVE, native("claude-fable-5-1", tools=tools, tool_choice={"type": "any"}))
        accepted = await gw.post(NATIVE, native("claude-opus-5", tools=tools, tool_choice={"type": "any"}))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"].startswith("tool_choice.type:")
    assert accepted.status_code == 200, accepted.text


# --- no manual budgets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["claude-opus-4-7", "claude-opus-5", "claude-sonnet-5", "claude-fable-5-2", "claude-mythos-5-2"]
)
@pytest.mark.parametrize("effort", ["low", "high", "max"])
async def test_reasoning_effort_on_a_model_without_manual_budgets_never_sends_budget_tokens(
    model: str, effort: str
) -> None:
    async with gateway() as gw:
        for path, body in (
            (CHAT, chat(model, reasoning_effort=effort)),
            (RESPONSES, responses(model, reasoning={"effort": effort})),
        ):
            response = await gw.post(path, body)
            assert response.status_code == 200, response.text
        for sent in gw.sent:
            assert "budget_tokens" not in sent.get("thinking", {})
            assert sent.get("thinking", {"type": "adaptive"})["type"] == "adaptive"
            assert sent["output_config"]["effort"] == effort


async def test_the_simulator_refuses_a_thinking_budget_where_the_model_has_none() -> None:
    async with gateway() as gw:
        response = await gw.post(NATIVE, native("claude-sonnet-5", thinking={"type": "enabled", "budget_tokens": 2048}))
    assert response.status_code == 400
    assert '"thinking.type.enabled" is not supported for this model' in response.json()["error"]["message"]


async def test_the_simulator_refuses_thinking_disabled_where_the_model_always_thinks() -> None:
    async with gateway() as gw:
        response = await gw.post(NATIVE, native("claude-fable-5-2", thinking={"type": "disabled"}))
    assert response.status_code == 400
    assert '"thinking.type.disabled" is not supported for this model' in response.json()["error"]["message"]


# --- effort with thinking off ---------------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "status"), [("low", 200), ("high", 200), ("xhigh", 400), ("max", 400)])
async def test_the_simulator_caps_opus_5s_effort_at_high_with_thinking_disabled(effort: str, status: int) -> None:
    body = native("claude-opus-5", thinking={"type": "disabled"}, output_config={"effort": effort})
    async with gateway() as gw:
        response = await gw.post(NATIVE, body)
        adaptive = await gw.post(NATIVE, {**body, "thinking": {"type": "adaptive"}})
    assert response.status_code == status, response.text
    if status == 400:
        assert "output_config.effort" in response.json()["error"]["message"]
    assert adaptive.status_code == 200, adaptive.text


async def test_reasoning_effort_none_on_opus_5_is_accepted_with_thinking_disabled() -> None:
    async with gateway() as gw:
        response = await gw.post(CHAT, chat("claude-opus-5", reasoning_effort="none"))
        assert response.status_code == 200, response.text
        assert gw.sent[-1]["thinking"] == {"type": "disabled"}
        assert "output_config" not in gw.sent[-1]


# A model the operator declares: no thinking, every effort level, but only up to high without thinking.
CAPPED = {"claude-capped*": {"thinking": ["disabled"], "effort_without_thinking": ["low", "medium", "high"]}}


@pytest.mark.parametrize("path", [CHAT, RESPONSES])
async def test_an_effort_above_the_cap_without_thinking_is_sent_as_the_nearest_accepted_level(path: str) -> None:
    body = (
        chat("claude-capped-1", reasoning_effort="max")
        if path == CHAT
        else responses("claude-capped-1", reasoning={"effort": "max"})
    )
    async with gateway(models=CAPPED) as gw:
        response = await gw.post(path, body)
        assert response.status_code == 200, response.text
        assert gw.sent[-1]["output_config"] == {"effort": "high"}
        assert "thinking" not in gw.sent[-1]


# --- retired models --------------------------------------------------------------------------------------

RETIRED = {"claude-sonnet-4-5*": {"lifecycle": "retired", "successor": "claude-sonnet-5-5"}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, chat("claude-sonnet-4-5")),
        (RESPONSES, responses("claude-sonnet-4-5")),
        (NATIVE, native("claude-sonnet-4-5")),
    ],
    ids=["chat", "responses", "native"],
)
async def test_a_retired_model_is_a_404_naming_the_model_and_its_successor(path: str, body: dict[str, Any]) -> None:
    async with gateway(models=RETIRED) as gw:
        response = await gw.post(path, body)
    assert response.status_code == 404, response.text
    message = response.json()["error"]["message"]
    assert "claude-sonnet-4-5" in message and "claude-sonnet-5-5" in message


# --- thinking tokens ---------------------------------------------------------------------------------------


async def test_thinking_tokens_are_chats_reasoning_tokens_whole_and_streamed() -> None:
    body = chat("claude-opus-4-7", reasoning_effort="high")
    async with gateway() as gw:
        whole = await gw.post(CHAT, body)
        streamed = await gw.post(CHAT, {**body, "stream": True, "stream_options": {"include_usage": True}})
        native_reply = await gw.post(NATIVE, gw.sent[0])
    assert whole.status_code == streamed.status_code == native_reply.status_code == 200
    thinking_tokens = native_reply.json()["usage"]["output_tokens_details"]["thinking_tokens"]
    usage = whole.json()["usage"]
    assert 0 < thinking_tokens < usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == thinking_tokens
    assert events(streamed)[-1]["usage"] == usage


async def test_thinking_tokens_are_the_responses_apis_reasoning_tokens_whole_and_streamed() -> None:
    body = responses("claude-opus-4-7", reasoning={"effort": "high"})
    async with gateway() as gw:
        whole = await gw.post(RESPONSES, body)
        streamed = await gw.post(RESPONSES, {**body, "stream": True})
    assert whole.status_code == streamed.status_code == 200
    usage = whole.json()["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0
    assert events(streamed)[-1]["response"]["usage"] == usage


async def test_no_reasoning_tokens_without_thinking() -> None:
    async with gateway() as gw:
        response = await gw.post(CHAT, chat("claude-opus-4-7"))
    assert response.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


# --- what the upstream says: a refusal's explanation, the newer error codes -----------------------------------

REFUSAL: dict[str, Any] = {
    "id": "msg_01Refused",
    "type": "message",
    "role": "assistant",
    "model": "claude-fable-5-1",
    "content": [],
    "stop_reason": "refusal",
    "stop_sequence": None,
    "stop_details": {"type": "refusal", "category": "cyber", "explanation": "This could enable malware development."},
    "usage": {"input_tokens": 9, "output_tokens": 3},
}


def answer(status: int, body: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers={"request-id": "req_rules"})


async def test_a_refusals_explanation_reaches_chat_and_responses_clients() -> None:
    async with gateway(upstream=answer(200, REFUSAL)) as gw:
        completion = await gw.post(CHAT, chat("claude-fable-5-1"))
        response = await gw.post(RESPONSES, responses("claude-fable-5-1"))
    assert completion.status_code == response.status_code == 200
    choice = completion.json()["choices"][0]
    assert (choice["message"]["refusal"], choice["finish_reason"]) == (
        "This could enable malware development.",
        "content_filter",
    )
    parts = response.json()["output"][-1]["content"]
    assert parts == [{"type": "refusal", "refusal": "This could enable malware development."}]


async def test_image_dimensions_too_large_reaches_the_client_as_a_400_with_its_code() -> None:
    error_body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "messages.0.content.1: image dimensions exceed the limit of 8000 pixels",
            "details": {
                "error_code": "image_dimensions_too_large",
                "max_side_length_pixels": 8000,
                "paths": ["messages.0.content.1"],
            },
        },
        "request_id": "req_rules",
    }
    async with gateway(upstream=answer(400, error_body)) as gw:
        completion = await gw.post(CHAT, chat("claude-opus-5"))
        response = await gw.post(RESPONSES, responses("claude-opus-5"))
    for reply in (completion, response):
        error = openai_error(reply, 400)
        assert (error["code"], error["type"]) == ("image_dimensions_too_large", "invalid_request_error")
        assert "8000 pixels" in error["message"]
