import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from proxy.models import ModelTable
from proxy.translate.chat.request import to_messages_request
from proxy.translate.chat.response import (
    completion_id,
    finish_reason,
    merge_completions,
    merge_usage,
    to_chat_completion,
    to_openai_usage,
)
from proxy.usage import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "chat" / "response"
CASES = sorted(p.name.removesuffix(".message.json") for p in FIXTURES.glob("*.message.json"))
CREATED = 1764097200

# Fields outside the OpenAI schema that the gateway adds on purpose: reasoning_content (design §3),
# thinking_blocks (README, "Thinking round trip") and, in stream deltas, annotations.
EXTRA_FIELDS = frozenset({"reasoning_content", "thinking_blocks", "annotations"})


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def unknown_fields(model: BaseModel, path: str = "$") -> list[str]:
    """Keys the SDK model does not declare. The openai types accept extra keys silently, so
    validation alone would not catch a misspelt field."""
    found = [f"{path}.{key}" for key in (model.model_extra or {}) if key not in EXTRA_FIELDS]
    for name in type(model).model_fields:
        found += _unknown_in(getattr(model, name), f"{path}.{name}")
    return found


def _unknown_in(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return unknown_fields(value, path)
    if isinstance(value, list):
        return [field for i, item in enumerate(value) for field in _unknown_in(item, f"{path}[{i}]")]
    return []


def assert_valid_chat_completion(result: dict[str, Any]) -> ChatCompletion:
    parsed = ChatCompletion.model_validate(result, strict=True)
    assert unknown_fields(parsed) == []
    return parsed


@pytest.mark.parametrize("case", CASES)
def test_fixture_is_a_valid_anthropic_message(case: str) -> None:
    Message.model_validate(load(f"{case}.message.json"))


@pytest.mark.parametrize("case", CASES)
def test_message_translates_to_golden_chat_completion(case: str) -> None:
    result = to_chat_completion(load(f"{case}.message.json"), created=CREATED)
    assert result == load(f"{case}.expected.json")


@pytest.mark.parametrize("case", CASES)
def test_translation_is_a_valid_openai_chat_completion(case: str) -> None:
    assert_valid_chat_completion(to_chat_completion(load(f"{case}.message.json"), created=CREATED))


def test_golden_fixtures_cover_every_stop_reason() -> None:
    reasons = {load(f"{case}.message.json")["stop_reason"] for case in CASES}
    assert reasons == {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    }


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_finish_reason_maps_each_stop_reason(stop_reason: str, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_finish_reason_of_an_unknown_stop_reason_is_stop() -> None:
    assert finish_reason("some_future_reason") == "stop"


def test_finish_reason_of_none_is_none() -> None:
    assert finish_reason(None) is None


def test_completion_id_replaces_the_msg_prefix() -> None:
    assert completion_id("msg_013Zva2CMHLNnXjNJJKqJ2EF") == "chatcmpl-013Zva2CMHLNnXjNJJKqJ2EF"


def test_completion_id_keeps_an_id_without_the_msg_prefix() -> None:
    assert completion_id("abc123") == "chatcmpl-abc123"


def test_usage_prompt_tokens_sum_input_and_both_cache_counts() -> None:
    usage = to_openai_usage(
        Usage.from_anthropic(
            {
                "input_tokens": 12,
                "cache_creation_input_tokens": 248,
                "cache_read_input_tokens": 1800,
                "output_tokens": 24,
            }
        )
    )
    assert usage["prompt_tokens"] == 2060
    assert usage["completion_tokens"] == 24
    assert usage["total_tokens"] == 2084
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1800, "cache_write_tokens": 248}


def test_usage_treats_missing_or_null_cache_counts_as_zero() -> None:
    usage = to_openai_usage(
        Usage.from_anthropic({"input_tokens": 5, "cache_read_input_tokens": None, "output_tokens": 7})
    )
    assert usage["prompt_tokens"] == 5
    assert usage["total_tokens"] == 12
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_usage_reasoning_tokens_come_from_thinking_tokens() -> None:
    usage = to_openai_usage(
        Usage.from_anthropic({"input_tokens": 1, "output_tokens": 96, "output_tokens_details": {"thinking_tokens": 71}})
    )
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 71}


def test_usage_reasoning_tokens_are_zero_without_output_details() -> None:
    usage = to_openai_usage(
        Usage.from_anthropic({"input_tokens": 1, "output_tokens": 2, "output_tokens_details": None})
    )
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}


def _message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }


def test_unknown_block_types_are_skipped() -> None:
    result = to_chat_completion(
        _message([{"type": "hologram", "payload": "?"}, {"type": "text", "text": "ok"}]), created=CREATED
    )
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "ok", "refusal": None}


def test_text_blocks_are_concatenated_without_separator() -> None:
    result = to_chat_completion(
        _message([{"type": "text", "text": "Hello"}, {"type": "text", "text": ", world"}]), created=CREATED
    )
    assert result["choices"][0]["message"]["content"] == "Hello, world"


def test_content_is_null_when_there_is_no_text_block() -> None:
    result = to_chat_completion(_message([]), created=CREATED)
    assert result["choices"][0]["message"]["content"] is None
    assert_valid_chat_completion(result)


def test_tool_calls_and_reasoning_content_are_absent_when_not_produced() -> None:
    reply = to_chat_completion(_message([{"type": "text", "text": "hi"}]), created=CREATED)["choices"][0]
    assert "tool_calls" not in reply["message"]
    assert "reasoning_content" not in reply["message"]


def test_tool_arguments_are_compact_json_with_unicode_kept() -> None:
    block = {"type": "tool_use", "id": "toolu_01X", "name": "say", "input": {"text": "café ☕", "n": 1.5}}
    result = to_chat_completion(_message([block], "tool_use"), created=CREATED)
    arguments = result["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert arguments == '{"text":"café ☕","n":1.5}'


def test_model_and_created_come_from_the_message_and_the_caller() -> None:
    result = to_chat_completion(_message([]), created=42)
    assert result["model"] == "claude-haiku-4-5-20251001"
    assert result["created"] == 42


# --- thinking round trip, web search annotations, n > 1


def test_thinking_blocks_keep_order_and_signatures() -> None:
    message = load("thinking_text.message.json")
    reply = to_chat_completion(message, created=CREATED)["choices"][0]["message"]
    thinking = [block for block in message["content"] if block["type"] in ("thinking", "redacted_thinking")]
    assert reply["thinking_blocks"] == thinking


def test_thinking_blocks_survive_the_openai_sdk_and_come_back_as_blocks() -> None:
    """What an OpenAI client does: parse the answer, append `message.model_dump()` to its history,
    run the tool, send the conversation again. The signed thinking must reach Claude intact."""
    message = {
        **load("tool_use_only.message.json"),
        "content": [
            {"type": "thinking", "thinking": "Need the weather.", "signature": "c2lnbmF0dXJl"},
            *load("tool_use_only.message.json")["content"],
        ],
    }
    parsed = assert_valid_chat_completion(to_chat_completion(message, created=CREATED))
    echoed = parsed.choices[0].message.model_dump(exclude_none=True)
    assert echoed["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Need the weather.", "signature": "c2lnbmF0dXJl"}
    ]
    call = echoed["tool_calls"][0]
    history = [
        {"role": "user", "content": "Weather?"},
        echoed,
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"},
    ]
    body = {
        "model": "claude-haiku-4-5",
        "messages": history,
        "tools": [{"type": "function", "function": {"name": call["function"]["name"]}}],
        "reasoning_effort": "low",
    }
    upstream = to_messages_request(body, ModelTable.with_overrides()).upstream
    assistant = upstream["messages"][1]["content"]
    assert assistant[0] == {"type": "thinking", "thinking": "Need the weather.", "signature": "c2lnbmF0dXJl"}
    assert [block["type"] for block in assistant] == ["thinking", "tool_use"]


def test_web_search_citations_become_url_citation_annotations_over_the_cited_text() -> None:
    result = to_chat_completion(load("web_search_citations.message.json"), created=CREATED)
    reply = result["choices"][0]["message"]
    spans = {(a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in reply["annotations"]}
    assert [reply["content"][start:end] for start, end in spans] == [
        " Claude Shannon was born on April 30, 1916, in Petoskey, Michigan."
    ]
    # Document citations (char_location) have no URL: no annotation.
    assert [a["url_citation"]["url"] for a in reply["annotations"]] == [
        "https://en.wikipedia.org/wiki/Claude_Shannon",
        "https://www.britannica.com/biography/Claude-Shannon",
    ]
    assert_valid_chat_completion(result)


def test_merge_completions_indexes_choices_and_sums_usage() -> None:
    first = to_chat_completion(load("text.message.json"), created=CREATED)
    second = to_chat_completion(load("tool_use_only.message.json"), created=CREATED + 5)
    merged = merge_completions([first, second])
    assert merged["id"] == first["id"]
    assert merged["created"] == CREATED
    assert [c["index"] for c in merged["choices"]] == [0, 1]
    assert merged["choices"][0]["message"] == first["choices"][0]["message"]
    assert merged["choices"][1]["finish_reason"] == "tool_calls"
    assert merged["usage"] == merge_usage([first["usage"], second["usage"]])
    assert merged["usage"]["total_tokens"] == first["usage"]["total_tokens"] + second["usage"]["total_tokens"]
    assert merged["usage"]["prompt_tokens_details"]["cached_tokens"] == (
        first["usage"]["prompt_tokens_details"]["cached_tokens"]
        + second["usage"]["prompt_tokens_details"]["cached_tokens"]
    )
    assert_valid_chat_completion(merged)


def test_merge_usage_sums_nested_counts() -> None:
    a = to_openai_usage(
        Usage.from_anthropic({"input_tokens": 10, "output_tokens": 5, "output_tokens_details": {"thinking_tokens": 2}})
    )
    b = to_openai_usage(Usage.from_anthropic({"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}))
    assert merge_usage([a, b]) == {
        "prompt_tokens": 20,
        "completion_tokens": 6,
        "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
