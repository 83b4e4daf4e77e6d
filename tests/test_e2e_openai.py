"""End to end: the real gateway process, in front of the simulator process, driven by the official
`openai` client exactly as a user would drive it."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import npm, servers

CLIENT_KEY = "sk-e2e-client-key"
MODEL = "claude-haiku-4-5"
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with servers.simulator() as upstream, servers.gateway(upstream, CLIENT_KEY) as url:
        yield url


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway_url}/v1", max_retries=0)


def test_basic_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}])
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content and "Say hello" in choice.message.content
    assert completion.usage and completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_system_and_developer_messages_are_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hi"},
        ],
    )
    assert completion.choices[0].message.content


def test_multi_turn_with_synthetic_assistant_turn(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Nice to meet you, Ada."},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert "What is my name?" in (completion.choices[0].message.content or "")


def test_prefill_continues_the_assistant_turn(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Start with a brace"},
            {"role": "assistant", "content": "{  \n"},
        ],
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"


def test_prefill_on_a_model_that_refuses_it_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="claude-opus-4-6",
            messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well"}],
        )
    assert raised.value.status_code == 400
    assert "prefill" in str(raised.value).lower()


@pytest.mark.parametrize("url", [f"data:image/png;base64,{PNG}", "https://example.com/cat.png"], ids=["data", "http"])
def test_image_parts(client: openai.OpenAI, url: str) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content


def test_bad_image_data_is_400_naming_the_part(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
                }
            ],
        )
    body: Any = raised.value.body
    assert body["param"] == "messages[0].content[0].image_url.url"


def test_two_parallel_tool_calls_and_results_round_trip(client: openai.OpenAI) -> None:
    question = {"role": "user", "content": "Use get_weather and get_time for Paris."}
    first = client.chat.completions.create(model=MODEL, messages=[question], tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls if c.type == "function"] == ["get_weather", "get_time"]
    for call in calls:
        assert call.type == "function"
        assert isinstance(json.loads(call.function.arguments), dict)

    history: list[Any] = [question, choice.message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": call.id, "content": f"result-{call.id[-4:]}"} for call in calls]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    for call in calls:
        assert f"result-{call.id[-4:]}" in second.choices[0].message.content


def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Use get_weather and get_time for Paris."}],
        tools=TOOLS,
        parallel_tool_calls=False,
    )
    assert len(completion.choices[0].message.tool_calls or []) == 1


def test_stop_sequence(client: openai.OpenAI) -> None:
    unstopped = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}])
    text = unstopped.choices[0].message.content or ""
    word = text.split()[3]
    stopped = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], stop=[word]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(word)]


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a long story"}], max_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage and completion.usage.completion_tokens <= 3


def test_bad_key_is_401(gateway_url: str) -> None:
    bad = openai.OpenAI(api_key="not-the-key", base_url=f"{gateway_url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert any(i.startswith(MODEL) for i in ids)


# --- streaming ----------------------------------------------------------------------

STREAM_CASES: dict[str, dict[str, Any]] = {
    "text": {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about streams"}]},
    "tools": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Use get_weather and get_time for Paris."}],
        "tools": TOOLS,
    },
}


def reassemble(chunks: list[Any]) -> dict[str, Any]:
    """Join streamed deltas the way a client does: text by concatenation, tool calls by index."""
    content = ""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                if call.function:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return {
        "content": content or None,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
    }


def non_streaming(client: openai.OpenAI, request: dict[str, Any]) -> dict[str, Any]:
    choice = client.chat.completions.create(**request).choices[0]
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in choice.message.tool_calls or []
        if c.type == "function"
    ]
    return {"content": choice.message.content, "tool_calls": calls, "finish_reason": choice.finish_reason}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_stream_reassembles_to_the_non_streaming_answer(client: openai.OpenAI, case: str) -> None:
    request = STREAM_CASES[case]
    chunks = list(client.chat.completions.create(**request, stream=True))
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)
    assert reassemble(chunks) == non_streaming(client, request)


def test_stream_usage_only_when_asked_on_a_final_empty_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(**STREAM_CASES["text"], stream=True, stream_options={"include_usage": True})
    )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    usage = with_usage[0].usage
    assert usage is not None
    expected = client.chat.completions.create(**STREAM_CASES["text"]).usage
    assert expected is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
    )


def test_stream_error_before_first_byte_is_a_plain_http_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="claude-opus-4-6",
            messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well"}],
            stream=True,
        )


# --- the openai npm client -------------------------------------------------------------

JS_DIR = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def node_client() -> Path:
    npm.installed(JS_DIR, "openai")
    return JS_DIR / "stream_check.mjs"


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_npm_client_stream_helper_reassembles_the_same_answer(
    client: openai.OpenAI, gateway_url: str, node_client: Path, case: str
) -> None:
    request = STREAM_CASES[case]
    result = subprocess.run(
        ["node", str(node_client), f"{gateway_url}/v1", CLIENT_KEY, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    final = json.loads(result.stdout)
    choice = final["choices"][0]
    calls = [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in choice["message"].get("tool_calls") or []
    ]
    got = {
        "content": choice["message"].get("content"),
        "tool_calls": calls,
        "finish_reason": choice["finish_reason"],
    }
    assert got == non_streaming(client, request)


# --- beyond parity ------------------------------------------------------------------------


def test_n_choices_non_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    single = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert completion.usage and single.usage
    assert completion.usage.completion_tokens == 2 * single.usage.completion_tokens


def test_n_choices_streamed_are_interleaved_by_index(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert sorted(texts) == [0, 1] and texts[0] == texts[1] and texts[0]
    assert finishes == {0: "stop", 1: "stop"}
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_json_schema_response_format_yields_matching_json(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    completion = client.chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Biggest city in France?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    parsed = json.loads(completion.choices[0].message.content or "")
    assert set(parsed) == {"city", "population"}


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_with_small_budget_is_valid_and_shows_reasoning(client: openai.OpenAI, effort: str) -> None:
    completion = client.chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Think, then answer: 2+2?"}],
        reasoning_effort=effort,  # type: ignore[arg-type]
        max_completion_tokens=3000,
    )
    message: Any = completion.choices[0].message
    assert message.content
    assert getattr(message, "reasoning_content", None)


def test_official_anthropic_client_plain_and_streamed(gateway_url: str) -> None:
    import anthropic

    client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=gateway_url, max_retries=0)
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=200, messages=[{"role": "user", "content": "Hello native"}]
    )
    assert message.content[0].type == "text" and "Hello native" in message.content[0].text
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=200, messages=[{"role": "user", "content": "Hello native"}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.text for b in final.content if b.type == "text"] == [message.content[0].text]
    count = client.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hi"}])
    assert count.input_tokens > 0
