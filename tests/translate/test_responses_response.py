"""The Responses response translator: a Messages API `Message` → a `Response` object.

Golden fixtures in tests/fixtures/responses/response/: `<case>.message.json` (an Anthropic
Message; those shared with the chat dialect are copies of tests/fixtures/chat/response/) and
`<case>.expected.json` (the Response object). Every result is also checked against the openai
SDK's `Response` type, strictly and for fields the type does not declare.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message
from openai.types.responses import Response
from pydantic import BaseModel

from proxy.errors import UpstreamError
from proxy.models import ModelTable
from proxy.translate.chat.response import to_chat_completion
from proxy.translate.claude.refusals import refusal_text
from proxy.translate.responses.common import ResponsesRequest, claude_call_id, open_reasoning
from proxy.translate.responses.request import to_messages_request
from proxy.translate.responses.response import responses_usage, to_response
from proxy.usage import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "responses" / "response"
CASES = sorted(p.name.removesuffix(".message.json") for p in FIXTURES.glob("*.message.json"))
RESPONSE_ID = "resp_0123456789abcdef"
CREATED_AT = 1764097200

# The client's request behind every fixture: each kind of tool the translator names on the way
# back (function, custom, a namespace member, web search), with the reasoning round trip asked for.
REQUEST_BODY: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "input": "What is the weather in Paris?",
    "instructions": "Be brief.",
    "include": ["reasoning.encrypted_content"],
    "store": False,
    "metadata": {"trace": "t-1"},
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather for a place.",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            "strict": False,
        },
        {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}, "strict": False},
        {"type": "custom", "name": "apply_patch", "description": "Apply a patch to the workspace."},
        {
            "type": "namespace",
            "name": "files",
            "description": "The workspace's files.",
            "tools": [
                {
                    "type": "function",
                    "name": "read",
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
                    "strict": False,
                }
            ],
        },
        {"type": "web_search"},
    ],
}


def request_for(body: dict[str, Any] = REQUEST_BODY, **changes: Any) -> ResponsesRequest:
    return to_messages_request({**body, **changes}, ModelTable.with_overrides())


REQUEST = request_for()


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def translate(message: dict[str, Any], request: ResponsesRequest = REQUEST, **options: Any) -> dict[str, Any]:
    return to_response(message, request, response_id=RESPONSE_ID, created_at=CREATED_AT, **options)


# Fields OpenAI's API returns that the SDK's types do not declare.
UNDECLARED_FIELDS = frozenset({"$.store", "$.response.store"})


def unknown_fields(model: BaseModel, path: str = "$") -> list[str]:
    """Keys the SDK model does not declare: the openai types accept extra keys silently, so
    validation alone would not catch a misspelt field."""
    found = [f"{path}.{key}" for key in model.model_extra or {} if f"{path}.{key}" not in UNDECLARED_FIELDS]
    for name in type(model).model_fields:
        found += _unknown_in(getattr(model, name), f"{path}.{name}")
    return found


def _unknown_in(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return unknown_fields(value, path)
    if isinstance(value, list):
        return [field for i, item in enumerate(value) for field in _unknown_in(item, f"{path}[{i}]")]
    return []


def assert_valid_response(result: dict[str, Any]) -> Response:
    parsed = Response.model_validate(result, strict=True)
    assert unknown_fields(parsed) == []
    return parsed


def message_with(*content: dict[str, Any], stop_reason: str = "end_turn", **fields: Any) -> dict[str, Any]:
    return {
        "id": "msg_01Test",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": list(content),
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 3, "output_tokens": 2},
        **fields,
    }


# Golden fixtures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_fixture_is_a_valid_anthropic_message(case: str) -> None:
    Message.model_validate(load(f"{case}.message.json"))


@pytest.mark.parametrize("case", CASES)
def test_message_translates_to_golden_response(case: str) -> None:
    assert translate(load(f"{case}.message.json")) == load(f"{case}.expected.json")


@pytest.mark.parametrize("case", CASES)
def test_translation_is_a_valid_openai_response(case: str) -> None:
    assert_valid_response(translate(load(f"{case}.message.json")))


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


def test_every_fixture_has_a_golden_response() -> None:
    assert {p.name.removesuffix(".expected.json") for p in FIXTURES.glob("*.expected.json")} == set(CASES)


# The Response object -----------------------------------------------------------------------------


def test_response_repeats_every_echo_field_of_the_request() -> None:
    result = translate(load("text.message.json"))
    assert {key: result[key] for key in REQUEST.echo} == REQUEST.echo
    assert result["instructions"] == "Be brief."
    assert result["metadata"] == {"trace": "t-1"}
    assert result["store"] is False


def test_response_names_the_model_the_client_asked_for() -> None:
    table = ModelTable.with_overrides(aliases={"gpt-5-codex": "claude-haiku-4-5"})
    request = to_messages_request({**REQUEST_BODY, "model": "gpt-5-codex"}, table)
    result = translate(load("text.message.json"), request)
    assert request.model != "gpt-5-codex"
    assert result["model"] == "gpt-5-codex"


def test_sdk_output_text_is_the_message_text() -> None:
    parsed = assert_valid_response(translate(load("multiple_text_blocks_one_part.message.json")))
    assert parsed.output_text == "Shannon was born in 1916 in Petoskey."


def test_citations_annotate_their_own_block_within_the_joined_text() -> None:
    result = translate(load("multiple_text_blocks_one_part.message.json"))
    (part,) = result["output"][0]["content"]
    (annotation,) = part["annotations"]  # the document citation has no URL: dropped
    assert part["text"][annotation["start_index"] : annotation["end_index"]] == " in Petoskey."


# Stop reasons ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["max_tokens", "model_context_window_exceeded", "tool_use_cut_short"])
def test_output_cut_short_is_incomplete_with_max_output_tokens(case: str) -> None:
    result = translate(load(f"{case}.message.json"))
    assert result["status"] == "incomplete"
    assert result["incomplete_details"] == {"reason": "max_output_tokens"}
    assert result["output"][-1]["status"] == "incomplete"
    assert all(item["status"] == "completed" for item in result["output"][:-1])


@pytest.mark.parametrize("case", ["text", "tool_use_parallel", "stop_sequence", "pause_turn"])
def test_other_stop_reasons_complete(case: str) -> None:
    result = translate(load(f"{case}.message.json"))
    assert (result["status"], result["incomplete_details"], result["error"]) == ("completed", None, None)


def test_refusal_becomes_a_refusal_part_after_the_text() -> None:
    result = translate(load("refusal_after_text.message.json"))
    assert result["status"] == "completed"
    (message,) = result["output"]
    assert [part["type"] for part in message["content"]] == ["output_text", "refusal"]
    assert message["content"][1]["refusal"] == "This request may enable cyber harm."


def test_refusal_without_text_is_a_message_of_its_own() -> None:
    (message,) = translate(load("refusal.message.json"))["output"]
    assert message["content"] == [
        {"type": "refusal", "refusal": "The model declined to respond to this request (policy category: cyber)."}
    ]


@pytest.mark.parametrize(
    ("details", "text"),
    [
        (None, "The model declined to respond to this request."),
        ({"type": "refusal", "category": None, "explanation": "  "}, "The model declined to respond to this request."),
        ({"type": "refusal", "category": "bio", "explanation": "Biology."}, "Biology."),
    ],
)
def test_refusal_text_prefers_claudes_explanation(details: Any, text: str) -> None:
    assert refusal_text(details) == text


# Items ---------------------------------------------------------------------------------------------


def test_reasoning_run_is_sealed_byte_for_byte_when_included() -> None:
    message = load("interleaved_thinking.message.json")
    reasoning = [item for item in translate(message)["output"] if item["type"] == "reasoning"]
    assert [len(open_reasoning(item["encrypted_content"], "x")) for item in reasoning] == [2, 2]
    assert open_reasoning(reasoning[0]["encrypted_content"], "x") == message["content"][:2]
    assert open_reasoning(reasoning[1]["encrypted_content"], "x") == message["content"][3:5]


def test_reasoning_summary_has_one_part_per_thinking_block_with_text() -> None:
    reasoning = [
        item for item in translate(load("interleaved_thinking.message.json"))["output"] if item["type"] == "reasoning"
    ]
    assert [item["summary"] for item in reasoning] == [
        [{"type": "summary_text", "text": "First, the weather."}],
        [{"type": "summary_text", "text": "Then the time."}],
    ]


def test_encrypted_content_only_when_the_client_includes_it() -> None:
    request = request_for(include=[])
    reasoning = translate(load("thinking_text.message.json"), request)["output"][0]
    assert reasoning["type"] == "reasoning"
    assert "encrypted_content" not in reasoning


def test_call_ids_the_gateway_encoded_come_back_as_the_client_sent_them() -> None:
    (call,) = translate(load("call_id_from_client_round_trip.message.json"))["output"]
    assert claude_call_id("call.123") == "cpx_Y2FsbC4xMjM"
    assert call["call_id"] == "call.123"


def test_namespaced_tool_call_names_its_namespace() -> None:
    (call,) = translate(load("namespaced_call.message.json"))["output"]
    assert (call["type"], call["namespace"], call["name"]) == ("function_call", "files", "read")


def test_tool_name_the_request_did_not_define_is_a_plain_function_call() -> None:
    (call,) = translate(load("unknown_tool_name.message.json"))["output"]
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "invented_tool", "{}")
    assert "namespace" not in call


def test_custom_tool_call_carries_the_text_input() -> None:
    call = translate(load("custom_tool_call.message.json"))["output"][1]
    assert call["type"] == "custom_tool_call"
    assert call["input"] == "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"


def test_custom_tool_input_off_its_schema_is_passed_on_as_json() -> None:
    (call,) = translate(load("custom_tool_call_off_schema.message.json"))["output"]
    assert json.loads(call["input"]) == {"patch": "*** Begin Patch\n*** End Patch\n"}


def test_web_search_with_an_error_result_failed() -> None:
    search = translate(load("web_search_failed.message.json"))["output"][0]
    assert search == {
        "id": "ws_0123456789abcdef_0",
        "type": "web_search_call",
        "status": "failed",
        "action": {"type": "search", "query": "weather paris"},
    }


def test_web_search_without_a_result_is_incomplete() -> None:
    use = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
    (search,) = translate(message_with(use, stop_reason="max_tokens"))["output"]
    assert search["status"] == "incomplete"


def test_block_without_a_responses_equivalent_ends_the_text_run() -> None:
    output = translate(load("unrelated_block_ends_text_run.message.json"))["output"]
    assert [(item["type"], item["content"][0]["text"]) for item in output] == [
        ("message", "Before."),
        ("message", "After."),
    ]


def test_item_ids_are_distinct_and_follow_the_output_order() -> None:
    output = translate(load("interleaved_thinking.message.json"))["output"]
    assert [item["id"] for item in output] == [
        "rs_0123456789abcdef_0",
        "fc_0123456789abcdef_1",
        "rs_0123456789abcdef_2",
        "fc_0123456789abcdef_3",
    ]


def test_empty_message_has_no_output() -> None:
    result = translate(message_with())
    assert result["output"] == []
    assert_valid_response(result)


# Usage ---------------------------------------------------------------------------------------------


def test_usage_counts_cache_reads_and_writes_as_input() -> None:
    usage = Usage(input=10, output=7, cache_read=100, cache_write=5, reasoning=3)
    assert responses_usage(usage) == {
        "input_tokens": 115,
        "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 122,
    }


def test_empty_usage_still_has_every_field() -> None:
    assert_valid_response(translate(message_with(usage=None)))
    assert translate(message_with(usage=None))["usage"]["total_tokens"] == 0


def test_usage_the_caller_read_is_used_as_given() -> None:
    usage = Usage(input=1, output=2)
    assert translate(load("cache_usage.message.json"), usage=usage)["usage"] == responses_usage(usage)


# Malformed upstream data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        message_with(content=None),
        message_with(content="text"),
        message_with({"type": "text", "text": 5}),
        message_with({"type": "text"}),
        message_with("not a block"),  # type: ignore[arg-type]
        message_with({"type": "tool_use", "name": "get_weather", "input": {}}),
        message_with({"type": "tool_use", "id": 7, "name": "get_weather", "input": {}}),
        message_with({"type": "thinking", "thinking": None, "signature": "s"}),
        message_with({"type": "redacted_thinking"}),
        message_with({"type": "text", "text": "a", "citations": [{"type": "web_search_result_location"}]}),
        message_with({"type": "server_tool_use", "name": "web_search", "input": {}}),
        message_with(usage={"input_tokens": "3"}),
        message_with(usage=[]),
    ],
)
def test_malformed_message_is_an_upstream_error(message: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError):
        translate(message)


def test_message_that_is_not_an_object_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        translate([])  # type: ignore[arg-type]


# Today's rules (issue 16) ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["refusal", "refusal_after_text", "refusal_explained_after_thinking"])
def test_a_refusal_reads_the_same_in_the_responses_api_and_chat(case: str) -> None:
    message = load(f"{case}.message.json")
    parts = [part for item in translate(message)["output"] if item["type"] == "message" for part in item["content"]]
    refusals = [part["refusal"] for part in parts if part["type"] == "refusal"]
    assert refusals == [to_chat_completion(message, created=CREATED_AT)["choices"][0]["message"]["refusal"]]


def test_a_refusal_explanation_is_the_refusal_text_and_thinking_tokens_are_reasoning_tokens() -> None:
    result = translate(load("refusal_explained_after_thinking.message.json"))
    assert result["output"][-1]["content"] == [
        {"type": "refusal", "refusal": "This request asks for methods that could enable biological harm."}
    ]
    assert result["usage"]["output_tokens_details"] == {"reasoning_tokens": 49}
