"""OpenAI Responses request → Messages API request (proxy/translate/responses/request.py, input.py, tools.py).

Most behaviour is pinned by golden fixtures in tests/fixtures/responses/request/, one JSON file per case:

    {"about": "...", "models": {overrides}?, "aliases": {...}?, "options": {to_messages_request keywords,
     "history" among them}?, "expect": {ResponsesRequest fields; "echo" and "tool_names" compared
     key by key}?, "openai": <client body>, "anthropic": <upstream body>,
     "dropped": [ResponsesRequest.dropped]?}                           -- or, for a refusal,
     "error": {"status": 400, "param": "input[3].content[0].image_url", "code": "invalid_type"}

A fixture with "dropped" is also run with strict_fields on: refused, naming a dropped field, when
the list is not empty, else translated the same.

Every upstream body is checked against the anthropic SDK's request types, and every echo (with
the translated tools) against the openai SDK's `Response` type. The property tests check that no
JSON body, however odd, gets anything but a valid upstream body or an `InvalidRequest`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from proxy.errors import InvalidRequest
from proxy.models import ModelTable
from proxy.translate.params import UNNAMED
from proxy.translate.responses.common import ResponsesRequest, ToolName, client_call_id, seal_reasoning
from proxy.translate.responses.request import PARAMS, to_messages_request
from tests.anthropic_schema import assert_valid_messages_request

FIXTURES = Path(__file__).parent.parent / "fixtures" / "responses" / "request"
CASE_PATHS = sorted(FIXTURES.glob("*.json"))
CASES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in CASE_PATHS}
VALID_CASES = [name for name, case in CASES.items() if "anthropic" in case]
SAMPLING_KEYS = frozenset({"temperature", "top_p", "top_k"})
TABLE = ModelTable.with_overrides(aliases={"gpt-5-codex": "claude-haiku-4-5"})
TABLES = {name: ModelTable.with_overrides(case.get("models"), case.get("aliases")) for name, case in CASES.items()}
MODEL = "claude-haiku-4-5"


def assert_valid_result(result: ResponsesRequest, table: ModelTable) -> None:
    upstream = result.upstream
    assert upstream["model"] == result.model
    assert result.stream == (upstream.get("stream") is True)
    assert "stream" not in upstream or upstream["stream"] is True
    sampling = SAMPLING_KEYS & upstream.keys()
    assert sampling <= table.capabilities(result.model).sampling
    assert_valid_messages_request({k: v for k, v in upstream.items() if k not in SAMPLING_KEYS})
    orjson.dumps(upstream)
    # Every tool Claude may call maps back to a client tool, and no two Claude names to one tool.
    claude_names = {tool["name"] for tool in upstream.get("tools", []) if "type" not in tool}
    assert claude_names == set(result.tool_names.by_claude)
    assert len(set(result.tool_names.by_claude.values())) == len(claude_names)
    assert_valid_echo(result)


def assert_valid_echo(result: ResponsesRequest) -> None:
    """The echo is what a Response repeats: with the fields only the response has, it must be a
    valid `Response` of the openai SDK."""
    Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 0,
            "model": result.requested_model,
            "output": [],
            "status": "completed",
            **result.echo,
        }
    )


def translate_or_refuse(body: Any, table: ModelTable = TABLE, **options: Any) -> None:
    try:
        result = to_messages_request(body, table, **options)
    except InvalidRequest as exc:
        assert exc.status_code == 400
        assert exc.param is None or isinstance(exc.param, str)
        return
    assert_valid_result(result, table)
    assert_strict_agrees(body, table, result, options)


def assert_strict_agrees(body: Any, table: ModelTable, result: Any, options: dict[str, Any]) -> None:
    """What was dropped names fields of the body, once each; strict_fields refuses the body exactly
    when something was dropped, and otherwise translates it the same."""
    top_level = {re.split(r"[.\[]", path, maxsplit=1)[0] for path in result.dropped if path != UNNAMED}
    assert top_level <= set(body) and len(set(result.dropped)) == len(result.dropped)
    if options.get("strict"):
        return
    try:
        strict = to_messages_request(body, table, **options, strict=True)
    except InvalidRequest as exc:
        assert result.dropped and exc.code == "unsupported_value" and exc.message.endswith("(strict_fields is on).")
        return
    assert (strict.upstream, result.dropped) == (result.upstream, ())


# Golden fixtures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_fixture_translates_to_its_golden_output(name: str) -> None:
    case = CASES[name]
    body = case["openai"]
    before = copy.deepcopy(body)
    table = TABLES[name]
    options = case.get("options", {})
    if "error" in case:
        expected = case["error"]
        with pytest.raises(InvalidRequest) as info:
            to_messages_request(body, table, **options)
        assert info.value.status_code == expected["status"]
        assert info.value.param == expected["param"]
        assert info.value.code == expected["code"]
    else:
        result = to_messages_request(body, table, **options)
        assert result.upstream == case["anthropic"]
        assert_valid_result(result, table)
        for field, value in case.get("expect", {}).items():
            if field == "echo":
                assert {key: result.echo[key] for key in value} == value
            elif field == "tool_names":
                assert {claude: ToolName(**tool) for claude, tool in value.items()} == result.tool_names.by_claude
            else:
                assert getattr(result, field) == value, field
        if "dropped" in case:  # fixtures added without it are not checked
            assert list(result.dropped) == case["dropped"]
    assert body == before, "the client's body must not be modified"


@pytest.mark.parametrize("name", [name for name in VALID_CASES if "dropped" in CASES[name]])
def test_fixture_under_strict_fields_is_refused_exactly_when_it_drops_a_field(name: str) -> None:
    case = CASES[name]
    options = {**case.get("options", {}), "strict": True}
    if not case["dropped"]:
        assert to_messages_request(case["openai"], TABLES[name], **options).upstream == case["anthropic"]
        return
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(case["openai"], TABLES[name], **options)
    assert (info.value.status_code, info.value.code) == (400, "unsupported_value")
    assert info.value.message.endswith("(strict_fields is on).")
    assert re.sub(r"\[\d+\]", "[]", info.value.param or "") in case["dropped"]


def test_there_are_enough_fixtures() -> None:
    assert len(CASES) >= 40


def test_every_fixture_says_what_it_checks() -> None:
    for name, case in CASES.items():
        assert case.get("about"), name
        assert ("anthropic" in case) != ("error" in case), name


def test_every_mapped_parameter_has_a_fixture() -> None:
    sent = set()
    for case in CASES.values():
        body = case["openai"]
        if isinstance(body, dict):
            sent |= set(body)
            sent |= {f"{key}.{inner}" for key, value in body.items() if isinstance(value, dict) for inner in value}
    missing = set(PARAMS) - sent
    assert missing == set()


# Behaviour the fixtures cannot show --------------------------------------------------------------


def test_defaults_of_the_request_and_its_echo() -> None:
    result = to_messages_request({"model": "gpt-5-codex", "input": "Hi"}, TABLE)
    assert result.upstream == {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 8192,
    }
    assert (result.model, result.requested_model, result.stream, result.store) == (MODEL, "gpt-5-codex", False, True)
    assert result.include_encrypted_reasoning is False
    assert result.echo == {
        "instructions": None,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "reasoning": {"effort": None, "summary": None},
        "metadata": {},
        "max_output_tokens": None,
        "max_tool_calls": None,
        "previous_response_id": None,
        "store": True,
        "background": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_logprobs": 0,
        "truncation": "disabled",
        "user": None,
        "safety_identifier": None,
        "prompt_cache_key": None,
        "prompt_cache_retention": None,
        "service_tier": "auto",
    }


def test_echo_repeats_what_the_client_set() -> None:
    body = {
        "model": MODEL,
        "input": "a",
        "instructions": "Be brief.",
        "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}]}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}, "verbosity": "low"},
        "reasoning": {"effort": "none", "summary": "auto"},
        "max_output_tokens": 4000,
        "previous_response_id": "resp_0",
        "service_tier": "flex",
        "prompt_cache_key": "k",
    }
    result = to_messages_request(body, TABLE, history=[{"role": "user", "content": "earlier"}])
    echo = result.echo
    assert echo["instructions"] == "Be brief."
    # The fields the gateway read, with the ones the Response type requires (a namespace's description).
    assert echo["tools"] == [
        {
            "type": "namespace",
            "name": "ns",
            "description": "",
            "tools": [{"type": "function", "name": "f", "parameters": None, "strict": None}],
        }
    ]
    assert (echo["tool_choice"], echo["parallel_tool_calls"]) == ("required", False)
    assert echo["text"] == body["text"]
    assert echo["reasoning"] == {"effort": "none", "summary": "auto"}
    assert (echo["max_output_tokens"], echo["previous_response_id"]) == (4000, "resp_0")
    assert (echo["service_tier"], echo["prompt_cache_key"]) == ("flex", "k")
    assert_valid_echo(result)


def test_a_replayed_call_keeps_the_claude_names_of_its_tool_and_id() -> None:
    """What R2 maps back (`ToolNames.client`, `client_call_id`) is what this side sent."""
    tools = [
        {"type": "function", "name": "container.exec"},
        {"type": "namespace", "name": "mcp__x", "description": "", "tools": [{"type": "custom", "name": "patch"}]},
    ]
    body = {
        "model": MODEL,
        "tools": tools,
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "id.1", "name": "container.exec", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "id:2", "name": "patch", "namespace": "mcp__x", "input": "p"},
            {"type": "function_call_output", "call_id": "id.1", "output": "a"},
            {"type": "custom_tool_call_output", "call_id": "id:2", "output": "b"},
        ],
    }
    result = to_messages_request(body, TABLE)
    calls = result.upstream["messages"][1]["content"]
    assert [result.tool_names.client(call["name"]) for call in calls] == [
        ToolName("function", "container.exec"),
        ToolName("custom", "patch", "mcp__x"),
    ]
    assert [client_call_id(call["id"]) for call in calls] == ["id.1", "id:2"]
    results = result.upstream["messages"][2]["content"]
    assert [block["tool_use_id"] for block in results] == [call["id"] for call in calls]
    assert calls[1]["input"] == {"input": "p"}


def test_claude_names_are_stable_across_requests_and_tool_lists() -> None:
    """A replayed call of a namespaced tool gets the same Claude name whether or not the tool is
    still offered, so the conversation reads the same to Claude from turn to turn."""
    tool = {"type": "namespace", "name": "a.b", "description": "", "tools": [{"type": "function", "name": "c"}]}
    call = {"type": "function_call", "call_id": "c1", "name": "c", "namespace": "a.b", "arguments": "{}"}
    body = {"model": MODEL, "input": [{"role": "user", "content": "x"}, call]}
    with_tool = to_messages_request({**body, "tools": [tool]}, TABLE, max_tools=5).upstream
    without = to_messages_request(body, TABLE).upstream
    assert with_tool["tools"][0]["name"] == with_tool["messages"][1]["content"][0]["name"]
    assert without["messages"][1]["content"][0]["name"] == with_tool["tools"][0]["name"]


def test_every_claude_tool_name_is_valid_and_unique() -> None:
    names = ["a" * 64, "a" * 65, "x.y", "x_y", "héllo", "", "-", "ns__f"]
    tools: list[dict[str, Any]] = [{"type": "function", "name": name} for name in names if name]
    tools.append({"type": "namespace", "name": "ns", "description": "", "tools": [{"type": "function", "name": "f"}]})
    tools.append({"type": "namespace", "name": "n" * 70, "description": "", "tools": [{"type": "custom", "name": "f"}]})
    result = to_messages_request({"model": MODEL, "input": "a", "tools": tools}, TABLE)
    claude = [tool["name"] for tool in result.upstream["tools"]]
    assert len(set(claude)) == len(claude) == len(tools) - 2 + 2
    for name in claude:
        assert 1 <= len(name) <= 64 and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in name), name


def test_reasoning_round_trip_keeps_thinking_byte_for_byte() -> None:
    blocks = [
        {"type": "thinking", "thinking": "  odd\u2028 spacing \u00e9", "signature": "Ep4BCkY+/="},
        {"type": "redacted_thinking", "data": "EmwKAhgB=="},
    ]
    body = {
        "model": MODEL,
        "input": [
            {"role": "user", "content": "a"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": seal_reasoning(blocks)},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ],
    }
    upstream = to_messages_request(body, TABLE).upstream
    assert upstream["messages"][1]["content"][:2] == blocks


def test_reasoning_alone_in_a_final_assistant_turn_is_not_sent() -> None:
    """Thinking in a final assistant turn without a tool call is refused upstream; the core drops it."""
    sealed = seal_reasoning([{"type": "thinking", "thinking": "t", "signature": "s"}])
    body = {
        "model": MODEL,
        "input": [{"role": "user", "content": "a"}, {"type": "reasoning", "summary": [], "encrypted_content": sealed}],
    }
    assert to_messages_request(body, TABLE).upstream["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}]}
    ]


def test_history_errors_name_the_previous_response() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_messages_request({"model": MODEL, "input": "a"}, TABLE, history=[{"type": "computer_call"}])
    assert info.value.param == "previous_response_id[0].type"


def test_input_items_are_what_the_request_adds() -> None:
    items = [{"role": "user", "content": "a"}, {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}]
    body = {"model": MODEL, "input": [*items, {"type": "function_call_output", "call_id": "c", "output": "x"}]}
    result = to_messages_request(body, TABLE, history=[{"role": "user", "content": "before"}])
    assert result.input_items == body["input"]


def test_no_model_name_in_responses_translation_code() -> None:
    package = Path(__file__).parent.parent.parent / "proxy" / "translate" / "responses"
    for path in package.glob("*.py"):
        assert "claude-" not in path.read_text(encoding="utf-8"), path.name


def test_what_the_stored_history_dropped_is_not_reported_again_nor_refused_under_strict() -> None:
    image = {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"}
    history = [{"type": "message", "role": "user", "content": [image]}]
    body = {"model": MODEL, "input": "and now?", "previous_response_id": "resp_0"}
    assert to_messages_request(body, TABLE, history=history, strict=True).dropped == ()
    result = to_messages_request({**body, "input": [{"role": "user", "content": [image]}]}, TABLE, history=history)
    assert result.dropped == ("input[].content[].detail",)


def test_reasoning_summary_is_dropped_only_when_there_is_no_thinking_to_show() -> None:
    body = {"model": "claude-opus-4-7", "input": "a"}
    assert to_messages_request({**body, "reasoning": {"summary": "auto"}}, TABLE).dropped == ("reasoning.summary",)
    both = {**body, "reasoning": {"effort": "high", "summary": "auto"}}
    assert to_messages_request(both, TABLE).dropped == ()
    off = {**body, "reasoning": {"effort": "none", "summary": "auto"}}  # OpenAI shows none either
    assert to_messages_request(off, TABLE).dropped == ()


def test_unknown_fields_inside_text_and_reasoning_are_reported_by_their_path() -> None:
    body = {"model": MODEL, "input": "a", "text": {"verbosity": "medium", "style": "x"}, "reasoning": {"mode": 1}}
    assert to_messages_request(body, TABLE).dropped == ("text.style", "reasoning.mode")


# Property tests ----------------------------------------------------------------------------------

WORDS = st.sampled_from(
    [
        "",
        " ",
        "user",
        "assistant",
        "system",
        "developer",
        "message",
        "input_text",
        "input_image",
        "input_file",
        "output_text",
        "refusal",
        "function",
        "custom",
        "namespace",
        "web_search",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
        "item_reference",
        "web_search_call",
        "auto",
        "none",
        "required",
        "f",
        "g",
        "ns",
        "call_1",
        "call.2",
        "{}",
        '{"a": 1}',
        "[1]",
        "https://example.com/a.png",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==",
        "data:application/pdf;base64,JVBERi0xLjQK",
        seal_reasoning([{"type": "thinking", "thinking": "t", "signature": "s"}]),
        "cpr1.AAAA",
        MODEL,
        "claude-opus-4-7",
        "gpt-5-codex",
    ]
)
STRINGS = WORDS | st.text(max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | STRINGS
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(STRINGS, children, max_size=4),
    max_leaves=20,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed value, sometimes any JSON at all."""
    return st.sampled_from([True] * 24 + [False]).flatmap(lambda good: strategy if good else JSON)


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(required, optional=optional or {})


PART = st.one_of(
    _object({"type": _maybe(st.just("input_text")), "text": _maybe(STRINGS)}),
    _object({"type": _maybe(st.just("input_image"))}, {"image_url": _maybe(WORDS), "detail": JSON, "file_id": JSON}),
    _object({"type": _maybe(st.just("input_file"))}, {"file_data": _maybe(WORDS), "file_url": JSON, "filename": JSON}),
    _object({"type": _maybe(st.just("output_text")), "text": _maybe(STRINGS), "annotations": JSON}),
)
CONTENT = _maybe(STRINGS | st.lists(PART, min_size=1, max_size=3))
CALL_ID = _maybe(st.sampled_from(["call_1", "call.2"]))
NAME = _maybe(st.sampled_from(["f", "g"]))
ITEM = st.one_of(
    _object({"role": _maybe(st.sampled_from(["user", "assistant", "system", "developer"])), "content": CONTENT}),
    _object(
        {"type": st.just("function_call"), "call_id": CALL_ID, "name": NAME, "arguments": _maybe(WORDS)},
        {"namespace": _maybe(st.just("ns")), "id": JSON, "status": JSON},
    ),
    _object({"type": st.just("function_call_output"), "call_id": CALL_ID, "output": CONTENT}),
    _object({"type": st.just("custom_tool_call"), "call_id": CALL_ID, "name": NAME, "input": _maybe(STRINGS)}),
    _object({"type": st.just("custom_tool_call_output"), "call_id": CALL_ID, "output": CONTENT}),
    _object({"type": st.just("reasoning"), "summary": JSON}, {"encrypted_content": _maybe(WORDS)}),
    _object({"type": _maybe(st.just("item_reference")), "id": _maybe(st.sampled_from(["m1", "m2"]))}),
    _object({"type": st.just("web_search_call"), "id": JSON, "action": JSON}),
)
FUNCTION = _object(
    {"type": _maybe(st.just("function")), "name": NAME},
    {"parameters": JSON, "strict": JSON, "description": JSON},
)
TOOL = st.one_of(
    FUNCTION,
    _object({"type": st.just("custom"), "name": NAME}, {"format": JSON, "description": JSON}),
    _object(
        {"type": st.just("namespace"), "name": _maybe(st.just("ns")), "tools": _maybe(st.lists(FUNCTION, max_size=2))}
    ),
    _object(
        {"type": st.sampled_from(["web_search", "web_search_preview", "file_search"])},
        {"filters": JSON, "user_location": JSON},
    ),
)
PARAM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "instructions": _maybe(STRINGS),
    "tools": _maybe(st.lists(TOOL, max_size=3)),
    "tool_choice": _maybe(
        st.sampled_from(["auto", "none", "required"])
        | _object(
            {"type": st.sampled_from(["function", "custom", "web_search_preview", "allowed_tools"])},
            {"name": NAME, "mode": JSON, "tools": JSON},
        )
    ),
    "parallel_tool_calls": _maybe(st.booleans()),
    "max_output_tokens": _maybe(st.integers(min_value=-1, max_value=200_000)),
    "max_tool_calls": _maybe(st.integers(min_value=0, max_value=5)),
    "text": _maybe(
        _object(
            {},
            {
                "format": _maybe(
                    st.sampled_from([{"type": "text"}, {"type": "json_object"}])
                    | _object({"type": st.just("json_schema"), "schema": JSON})
                ),
                "verbosity": JSON,
            },
        )
    ),
    "reasoning": _maybe(
        _object(
            {},
            {
                "effort": _maybe(st.sampled_from(["none", "minimal", "low", "high", "max"])),
                "summary": _maybe(st.sampled_from(["auto", "detailed"])),
            },
        )
    ),
    "stream": _maybe(st.booleans()),
    "store": _maybe(st.booleans()),
    "include": _maybe(
        st.lists(st.sampled_from(["reasoning.encrypted_content", "message.output_text.logprobs"]), max_size=2)
    ),
    "truncation": _maybe(st.sampled_from(["auto", "disabled"])),
    "metadata": _maybe(st.dictionaries(STRINGS, STRINGS, max_size=3)),
    "user": _maybe(STRINGS),
    "safety_identifier": _maybe(STRINGS),
    "service_tier": _maybe(st.sampled_from(["auto", "default", "flex", "priority"])),
    "prompt_cache_retention": _maybe(st.sampled_from(["in_memory", "24h"])),
    "background": _maybe(st.booleans()),
    "previous_response_id": _maybe(STRINGS),
}
IGNORED = ("prompt_cache_key", "client_metadata", "stream_options", "unknown_field")
BODY = st.fixed_dictionaries(
    {
        "model": _maybe(st.sampled_from([MODEL, "claude-opus-4-7", "claude-fable-5", "gpt-5-codex"])),
        "input": _maybe(STRINGS | st.lists(ITEM, min_size=1, max_size=6)),
    },
    optional={**PARAM_VALUES, **{name: JSON for name in IGNORED}},
)
HISTORY = st.lists(ITEM.map(lambda item: {**item, "id": "m1"} if isinstance(item, dict) else item), max_size=3)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_body_translates_or_raises_invalid_request(body: Any) -> None:
    translate_or_refuse(body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY, HISTORY, st.booleans())
def test_request_shaped_body_translates_or_raises_invalid_request(body: Any, history: Any, auto_cache: bool) -> None:
    translate_or_refuse(body, history=history, auto_cache=auto_cache)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_fixture_body_translates_or_raises_invalid_request(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(VALID_CASES))
    body = copy.deepcopy(CASES[name]["openai"])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        paths = list(_paths(body))
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
    translate_or_refuse(body, TABLES[name], **CASES[name].get("options", {}))
