"""The simulator answers like Anthropic's Messages API and refuses what it refuses."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import anthropic
import anyio
import httpx
import httpx2
import pytest
from anthropic.types import Message, MessageTokensCount, ModelInfo
from anthropic.types.shared.error_response import ErrorResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from proxy.models import ModelTable
from proxy.simulator import create_app, validate
from proxy.simulator.reply import build_message, input_tokens, request_digest, stream_events
from proxy.simulator.validate import SimError, validate_create
from tests.anthropic_schema import assert_valid_messages_request

pytestmark = pytest.mark.anyio

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPUS = "claude-opus-4-6"
# A current model with manual thinking and prefill (the SDK warns, an error under pytest, about deprecated ones).
HAIKU = "claude-haiku-4-5"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "detailed": {"type": "boolean"},
            "ratio": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "options": {"type": "object"},
            "note": {"type": "string"},
        },
        "required": ["city", "unit", "days", "detailed", "ratio", "tags", "options"],
    },
}
TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
}


def body(text: str = "Hello there, how are you?", **extra: Any) -> dict[str, Any]:
    return {"model": HAIKU, "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}


@asynccontextmanager
async def raw_client(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(**options))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


@asynccontextmanager
async def sdk_client(**options: Any) -> AsyncIterator[anthropic.AsyncAnthropic]:
    # The installed SDK is built on httpx2 and refuses httpx objects.
    transport = httpx2.ASGITransport(app=create_app(**options))
    async with (
        httpx2.AsyncClient(transport=transport) as http,
        anthropic.AsyncAnthropic(api_key="k", base_url="http://sim", http_client=http, max_retries=0) as client,
    ):
        yield client


async def post(request: dict[str, Any], path: str = "/v1/messages", **options: Any) -> httpx.Response:
    async with raw_client(**options) as client:
        return await client.post(path, json=request, headers=HEADERS)


def error_of(response: httpx.Response) -> tuple[str, str]:
    parsed = ErrorResponse.model_validate(response.json())
    assert parsed.request_id == response.headers["request-id"]
    return parsed.error.type, parsed.error.message


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in text.split("\n\n"):
        if not chunk.strip():
            continue
        event_line, data_line = chunk.split("\n")
        name = event_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


def reassemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    message: dict[str, Any] = {}
    buffers: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = copy.deepcopy(data["message"])
        elif name == "content_block_start":
            assert data["index"] == len(message["content"])
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                buffers[data["index"]] = buffers.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop":
            if data["index"] in buffers:
                message["content"][data["index"]]["input"] = json.loads(buffers[data["index"]] or "{}")
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    return message


# --- the official SDK against the simulator ---------------------------------------------------


async def test_sdk_create_returns_a_message() -> None:
    async with sdk_client() as client:
        raw = await client.messages.with_raw_response.create(
            model=HAIKU, max_tokens=256, messages=[{"role": "user", "content": "Hello there, how are you?"}]
        )
        message = await raw.parse()
    assert raw.headers["request-id"].startswith("req_011")
    assert message.id.startswith("msg_01")
    assert message.role == "assistant" and message.model == HAIKU
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    [block] = message.content
    assert block.type == "text"
    assert block.text.startswith("Hello! You said: Hello there, how are you?")
    assert 35 <= len(block.text.split()) <= 45
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_creation_input_tokens == 0 and message.usage.cache_read_input_tokens == 0
    assert message.usage.service_tier == "standard"


async def test_sdk_stream_final_message_equals_create() -> None:
    request = body("Tell me about get_weather in Paris", tools=[WEATHER, TIME], model=HAIKU)
    async with sdk_client() as client:
        created = await client.messages.create(**request)
        async with client.messages.stream(**request) as stream:
            final = await stream.get_final_message()
    assert final.to_dict() == created.to_dict()
    assert [block.type for block in final.content] == ["text", "tool_use"]


async def test_sdk_stream_with_thinking_equals_create() -> None:
    request = body(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048}, model=HAIKU)
    async with sdk_client() as client:
        created = await client.messages.create(**request)
        async with client.messages.stream(**request) as stream:
            final = await stream.get_final_message()
    assert final.to_dict() == created.to_dict()
    assert [block.type for block in created.content] == ["thinking", "text"]


async def test_sdk_tool_use_with_two_tools_named_in_text_gives_two_tool_use_blocks() -> None:
    async with sdk_client() as client:
        message = await client.messages.create(
            **body("First get_time, then get_weather for Paris please", tools=[WEATHER, TIME], model=HAIKU)
        )
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [use.name for use in uses] == ["get_time", "get_weather"]
    assert all(use.id.startswith("toolu_01") for use in uses)
    assert len({use.id for use in uses}) == 2
    assert uses[0].input == {"tz": "example"}
    assert uses[1].input == {
        "city": "example",
        "unit": "celsius",
        "days": 1,
        "detailed": True,
        "ratio": 1.5,
        "tags": [],
        "options": {},
    }


async def test_sdk_disable_parallel_tool_use_gives_one_tool_use_block() -> None:
    async with sdk_client() as client:
        message = await client.messages.create(
            **body(
                "First get_time, then get_weather for Paris please",
                tools=[WEATHER, TIME],
                tool_choice={"type": "auto", "disable_parallel_tool_use": True},
                model=HAIKU,
            )
        )
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [use.name for use in uses] == ["get_time"]


async def test_sdk_unknown_model_is_404() -> None:
    async with sdk_client() as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.create(**{**body(), "model": "gpt-4o"})
    assert caught.value.status_code == 404
    assert "model: gpt-4o" in str(caught.value)


async def test_sdk_simulated_overload_raises_overloaded_error() -> None:
    async with sdk_client() as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(**body("please SIMULATE_ERROR 529 overloaded_error now", model=HAIKU))
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": caught.value.request_id,
    }


async def test_sdk_simulated_stream_error_raises_mid_stream() -> None:
    texts: list[str] = []
    async with sdk_client() as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(**body("SIMULATE_STREAM_ERROR please", model=HAIKU)) as stream:
                async for text in stream.text_stream:
                    texts.append(text)
    assert texts, "text deltas arrive before the error"
    assert "overloaded_error" in str(caught.value)


async def test_sdk_count_tokens_matches_usage_input_tokens() -> None:
    request = body("Count these words, please.", system="Be brief.", tools=[WEATHER], model=HAIKU)
    async with sdk_client() as client:
        counted = await client.messages.count_tokens(
            model=request["model"], messages=request["messages"], system=request["system"], tools=request["tools"]
        )
        message = await client.messages.create(**request)
    assert isinstance(counted, MessageTokensCount)
    assert counted.input_tokens == message.usage.input_tokens > 0


async def test_sdk_models_list_and_retrieve() -> None:
    async with sdk_client() as client:
        models = [model async for model in client.models.list(limit=5)]
        one = await client.models.retrieve(OPUS)
        alias = await client.models.retrieve(HAIKU)
    ids = [model.id for model in models]
    assert len(ids) == len(set(ids)) >= 6
    assert {OPUS, "claude-sonnet-4-6", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5-20251001"} <= set(ids)
    assert all(model.type == "model" and model.display_name.startswith("Claude ") for model in models)
    assert one.id == OPUS and one.display_name == "Claude Opus 4.6"
    assert one.max_tokens == ModelTable.with_overrides().capabilities(OPUS).max_output_tokens
    assert alias.id == "claude-haiku-4-5-20251001" and alias.display_name == "Claude Haiku 4.5"


# --- the wire format ----------------------------------------------------------------------------


async def test_models_list_shape() -> None:
    async with raw_client() as client:
        response = await client.get("/v1/models", headers=HEADERS)
    assert response.status_code == 200
    page = response.json()
    assert page["has_more"] is False
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
    for info in page["data"]:
        parsed = ModelInfo.model_validate(info)
        assert info["created_at"].endswith("Z") and parsed.created_at.tzinfo is not None
    created = {info["id"]: info["created_at"] for info in page["data"]}
    assert created["claude-haiku-4-5-20251001"] == "2025-10-01T00:00:00Z"
    assert "claude-haiku-4-5" not in created, "the list names dated ids, not their aliases"


async def test_models_report_their_capabilities_from_the_table() -> None:
    table = ModelTable.with_overrides()
    async with raw_client() as client:
        page = (await client.get("/v1/models", params={"limit": 1000}, headers=HEADERS)).json()
    for info in page["data"]:
        parsed = ModelInfo.model_validate(info)
        caps = table.capabilities(parsed.id)
        reported = parsed.capabilities
        assert reported is not None, parsed.id
        levels = {
            level for level in ("low", "medium", "high", "xhigh", "max") if getattr(reported.effort, level).supported
        }
        assert levels == caps.effort and reported.effort.supported == bool(caps.effort)
        types = reported.thinking.types
        modes = {
            mode for mode in ("adaptive", "enabled", "disabled", "between_tools") if getattr(types, mode).supported
        }
        assert modes == caps.thinking, parsed.id
        assert reported.structured_outputs.supported == caps.structured_outputs
        assert reported.server_tools.web_search.supported == (caps.web_search is not None)
        assert (reported.image_input.supported, reported.pdf_input.supported) == (caps.image_input, caps.pdf_input)
        assert reported.citations.supported == caps.citations
        assert parsed.max_tokens == caps.max_output_tokens and parsed.max_input_tokens
        assert parsed.lifecycle == caps.lifecycle


EXTRA_MODELS = {
    "claude-nova-6": {"effort": ["low", "high"], "thinking": ["adaptive"], "max_output_tokens": 300_000},
    "claude-dep-2": {"lifecycle": "deprecated", "retires": "2027-06-30"},
    "claude-old-1": {"lifecycle": "retired", "retires": "2026-10-31"},
}


async def test_extra_models_are_listed_first_with_their_capabilities_and_lifecycle() -> None:
    async with raw_client(extra_models=EXTRA_MODELS) as client:
        default = (await client.get("/v1/models", params={"limit": 1000}, headers=HEADERS)).json()
        every = (
            await client.get(
                "/v1/models",
                params=[("limit", "1000"), *(("lifecycle[]", stage) for stage in ("active", "deprecated", "retired"))],
                headers=HEADERS,
            )
        ).json()
        retired_only = (await client.get("/v1/models?lifecycle=retired", headers=HEADERS)).json()
        retired = await client.get("/v1/models/claude-old-1", headers=HEADERS)
    ids = [info["id"] for info in default["data"]]
    assert ids[:2] == ["claude-nova-6", "claude-dep-2"] and "claude-old-1" not in ids, "retired: only when asked"
    assert [info["id"] for info in every["data"]][:3] == list(EXTRA_MODELS)
    assert "claude-old-1" in [info["id"] for info in retired_only["data"]]
    assert all(info["lifecycle"] == "retired" for info in retired_only["data"])
    by_id = {info["id"]: ModelInfo.model_validate(info) for info in every["data"]}
    nova = by_id["claude-nova-6"]
    assert nova.lifecycle == "active" and nova.retires_at is None and nova.deprecated_at is None
    assert nova.max_tokens == 300_000 and nova.capabilities is not None
    assert nova.capabilities.effort.low.supported and not nova.capabilities.effort.medium.supported
    assert (
        nova.capabilities.thinking.types.adaptive.supported and not nova.capabilities.thinking.types.disabled.supported
    )
    deprecated, old = by_id["claude-dep-2"], by_id["claude-old-1"]
    assert deprecated.lifecycle == "deprecated" and deprecated.deprecated_at is not None
    assert deprecated.retires_at is not None and deprecated.retires_at.date().isoformat() == "2027-06-30"
    assert (
        old.lifecycle == "retired" and old.retires_at is not None and old.retires_at.date().isoformat() == "2026-10-31"
    )
    assert retired.status_code == 200 and ModelInfo.model_validate(retired.json()).lifecycle == "retired"


async def test_the_sdk_lists_retired_models_when_it_asks_for_them() -> None:
    async with sdk_client(extra_models=EXTRA_MODELS) as client:
        default = [model.id async for model in client.models.list(limit=1000)]
        every = [
            model.id async for model in client.models.list(limit=1000, lifecycle=["active", "deprecated", "retired"])
        ]
    assert "claude-old-1" not in default and "claude-old-1" in every


@pytest.mark.parametrize(
    "query", ["lifecycle=gone", "lifecycle[]=active&lifecycle[]=active&lifecycle[]=retired&lifecycle[]=deprecated"]
)
async def test_a_bad_lifecycle_filter_is_a_400(query: str) -> None:
    async with raw_client() as client:
        response = await client.get(f"/v1/models?{query}", headers=HEADERS)
    assert response.status_code == 400 and error_of(response)[0] == "invalid_request_error"


async def test_every_response_has_a_request_id_header() -> None:
    async with raw_client() as client:
        responses = [
            await client.post("/v1/messages", json=body(), headers=HEADERS),
            await client.post("/v1/messages", json=body(), headers={}),
            await client.get("/v1/models", headers=HEADERS),
            await client.get("/v1/nowhere", headers=HEADERS),
        ]
    ids = [response.headers["request-id"] for response in responses]
    assert all(rid.startswith("req_011") for rid in ids) and len(set(ids)) == len(ids)
    assert error_of(responses[3]) == ("not_found_error", "Not found")


async def test_non_streaming_body_is_a_valid_message() -> None:
    response = await post(body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    Message.model_validate(data)
    assert set(data["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "service_tier",
    }


async def test_stream_event_order_and_format() -> None:
    response = await post(body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("event: message_start\ndata: {")
    names = [name for name, _ in parse_sse(response.text)]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_delta") > 10, "text arrives word by word"
    start = parse_sse(response.text)[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["output_tokens"] == 1


REASSEMBLY_CASES = {
    "plain": body(),
    "system": body(system=[{"type": "text", "text": "You are a pirate."}]),
    "tools": body("Use get_weather and get_time", tools=[WEATHER, TIME]),
    "forced_tool": body(tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_weather"}),
    "thinking": body(max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 1024}),
    "adaptive_omitted": {**body(thinking={"type": "adaptive", "display": "omitted"}), "model": OPUS},
    "stop_sequence": body(stop_sequences=["said"]),
    "max_tokens": body(max_tokens=7),
    "prefill": body(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}]),
    "json_output": body(
        output_config={"format": {"type": "json_schema", "schema": TIME["input_schema"]}},
    ),
}


@pytest.mark.parametrize("case", sorted(REASSEMBLY_CASES))
async def test_stream_reassembles_to_the_non_streaming_message(case: str) -> None:
    request = REASSEMBLY_CASES[case]
    async with raw_client() as client:
        plain = await client.post("/v1/messages", json=request, headers=HEADERS)
        streamed = await client.post("/v1/messages", json={**request, "stream": True}, headers=HEADERS)
    assert plain.status_code == streamed.status_code == 200, plain.text
    assert reassemble(parse_sse(streamed.text)) == plain.json()


async def asgi_chunks(app: Any, request: dict[str, Any]) -> list[bytes]:
    """The body chunks an ASGI app sends, one per ``http.response.body`` (httpx's transport buffers)."""
    payload = json.dumps(request).encode()
    done = anyio.Event()
    chunks: list[bytes] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if message.get("body"):
                chunks.append(message["body"])
            if not message.get("more_body"):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        + [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("sim", 80),
    }
    await app(scope, receive, send)
    return chunks


async def test_event_delay_sends_each_event_separately_and_paced() -> None:
    started = time.monotonic()
    chunks = await asgi_chunks(create_app(event_delay=0.005), body(stream=True))
    elapsed = time.monotonic() - started
    events = parse_sse(b"".join(chunks).decode())
    assert len(chunks) == len(events) > 10
    assert elapsed >= 0.005 * (len(events) - 1) * 0.8


async def test_without_event_delay_the_stream_is_one_chunk() -> None:
    chunks = await asgi_chunks(create_app(), body(stream=True))
    assert len(chunks) == 1
    assert reassemble(parse_sse(chunks[0].decode()))["stop_reason"] == "end_turn"


async def test_same_request_gives_same_body() -> None:
    async with raw_client() as client:
        first = await client.post("/v1/messages", json=body(tools=[WEATHER]), headers=HEADERS)
        second = await client.post("/v1/messages", json=body(tools=[WEATHER]), headers=HEADERS)
        other = await client.post("/v1/messages", json=body("Something else"), headers=HEADERS)
    assert first.content == second.content
    assert first.headers["request-id"] != second.headers["request-id"]
    assert other.json()["id"] != first.json()["id"]


async def test_a_fresh_app_gives_the_same_body() -> None:
    assert (await post(body())).content == (await post(body())).content


# --- reply behaviour ----------------------------------------------------------------------------


async def test_stop_sequence_cuts_before_it() -> None:
    data = (await post(body("Hello there, how are you?", stop_sequences=["how", "You"]))).json()
    assert data["stop_reason"] == "stop_sequence"
    assert data["stop_sequence"] == "You"
    assert data["content"] == [{"type": "text", "text": "Hello! "}]


async def test_max_tokens_truncates_the_reply() -> None:
    data = (await post(body(max_tokens=5))).json()
    assert data["stop_reason"] == "max_tokens"
    assert data["usage"]["output_tokens"] == 5
    assert data["content"] == [{"type": "text", "text": "Hello! You said:"}]


async def test_prefill_is_continued_not_repeated_on_sonnet_4_5() -> None:
    messages = [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello! You said"}]},
    ]
    data = (await post(body(messages=messages))).json()
    assert data["stop_reason"] == "end_turn"
    text = data["content"][0]["text"]
    assert text.startswith(": Say hi.")
    assert "Hello! You said" not in text


async def test_prefill_is_refused_on_opus_4_6() -> None:
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello"}]
    response = await post({**body(messages=messages), "model": OPUS})
    assert response.status_code == 400
    assert error_of(response) == (
        "invalid_request_error",
        "This model does not support assistant message prefill. The conversation must end with a user message.",
    )


async def test_prefill_with_trailing_whitespace_is_refused() -> None:
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello "}]
    response = await post(body(messages=messages))
    assert response.status_code == 400
    assert error_of(response)[1] == "messages: final assistant content cannot end with trailing whitespace"


async def test_system_prompt_is_acknowledged() -> None:
    data = (await post(body(system="Answer like a pirate."))).json()
    assert "Answer like a pirate." in data["content"][0]["text"]


async def test_tool_choice_tool_calls_that_tool_without_preamble() -> None:
    data = (
        await post(body("get_time", tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_weather"}))
    ).json()
    assert [block["type"] for block in data["content"]] == ["tool_use"]
    assert data["content"][0]["name"] == "get_weather"


async def test_first_tool_is_called_when_none_is_named() -> None:
    data = (await post(body("What should I wear?", tools=[WEATHER, TIME]))).json()
    assert data["content"][0] == {"type": "text", "text": "I'll call get_weather."}
    assert [block["name"] for block in data["content"][1:]] == ["get_weather"]


async def test_tool_choice_none_answers_with_text() -> None:
    data = (await post(body("get_time please", tools=[TIME], tool_choice={"type": "none"}))).json()
    assert data["stop_reason"] == "end_turn" and data["content"][0]["type"] == "text"


async def test_tool_results_are_mentioned_in_the_reply() -> None:
    first = (await post(body("get_time please", tools=[TIME]))).json()
    tool_use = first["content"][-1]
    messages = [
        {"role": "user", "content": "get_time please"},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "12:34 UTC"}]},
    ]
    data = (await post(body(messages=messages, tools=[TIME]))).json()
    assert data["stop_reason"] == "end_turn"
    assert "12:34 UTC" in data["content"][0]["text"]


SHELL_STRING = {
    "name": "exec_command",
    "input_schema": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
        "required": ["cmd"],
    },
}
SHELL_ARRAY = {
    "name": "shell",
    "input_schema": {
        "type": "object",
        "properties": {
            "command": {"type": ["array", "null"], "items": {"type": "string"}},
            "timeout_ms": {"type": "number"},
        },
    },
}


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        (SHELL_STRING, {"cmd": "echo claude-proxy simulator"}),
        (SHELL_ARRAY, {"command": ["echo", "claude-proxy", "simulator"]}),
    ],
    ids=["string-cmd", "array-command"],
)
async def test_a_shell_like_tool_is_called_with_a_harmless_echo(tool: dict[str, Any], expected: dict[str, Any]) -> None:
    data = (await post(body("List the files, please.", tools=[tool]))).json()
    assert data["stop_reason"] == "tool_use"
    assert data["content"][-1]["input"] == expected


async def test_a_command_picked_from_an_enum_is_not_a_shell_command() -> None:
    service = {
        "name": "service",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string", "enum": ["start", "stop"]}},
            "required": ["command"],
        },
    }
    data = (await post(body("Restart it.", tools=[service]))).json()
    assert data["content"][-1]["input"] == {"command": "start"}


async def test_an_agent_loop_ends_with_text_after_the_tool_result() -> None:
    # What an agent (codex exec, an Agents SDK runner) does: call, run, send the result, stop when
    # the reply has no tool call. The second reply must be text and end_turn, with the same tools offered.
    question = {"role": "user", "content": "Run a command in the shell."}
    first = (await post(body(messages=[question], tools=[SHELL_STRING, TIME]))).json()
    call = first["content"][-1]
    assert (call["name"], call["input"]["cmd"]) == ("exec_command", "echo claude-proxy simulator")
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "claude-proxy simulator\n"}
    messages = [question, {"role": "assistant", "content": first["content"]}, {"role": "user", "content": [result]}]
    second = (await post(body(messages=messages, tools=[SHELL_STRING, TIME]))).json()
    assert second["stop_reason"] == "end_turn"
    assert [block["type"] for block in second["content"]] == ["text"]
    assert "claude-proxy simulator" in second["content"][0]["text"]


async def test_thinking_block_comes_first_with_a_signature() -> None:
    data = (await post(body(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}))).json()
    thinking, text = data["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] and thinking["signature"]
    assert text["type"] == "text"


async def test_json_schema_output_format_gives_json() -> None:
    request = body(output_config={"format": {"type": "json_schema", "schema": WEATHER["input_schema"]}})
    data = (await post(request)).json()
    assert json.loads(data["content"][0]["text"])["unit"] == "celsius"


# --- refusals -----------------------------------------------------------------------------------


async def test_temperature_is_refused() -> None:
    response = await post(body(temperature=0.2))
    assert response.status_code == 400
    assert error_of(response) == ("invalid_request_error", "temperature: Extra inputs are not permitted")


async def test_temperature_is_accepted_when_caps_list_it() -> None:
    table = ModelTable.with_overrides({"claude-haiku-4-5*": {"sampling": ["temperature"]}})
    assert (await post(body(temperature=0.2), table=table)).status_code == 200
    refused = await post(body(temperature=1.5), table=table)
    assert error_of(refused)[1] == "temperature: Input should be less than or equal to 1"
    assert error_of(await post(body(top_p=0.5), table=table))[1] == "top_p: Extra inputs are not permitted"


async def test_unknown_model_is_404_not_found() -> None:
    response = await post({**body(), "model": "gpt-4o"})
    assert response.status_code == 404
    assert error_of(response) == ("not_found_error", "model: gpt-4o")


async def test_missing_key_is_401() -> None:
    async with raw_client() as client:
        response = await client.post("/v1/messages", json=body(), headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    assert error_of(response)[0] == "authentication_error"


async def test_wrong_key_is_401_and_bearer_is_accepted() -> None:
    async with raw_client(api_key="secret") as client:
        wrong = await client.post("/v1/messages", json=body(), headers=HEADERS)
        right = await client.post(
            "/v1/messages", json=body(), headers={"authorization": "Bearer secret", "anthropic-version": "x"}
        )
    assert wrong.status_code == 401 and error_of(wrong)[0] == "authentication_error"
    assert right.status_code == 200


async def test_missing_anthropic_version_is_400() -> None:
    async with raw_client() as client:
        response = await client.post("/v1/messages", json=body(), headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert error_of(response) == ("invalid_request_error", "anthropic-version: header is required")


async def test_simulate_error_429_has_retry_after() -> None:
    response = await post(body("SIMULATE_ERROR 429 rate_limit_error"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert error_of(response)[0] == "rate_limit_error"


async def test_simulate_error_status_picks_the_usual_type() -> None:
    response = await post(body("SIMULATE_ERROR 500", stream=True))
    assert response.status_code == 500
    assert error_of(response)[0] == "api_error"


async def test_simulate_stream_error_sends_an_error_event() -> None:
    response = await post(body("SIMULATE_STREAM_ERROR", stream=True))
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[3:-1] == ["content_block_delta"] * 3
    name, data = events[-1]
    assert name == "error" and data["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert (await post(body("SIMULATE_STREAM_ERROR"))).status_code == 200


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": ""}]}],
            "messages: text content blocks must be non-empty",
            id="empty-text-block",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "txet", "text": "x"}]}],
            "messages.0.content.1.type: Input tag 'txet' found using 'type' does not match any of the expected "
            "tags: 'text', ",
            id="unknown-block-type",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": 7}]}],
            # The block's tag joins the path, as in the API's own errors.
            "messages.0.content.0.text.text: Input should be a valid string",
            id="text-not-a-string",
        ),
        pytest.param(
            [{"role": "user", "content": "hi", "name": "bob"}],
            "messages.0.name: Extra inputs are not permitted",
            id="extra-message-field",
        ),
        pytest.param([], "messages: at least one message is required", id="no-messages"),
        pytest.param(
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}],
                },
                {"role": "user", "content": "never mind"},
            ],
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. "
            "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
            id="tool-use-without-result",
        ),
        pytest.param(
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "1"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "2"},
                    ],
                },
            ],
            "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2. "
            "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
            id="tool-result-without-use",
        ),
    ],
)
async def test_invalid_messages_are_refused(messages: list[dict[str, Any]], message: str) -> None:
    response = await post(body(messages=messages, tools=[TIME]))
    assert response.status_code == 400
    kind, text = error_of(response)
    assert kind == "invalid_request_error"
    assert text.startswith(message)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_tokens": 200_000}, "max_tokens: 200000 > 64000, which is the maximum allowed number of output tokens"),
        ({"max_tokens": "10"}, "max_tokens: Input should be a valid integer"),
        ({"model": 5}, "model: Input should be a valid string"),
        ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
        ({"tool_choice": {"type": "maybe"}}, "tool_choice.type: Input tag 'maybe' found using 'type' does not match"),
        ({"stream": "yes"}, "stream: Input should be a valid boolean"),
        ({"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "tools.0.custom.name: String should"),
        ({"tools": [TIME, TIME]}, "tools: Tool names must be unique."),
        ({"system": [{"type": "text", "text": ""}]}, "system: text content blocks must be non-empty"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.enabled.budget_tokens: Input should"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "`max_tokens` must be greater than"),
        ({"thinking": {"type": "adaptive"}}, '"thinking.type.adaptive" is not supported for this model.'),
    ],
)
async def test_invalid_parameters_are_refused(extra: dict[str, Any], message: str) -> None:
    response = await post(body(**extra))
    assert response.status_code == 400
    assert error_of(response)[1].startswith(message)


async def test_missing_required_field_is_refused() -> None:
    request = body()
    del request["max_tokens"]
    assert error_of(await post(request))[1] == "max_tokens: Field required"


async def test_invalid_json_is_refused() -> None:
    async with raw_client() as client:
        response = await client.post("/v1/messages", content=b"{not json", headers=HEADERS)
    assert response.status_code == 400
    assert error_of(response)[0] == "invalid_request_error"


async def test_thinking_tool_loop_needs_the_thinking_block_back() -> None:
    messages = [
        {"role": "user", "content": "get_time please"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}]},
    ]
    request = body(
        messages=messages, tools=[TIME], max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    response = await post(request)
    assert response.status_code == 400
    assert error_of(response)[1].startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`."
    )


async def test_count_tokens_refuses_unknown_model_and_fields() -> None:
    request = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}
    assert (await post(request, "/v1/messages/count_tokens")).json() == {"input_tokens": 1}
    assert (await post({**request, "model": "o3"}, "/v1/messages/count_tokens")).status_code == 404
    refused = await post({**request, "max_tokens": 5}, "/v1/messages/count_tokens")
    assert error_of(refused)[1] == "max_tokens: Extra inputs are not permitted"


# --- properties of the pure reply functions ----------------------------------------------------

TABLE = ModelTable.with_overrides()
words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=80)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    text=words.filter(lambda t: t.strip() != "" and "SIMULATE" not in t),
    max_tokens=st.integers(min_value=0, max_value=80),
    stops=st.lists(st.sampled_from(["said", "!", "e", "simulator", "zzz"]), max_size=2),
    with_tools=st.booleans(),
)
def test_stream_and_message_agree_for_any_request(
    text: str, max_tokens: int, stops: list[str], with_tools: bool
) -> None:
    raw = body(text, max_tokens=max_tokens, stop_sequences=stops, **({"tools": [WEATHER, TIME]} if with_tools else {}))
    request, _, _ = validate_create(raw, TABLE)
    message = build_message(request, request_digest(request), input_tokens(request))
    Message.model_validate(message)
    assert message["usage"]["output_tokens"] <= max_tokens
    if message["stop_reason"] == "stop_sequence":
        assert message["stop_sequence"] in stops
    for block in message["content"]:
        if block["type"] == "text":
            assert block["text"] and not any(stop in block["text"] for stop in stops)
    events = parse_sse(b"".join(stream_events(message)).decode())
    assert reassemble(events) == message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "text", "name", "id", "input", "content", "tool_use_id", "role", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
FIELDS = [
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "stop_sequences",
    "metadata",
    "output_config",
    "stream",
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=st.sampled_from([*FIELDS, "content", "block"]), value=json_values)
def test_arbitrary_json_is_refused_or_answered_never_crashes(field: str, value: Any) -> None:
    raw = body("Use get_time", tools=[TIME])
    if field == "content":
        raw["messages"][0]["content"] = value
    elif field == "block":
        raw["messages"][0]["content"] = [{"type": "text", "text": "hi"}, value]
    else:
        raw[field] = value
    try:
        request, _, _ = validate_create(raw, TABLE)
    except SimError as exc:
        assert exc.status in (400, 404) and exc.message
        return
    message = build_message(request, request_digest(request), input_tokens(request))
    Message.model_validate(message)
    assert reassemble(parse_sse(b"".join(stream_events(message)).decode())) == message


# --- the SDK as the validator's oracle -----------------------------------------------------------
#
# The simulator checks requests against its own tables (proxy/simulator/validate.py); the official
# SDK's request types, through tests/anthropic_schema.py, say whether they got them right. That
# helper validates in pydantic's lax mode and ignores unknown fields below the top level, so the
# corpus sticks to bodies whose verdict the SDK's types decide: no nested unknown fields, no values
# lax mode would coerce ("10" for an int), and nothing the API's rules beyond the types refuse.

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
PIXEL = "iVBORw0KGgo="
PDF = "JVBERi0xLjQK"


def sdk_accepts(request: dict[str, Any]) -> bool:
    try:
        assert_valid_messages_request(copy.deepcopy(request))
    except (AssertionError, ValidationError):
        return False
    return True


def simulator_accepts(request: dict[str, Any]) -> bool:
    try:
        validate_create(copy.deepcopy(request), TABLE)
    except SimError as exc:
        assert exc.status == 400, exc.message
        return False
    return True


def image(media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": PIXEL}}


def ask(*blocks: Any, **extra: Any) -> dict[str, Any]:
    """A request whose one user message holds ``blocks`` (after a leading text block)."""
    content = [{"type": "text", "text": "Look at this"}, *blocks]
    return {"model": HAIKU, "max_tokens": 256, "messages": [{"role": "user", "content": content}], **extra}


def answered(use: Any = None, result: Any = None, **extra: Any) -> dict[str, Any]:
    """A request with one tool call (``use``, default get_time) and its result (``result``)."""
    use = use if use is not None else {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
    result = result if result is not None else {"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}
    messages = [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}, use]},
        {"role": "user", "content": [result]},
    ]
    return {"model": HAIKU, "max_tokens": 256, "messages": messages, "tools": [TIME], **extra}


def result_of(content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": "toolu_1", "content": content, **extra}


ORACLE_CASES: list[Any] = [
    # accepted
    pytest.param(body(model=HAIKU), True, id="plain"),
    *(pytest.param(ask(image(kind)), True, id=f"image-{kind}") for kind in IMAGE_TYPES),
    pytest.param(
        ask({"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}), True, id="image-url"
    ),
    pytest.param(
        ask(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                "title": "Report",
                "context": "Q3",
                "citations": {"enabled": True},
            }
        ),
        True,
        id="document-pdf",
    ),
    pytest.param(
        ask({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}),
        True,
        id="document-text",
    ),
    pytest.param(
        ask({"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}), True, id="doc-url"
    ),
    pytest.param(
        ask({"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}}),
        True,
        id="document-content",
    ),
    pytest.param(answered(), True, id="tool-result-string"),
    pytest.param(answered(result={"type": "tool_result", "tool_use_id": "toolu_1"}), True, id="tool-result-bare"),
    pytest.param(
        answered(result=result_of([{"type": "text", "text": "noon"}, image("image/gif")], is_error=True)),
        True,
        id="tool-result-blocks",
    ),
    pytest.param(
        {
            **answered(),
            "messages": [
                {"role": "user", "content": "Think first"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"},
                        {"type": "redacted_thinking", "data": "b3BhcXVl"},
                        {"type": "text", "text": "Done."},
                    ],
                },
                {"role": "user", "content": "Thanks"},
            ],
        },
        True,
        id="thinking-blocks",
    ),
    pytest.param(
        body(
            model=HAIKU,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            tools=[{**TIME, "type": "custom", "description": "Now.", "strict": True}, {**WEATHER, "type": None}],
            tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
            metadata={"user_id": None},
            output_config={"effort": "low", "format": {"type": "json_schema", "schema": {"type": "object"}}},
            stop_sequences=["END"],
            service_tier="standard_only",
            stream=True,
        ),
        True,
        id="options",
    ),
    pytest.param(body(model=HAIKU, thinking={"type": "disabled"}, tool_choice={"type": "none"}), True, id="off"),
    # refused: the SDK's types decide
    pytest.param(ask(image("image/bmp")), False, id="image-media-type"),
    pytest.param(ask({"type": "image", "source": {"type": "path", "path": "/a.png"}}), False, id="image-source-type"),
    pytest.param(ask({"type": "image", "source": {"type": "url"}}), False, id="image-url-missing"),
    pytest.param(
        ask({"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}),
        False,
        id="document-base64-not-pdf",
    ),
    pytest.param(
        ask({"type": "document", "source": {"type": "text", "media_type": "text/plain"}}), False, id="doc-text-no-data"
    ),
    pytest.param(ask({"type": "txet", "text": "x"}), False, id="unknown-block-type"),
    pytest.param(ask({"text": "x"}), False, id="block-without-type"),
    pytest.param(ask("just a string"), False, id="block-not-an-object"),
    pytest.param(ask({"type": "text", "text": 7}), False, id="text-not-a-string"),
    pytest.param(
        answered(use={"type": "tool_use", "id": "toolu_1", "name": "get_time"}), False, id="tool-use-without-input"
    ),
    pytest.param(
        answered(use={"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": ["x"]}),
        False,
        id="tool-use-input-list",
    ),
    pytest.param(answered(result=result_of(7)), False, id="tool-result-content-int"),
    pytest.param(
        answered(result=result_of([{"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}])),
        False,
        id="tool-result-holds-tool-use",
    ),
    pytest.param(answered(result=result_of("noon", is_error="maybe")), False, id="tool-result-is-error"),
    pytest.param(answered(result={"type": "tool_result", "content": "noon"}), False, id="tool-result-without-id"),
    pytest.param(
        {
            **body(model=HAIKU),
            "messages": [
                {"role": "user", "content": "Think"},
                {
                    "role": "assistant",
                    "content": [{"type": "thinking", "thinking": "Hmm."}, {"type": "text", "text": "."}],
                },
                {"role": "user", "content": "Go on"},
            ],
        },
        False,
        id="thinking-without-signature",
    ),
    pytest.param(
        {
            **body(model=HAIKU),
            "messages": [
                {"role": "user", "content": "Think"},
                {"role": "assistant", "content": [{"type": "redacted_thinking", "data": 5}]},
                {"role": "user", "content": "Go on"},
            ],
        },
        False,
        id="redacted-thinking-data",
    ),
    pytest.param(body(model=HAIKU, messages=[{"role": "bot", "content": "hi"}]), False, id="unknown-role"),
    pytest.param(body(model=HAIKU, messages=[{"content": "hi"}]), False, id="missing-role"),
    pytest.param(body(model=HAIKU, messages=[{"role": "user", "content": 7}]), False, id="content-int"),
    pytest.param(body(model=HAIKU, messages=[{"role": "user"}]), False, id="missing-content"),
    pytest.param({"model": HAIKU, "messages": [{"role": "user", "content": "hi"}]}, False, id="no-max-tokens"),
    pytest.param(body(model=HAIKU, max_tokens="ten"), False, id="max-tokens-string"),
    pytest.param(body(model=None), False, id="model-null"),
    pytest.param(body(model=HAIKU, temperature=0.5), False, id="unknown-field"),
    pytest.param(body(model=HAIKU, tools=[TIME], tool_choice={"type": "tool"}), False, id="tool-choice-no-name"),
    pytest.param(body(model=HAIKU, tool_choice={"type": "maybe"}), False, id="tool-choice-type"),
    pytest.param(
        body(model=HAIKU, tool_choice={"type": "auto", "disable_parallel_tool_use": "never"}), False, id="dptu"
    ),
    pytest.param(body(model=HAIKU, thinking={"type": "enabled"}), False, id="thinking-no-budget"),
    pytest.param(body(model=HAIKU, thinking={"type": "sometimes"}), False, id="thinking-type"),
    pytest.param(
        body(model=HAIKU, thinking={"type": "enabled", "budget_tokens": 2048, "display": "all"}), False, id="disp"
    ),
    pytest.param(body(model=HAIKU, output_config={"format": {"type": "xml", "schema": {}}}), False, id="output-format"),
    pytest.param(body(model=HAIKU, output_config={"effort": "extreme"}), False, id="output-effort"),
    pytest.param(body(model=HAIKU, metadata={"user_id": 5}), False, id="metadata-user-id"),
    pytest.param(body(model=HAIKU, metadata="u1"), False, id="metadata-string"),
    pytest.param(body(model=HAIKU, stop_sequences="END"), False, id="stop-sequences-string"),
    pytest.param(body(model=HAIKU, stop_sequences=[1]), False, id="stop-sequences-ints"),
    pytest.param(body(model=HAIKU, system=5), False, id="system-int"),
    pytest.param(body(model=HAIKU, system=[image()]), False, id="system-image"),
    pytest.param(body(model=HAIKU, service_tier="gold"), False, id="service-tier"),
    pytest.param(body(model=HAIKU, tools=[{"name": "x"}]), False, id="tool-without-schema"),
    pytest.param(body(model=HAIKU, tools=[{**TIME, "type": "function"}]), False, id="tool-type"),
    pytest.param(body(model=HAIKU, tools=[{**TIME, "description": 5}]), False, id="tool-description"),
    pytest.param(body(model=HAIKU, tools=TIME), False, id="tools-object"),
]


@pytest.mark.parametrize(("request_body", "accepted"), ORACLE_CASES)
def test_the_simulator_and_the_sdk_agree_on(request_body: dict[str, Any], accepted: bool) -> None:
    assert sdk_accepts(request_body) is accepted, "the corpus entry is mislabelled"
    assert simulator_accepts(request_body) is accepted


# One request with every block type a gateway sends; each mutation below changes one value in it to a
# value of another JSON type, or deletes one field, and the two must still agree.
RICH: dict[str, Any] = {
    "model": HAIKU,
    "max_tokens": 2048,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "5m"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look at these, then use get_time"},
                *(image(kind) for kind in IMAGE_TYPES),
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    "title": "Report",
                    "context": "Q3",
                    "citations": {"enabled": True},
                },
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
                {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "b3BhcXVl"},
                {
                    "type": "text",
                    "text": "Calling.",
                    "citations": [
                        {
                            "type": "char_location",
                            "cited_text": "R",
                            "document_index": 0,
                            "document_title": None,
                            "start_char_index": 0,
                            "end_char_index": 1,
                        }
                    ],
                },
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"tz": "UTC"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": False,
                    "content": [{"type": "text", "text": "sunny"}, image("image/gif")],
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ],
    "tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}, "strict": True}, {**TIME, "type": "custom"}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
    "thinking": {"type": "enabled", "budget_tokens": 1024, "display": "summarized"},
    "metadata": {"user_id": "u1"},
    "output_config": {"effort": "high"},
    "stop_sequences": ["END"],
    "service_tier": "auto",
}
REPLACEMENTS: tuple[Any, ...] = (None, 7, "zzz", [7], {"x": 1})
DELETE = object()


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found = []
    for key, item in items:
        found += [(*prefix, key), *_paths(item, (*prefix, key))]
    return found


def _decided_by_types(path: tuple[str | int, ...]) -> bool:
    # A string is valid content too, and then the tool pairing decides; a tool's input_schema is any
    # object to the SDK, while the API wants {"type": "object"}.
    return not (path[0] == "messages" and len(path) == 3) and path[-2:] != ("input_schema", "type")


def _json_type(value: Any) -> type:
    return type(None) if value is None else type(value)


@pytest.mark.parametrize(
    "path", [path for path in _paths(RICH) if _decided_by_types(path)], ids=lambda p: ".".join(map(str, p))
)
def test_the_simulator_and_the_sdk_agree_on_each_mutation_at(path: tuple[str | int, ...]) -> None:
    assert sdk_accepts(RICH) and simulator_accepts(RICH)
    original: Any = RICH
    for part in path:
        original = original[part]
    changes = [value for value in REPLACEMENTS if _json_type(value) is not _json_type(original)]
    if isinstance(path[-1], str):
        changes.append(DELETE)
    disagreements = []
    for change in changes:
        mutated = copy.deepcopy(RICH)
        parent = mutated
        for part in path[:-1]:
            parent = parent[part]
        if change is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = change
        sdk, simulator = sdk_accepts(mutated), simulator_accepts(mutated)
        if sdk != simulator:
            disagreements.append(f"{'delete' if change is DELETE else repr(change)}: sdk {sdk}, simulator {simulator}")
    assert not disagreements


def _tags(annotation: Any) -> list[str]:
    """The string literals in a (possibly optional) ``Literal[...]`` annotation."""
    if get_origin(annotation) is Literal:
        return [arg for arg in get_args(annotation) if isinstance(arg, str)]
    return [tag for arg in get_args(annotation) for tag in _tags(arg)]


def sdk_variants(union: Any, key: str = "type") -> dict[str, frozenset[str]]:
    """Each tag of an SDK union, request and response forms alike, with the fields it allows."""
    found: dict[str, set[str]] = {}
    pending = [union]
    while pending:
        member = pending.pop()
        if get_origin(member) in (Annotated, Union, types.UnionType):
            pending.extend(get_args(member)[:1] if get_origin(member) is Annotated else get_args(member))
        elif isinstance(member, type) and issubclass(member, BaseModel):
            for tag in _tags(member.model_fields[key].annotation):
                found.setdefault(tag, set()).update(member.model_fields)
        elif member is not type(None):
            for tag in _tags(get_type_hints(member)[key]):
                found.setdefault(tag, set()).update(member.__required_keys__ | member.__optional_keys__)
    return {tag: frozenset(fields) for tag, fields in found.items()}


def simulator_variants(union: validate.Tagged) -> dict[str, frozenset[str]]:
    return {tag: shape.fields for tag, shape in union.branches.items()}


def test_the_tables_name_the_fields_the_sdk_does() -> None:
    from anthropic.types import (
        message_content_param,
        message_count_tokens_params,
        message_create_params,
        message_param,
        text_block_param,
        text_citation,
        thinking_config_param,
        tool_choice_param,
        tool_result_block_param,
        tool_union_param,
    )

    def keys(typed_dict: Any) -> frozenset[str]:
        return frozenset(typed_dict.__required_keys__ | typed_dict.__optional_keys__)

    assert validate.CREATE.fields | {"stream"} == keys(message_create_params.MessageCreateParamsNonStreaming)
    assert validate.COUNT_TOKENS.fields == keys(message_count_tokens_params.MessageCountTokensParams)
    content_union = get_args(get_args(message_content_param.MessageContentParam)[1])[0]
    assert simulator_variants(validate.BLOCK) == sdk_variants(content_union)
    assert simulator_variants(validate.MESSAGE) == sdk_variants(message_param.MessageParam, key="role")
    assert simulator_variants(validate.TOOL) == sdk_variants(tool_union_param.ToolUnionParam)
    assert simulator_variants(validate.TOOL_CHOICE) == sdk_variants(tool_choice_param.ToolChoiceParam)
    assert simulator_variants(validate.THINKING_CONFIG) == sdk_variants(thinking_config_param.ThinkingConfigParam)
    assert simulator_variants(validate.TOOL_RESULT_CONTENT) == sdk_variants(tool_result_block_param.Content)
    citations = get_args(get_args(get_type_hints(text_block_param.TextBlockParam)["citations"])[0])[0]
    assert simulator_variants(validate.CITATION) == {
        tag: sdk_variants(citations)[tag] | sdk_variants(text_citation.TextCitation)[tag]
        for tag in sdk_variants(citations)
    }


async def test_every_model_the_simulator_accepts_is_listed_or_resolves_to_a_listed_one() -> None:
    # The simulator's own contract: each id it accepts is listed by GET /v1/models (an alias such as
    # claude-haiku-4-5 as its dated id), and retrieving it answers the table's output ceiling. Which
    # ids the installed SDK names changes with its releases (2.15 dropped two), so that is not compared.
    async with raw_client() as client:
        every_stage = [("lifecycle[]", stage) for stage in ("active", "deprecated", "retired")]
        page = (await client.get("/v1/models", params=[("limit", "1000"), *every_stage], headers=HEADERS)).json()
        listed = [info["id"] for info in page["data"]]
        assert len(listed) == len(set(listed))
        table = ModelTable.with_overrides()
        for model_id in validate.MODEL_IDS:
            info = (await client.get(f"/v1/models/{model_id}", headers=HEADERS)).json()
            assert info["id"] in listed and info["id"].startswith(model_id)
            assert info["max_tokens"] == table.capabilities(model_id).max_output_tokens


def test_the_simulator_does_not_import_the_sdks() -> None:
    code = (
        "import proxy.simulator, sys; from proxy.simulator import create_app; create_app(); "
        "assert 'anthropic' not in sys.modules; assert 'openai' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        pytest.param(
            ask(image("image/bmp")),
            "messages.0.content.1.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'",
            id="media-type",
        ),
        pytest.param(
            ask({"type": "txet", "text": "x"}),
            "messages.0.content.1.type: Input tag 'txet' found using 'type' does not match any of the expected "
            "tags: 'text', 'image', 'document', ",
            id="unknown-block",
        ),
        pytest.param(
            ask({"text": "x"}), "messages.0.content.1: Unable to extract tag using discriminator 'type'", id="no-type"
        ),
        pytest.param(
            ask({"type": "text", "text": "x", "cite": []}),
            "messages.0.content.1.text.cite: Extra inputs are not permitted",
            id="extra-block-field",
        ),
        pytest.param(
            ask(image() | {"source": {**image()["source"], "name": "a.png"}}),
            "messages.0.content.1.image.source.base64.name: Extra inputs are not permitted",
            id="extra-source-field",
        ),
        pytest.param(
            answered(result=result_of([{"type": "text", "text": 5}])),
            "messages.2.content.0.tool_result.content.0.text.text: Input should be a valid string",
            id="tool-result-text",
        ),
        pytest.param(
            answered(result=result_of("noon", is_error="maybe")),
            "messages.2.content.0.tool_result.is_error: Input should be a valid boolean",
            id="is-error",
        ),
        pytest.param(
            answered(use={"type": "tool_use", "id": "toolu_1", "name": "get_time"}),
            "messages.1.content.1.tool_use.input: Field required",
            id="tool-use-input",
        ),
        pytest.param(
            body(messages=[{"role": "bot", "content": "hi"}]),
            "messages.0.role: Input tag 'bot' found using 'role' does not match any of the expected tags: 'user', "
            "'assistant', 'system'",
            id="role",
        ),
        pytest.param(
            body(messages=[{"role": "system", "content": [image()]}]),
            "messages.0.content.0.type: Input should be 'text'",
            id="system-message-image",
        ),
        pytest.param(body(tools=[{"name": "x"}]), "tools.0.custom.input_schema: Field required", id="tool-schema"),
        pytest.param(
            body(tools=[{**TIME, "parameters": {}}]),
            "tools.0.custom.parameters: Extra inputs are not permitted",
            id="tool-extra",
        ),
        pytest.param(
            body(tools=[{"type": "web_search_20250305", "name": "search"}]),
            "tools.0.web_search_20250305.name: Input should be 'web_search'",
            id="server-tool-name",
        ),
        pytest.param(body(metadata={"user": "u1"}), "metadata.user: Extra inputs are not permitted", id="metadata"),
        pytest.param(
            body(thinking={"type": "enabled", "budget_tokens": "2048"}),
            "thinking.enabled.budget_tokens: Input should be a valid integer",
            id="budget",
        ),
        pytest.param(
            body(tool_choice={"type": "tool", "name": "get_time", "parallel": False}, tools=[TIME]),
            "tool_choice.tool.parallel: Extra inputs are not permitted",
            id="tool-choice",
        ),
        pytest.param(
            body(output_config={"format": {"type": "json_schema"}}),
            "output_config.format.schema: Field required",
            id="output-format",
        ),
        pytest.param(
            body(system=[{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]),
            "system.0.cache_control.type: Input should be 'ephemeral'",
            id="cache-control",
        ),
        pytest.param(
            body(messages=[{"role": "user", "content": 7}]),
            "messages.0.content: Input should be a valid string or a valid list",
            id="content",
        ),
    ],
)
def test_schema_errors_read_like_the_apis(request_body: dict[str, Any], message: str) -> None:
    with pytest.raises(SimError) as caught:
        validate_create(request_body, TABLE)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)


async def test_count_tokens_checks_its_own_fields() -> None:
    count = "/v1/messages/count_tokens"
    request = {"model": HAIKU, "messages": [{"role": "user", "content": [image("image/tiff")]}]}
    refused = await post(request, count)
    assert error_of(refused)[1].startswith("messages.0.content.0.image.source.base64.media_type: Input should be")
    refused = await post({**request, "messages": [{"role": "user", "content": "hi"}], "stream": True}, count)
    assert error_of(refused)[1] == "stream: Extra inputs are not permitted"
