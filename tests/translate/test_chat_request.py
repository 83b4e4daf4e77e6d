"""OpenAI chat request → Messages API request (proxy/translate/chat/request.py, messages.py).

Most behaviour is pinned by golden fixtures in tests/fixtures/chat/request/, one JSON file per case:

    {"about": "...", "models": {overrides}?, "aliases": {...}?, "options": {to_messages_request keywords}?,
     "expect": {TranslatedRequest fields}?, "openai": <client body>, "anthropic": <upstream body>,
     "dropped": [TranslatedRequest.dropped]?}                          -- or, for a refusal,
     "error": {"status": 400, "param": "messages[0].content", "code": "invalid_value"}

A fixture with "dropped" is also run with strict_fields on: refused, naming a dropped field, when
the list is not empty, else translated the same.

The property tests below check that no JSON body, however odd, gets anything but a valid upstream
body or an `InvalidRequest` out of the translator.
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

from proxy.errors import InvalidRequest
from proxy.models import ModelTable
from proxy.translate.chat.request import PARAMS, TranslatedRequest, to_messages_request
from proxy.translate.params import UNNAMED
from tests.anthropic_schema import assert_valid_messages_request

FIXTURES = Path(__file__).parent.parent / "fixtures" / "chat" / "request"
CASE_PATHS = sorted(FIXTURES.glob("*.json"))
CASES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in CASE_PATHS}
VALID_CASES = [name for name, case in CASES.items() if "anthropic" in case]
SAMPLING_KEYS = frozenset({"temperature", "top_p", "top_k"})
TABLE = ModelTable.with_overrides(aliases={"gpt-4o": "claude-haiku-4-5"})


def table_for(case: dict[str, Any]) -> ModelTable:
    return ModelTable.with_overrides(case.get("models"), case.get("aliases"))


TABLES = {name: table_for(case) for name, case in CASES.items()}


def assert_valid_upstream(result: TranslatedRequest, table: ModelTable) -> None:
    upstream = result.upstream
    assert upstream["model"] == result.model
    assert result.stream == (upstream.get("stream") is True)
    assert "stream" not in upstream or upstream["stream"] is True
    # The SDK's types follow API version 2026-10-21, which has no sampling fields: they may only
    # appear when the model table enables them (operators pinned to an older API version), and are
    # checked here apart from the schema.
    sampling = SAMPLING_KEYS & upstream.keys()
    assert sampling <= table.capabilities(result.model).sampling
    assert_valid_messages_request({k: v for k, v in upstream.items() if k not in SAMPLING_KEYS})
    orjson.dumps(upstream)  # what chat.py sends must serialise


def translate_or_refuse(body: Any, table: ModelTable = TABLE, **options: Any) -> None:
    try:
        result = to_messages_request(body, table, **options)
    except InvalidRequest as exc:
        assert exc.status_code == 400
        assert exc.param is None or isinstance(exc.param, str)
        return
    assert_valid_upstream(result, table)
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


# Golden fixtures -----------------------------------------------------------------------------


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
        if "code" in expected:
            assert info.value.code == expected["code"]
    else:
        result = to_messages_request(body, table, **options)
        assert result.upstream == case["anthropic"]
        assert_valid_upstream(result, table)
        for field, value in case.get("expect", {}).items():
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


def test_every_fixture_says_what_it_checks() -> None:
    for name, case in CASES.items():
        assert case.get("about"), name
        assert ("anthropic" in case) != ("error" in case), name


def test_every_mapped_parameter_has_a_fixture() -> None:
    sent = {key for case in CASES.values() if isinstance(case["openai"], dict) for key in case["openai"]}
    assert set(PARAMS) - sent == set()


# Behaviour the fixtures cannot show ----------------------------------------------------------


def test_translated_request_reports_models_and_stream_flags() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": False},
    }
    result = to_messages_request(body, TABLE)
    assert result == TranslatedRequest(
        upstream={
            "model": "claude-haiku-4-5",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 8192,
            "stream": True,
        },
        model="claude-haiku-4-5",
        requested_model="gpt-4o",
        stream=True,
        include_usage=False,
        n=1,
    )


def test_prefill_refusal_names_the_model_and_prefill() -> None:
    body = {
        "model": "claude-opus-4-6",
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    }
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body, TABLE)
    assert "claude-opus-4-6" in info.value.message
    assert "prefill" in info.value.message


def test_refused_parameter_error_renders_as_openai_error() -> None:
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "a"}], "prediction": {}}
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body, TABLE)
    error = info.value.to_dict()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "prediction"
    assert error["code"] == "unsupported_parameter"


def test_n_is_bounded_by_the_gateway_setting() -> None:
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "a"}], "n": 8}
    assert to_messages_request(body, TABLE).n == 8
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body, TABLE, max_n=4)
    assert info.value.param == "n"
    assert "at most 4" in info.value.message


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("claude-opus-4-5", {"minimal": "low", "xhigh": "high", "max": "high"}),
        ("claude-opus-4-6", {"minimal": "low", "xhigh": "high", "max": "max"}),
        ("claude-opus-4-7", {"minimal": "low", "medium": "medium", "xhigh": "xhigh", "max": "max"}),
    ],
)
def test_reasoning_effort_maps_to_the_nearest_level_the_model_accepts(model: str, effort: dict[str, str]) -> None:
    for asked, sent in effort.items():
        body = {"model": model, "messages": [{"role": "user", "content": "a"}], "reasoning_effort": asked}
        result = to_messages_request(body, TABLE)
        assert result.upstream["output_config"] == {"effort": sent}, asked
        assert_valid_upstream(result, TABLE)


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh", "max"])
@pytest.mark.parametrize("model", ["claude-sonnet-4-0", "claude-haiku-4-5", "claude-opus-4-1", "claude-opus-4-5"])
@pytest.mark.parametrize("max_tokens", [None, 1025, 2000, 20000, 32000])
def test_thinking_budget_is_always_valid_against_max_tokens(effort: str, model: str, max_tokens: int | None) -> None:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "a"}], "reasoning_effort": effort}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    upstream = to_messages_request(body, TABLE).upstream
    budget = upstream["thinking"]["budget_tokens"]
    assert 1024 <= budget < upstream["max_tokens"] <= TABLE.capabilities(model).max_output_tokens
    if max_tokens is not None:
        assert upstream["max_tokens"] == max_tokens  # the client's limit is never raised


def test_no_model_name_in_translation_code() -> None:
    translate = Path(__file__).parent.parent.parent / "proxy" / "translate"
    for path in (*translate.glob("*.py"), *translate.glob("claude/*.py"), *translate.glob("chat/*.py")):
        assert "claude-" not in path.read_text(encoding="utf-8"), path.name


def test_default_input_schema_is_not_shared_between_requests() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "messages": [{"role": "user", "content": "a"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    first = to_messages_request(body, TABLE).upstream
    first["tools"][0]["input_schema"]["properties"]["x"] = {"type": "string"}
    second = to_messages_request(body, TABLE).upstream
    assert second["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_mislabeled_image_error_free_for_every_supported_type() -> None:
    payloads = {
        "image/png": "iVBORw0KGgoAAAANSUhEUg==",
        "image/jpeg": "/9j/4AAQSkZJRgABAQ==",
        "image/gif": "R0lGODlhAQABAAAA",
        "image/webp": "UklGRiQAAABXRUJQVlA4IA==",
    }
    for actual, data in payloads.items():
        for declared in payloads:
            part = {"type": "image_url", "image_url": {"url": f"data:{declared};base64,{data}"}}
            body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": [part]}]}
            source = to_messages_request(body, TABLE).upstream["messages"][0]["content"][0]["source"]
            assert source["media_type"] == actual, (declared, actual)


def test_default_valued_fields_ask_for_nothing_and_are_not_reported_as_dropped() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "auto"}}],
            }
        ],
        "temperature": 1,
        "top_p": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "logit_bias": {},
        "store": False,
        "metadata": {},
        "verbosity": "medium",
        "logprobs": False,
        "stream_options": {"include_obfuscation": False},
        "stream": True,
    }
    assert to_messages_request(body, TABLE, strict=True).dropped == ()


def test_dropped_fields_are_named_once_in_body_order_with_list_positions_left_out() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}}
    body = {
        "seed": 1,
        "model": "claude-haiku-4-5",
        "messages": [
            {"role": "user", "content": [image, image]},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": [image]},
        ],
        "temperature": 0.2,
    }
    result = to_messages_request(body, TABLE)
    assert result.dropped == ("seed", "messages[].content[].image_url.detail", "temperature")


def test_strict_fields_names_the_exact_path_of_a_dropped_content_field() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "high"}}
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": [image, image]}]}
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body, TABLE, strict=True)
    assert info.value.param == "messages[0].content[0].image_url.detail"


def test_a_temperature_above_claudes_range_is_reported_as_adapted_where_it_is_sent() -> None:
    table = ModelTable.with_overrides({"claude-haiku-4-5": {"sampling": ["temperature"]}})
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "a"}]}
    assert to_messages_request({**body, "temperature": 0.5}, table).dropped == ()
    result = to_messages_request({**body, "temperature": 1.5}, table)
    assert (result.upstream["temperature"], result.dropped) == (1.0, ("temperature",))
    with pytest.raises(InvalidRequest) as info:
        to_messages_request({**body, "temperature": 1.5}, table, strict=True)
    assert "1.5 is above Claude's range of 0 to 1 and is sent as 1" in info.value.message


# Property tests ------------------------------------------------------------------------------

WORDS = st.sampled_from(
    [
        "",
        " ",
        "user",
        "assistant",
        "system",
        "developer",
        "tool",
        "function",
        "text",
        "image_url",
        "file",
        "input_audio",
        "refusal",
        "auto",
        "none",
        "required",
        "f",
        "call_1",
        "{}",
        '{"a": 1}',
        "[1]",
        "https://example.com/a.png",
        "ftp://example.com/a.png",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==",
        "data:image/jpeg;base64,iVBORw0KGgo=",
        "data:image/png;base64,!!",
        "data:application/pdf;base64,JVBERi0xLjQK",
        "claude-haiku-4-5",
        "claude-opus-4-6",
        "gpt-4o",
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
    max_leaves=16,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `strategy`, sometimes any JSON: enough valid bodies get through to the deep checks."""
    return st.sampled_from([True] * 24 + [False]).flatmap(lambda good: strategy if good else JSON)


def _part(kind: str, field: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"type": _maybe(st.just(kind)), field: value})


PART = st.one_of(
    _part("text", "text", _maybe(STRINGS)),
    _part("refusal", "refusal", _maybe(STRINGS)),
    _part("image_url", "image_url", _maybe(st.fixed_dictionaries({"url": _maybe(WORDS)}, optional={"detail": JSON}))),
    _part(
        "file",
        "file",
        _maybe(st.fixed_dictionaries({"file_data": _maybe(WORDS)}, optional={"file_id": JSON, "filename": JSON})),
    ),
    _part("input_audio", "input_audio", JSON),
    _part("video", "video", JSON),
)
CONTENT = _maybe(STRINGS | st.lists(PART, min_size=1, max_size=3))
ARGUMENTS = _maybe(st.sampled_from(["{}", '{"a": 1}', ""]) | WORDS)
CALL_ID = _maybe(st.sampled_from(["call_1", "call_2"]))
CALL = st.fixed_dictionaries(
    {
        "id": CALL_ID,
        "type": _maybe(st.just("function")),
        "function": _maybe(
            st.fixed_dictionaries({"name": _maybe(st.sampled_from(["f", "g"])), "arguments": ARGUMENTS})
        ),
    }
)
TEXT_CONTENT = _maybe(STRINGS | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": STRINGS}), max_size=2))


def _message(role: str, required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"role": _maybe(st.just(role)), **required}, optional=optional)


USER = _message("user", {"content": CONTENT}, {"name": JSON})
# Weighted by repetition: a function message is valid only after a legacy call, so it comes rarely.
MESSAGE = st.one_of(
    USER,
    USER,
    _message("system", {"content": TEXT_CONTENT}, {}),
    _message("developer", {"content": TEXT_CONTENT}, {"name": JSON}),
    _message(
        "assistant",
        {},
        {
            "content": _maybe(st.none() | CONTENT),
            "tool_calls": _maybe(st.lists(CALL, max_size=2)),
            "function_call": _maybe(st.fixed_dictionaries({"name": st.just("f"), "arguments": ARGUMENTS})),
            "refusal": _maybe(st.none() | STRINGS),
        },
    ),
    _message("tool", {"tool_call_id": CALL_ID, "content": TEXT_CONTENT}, {}),
    _message("tool", {"tool_call_id": CALL_ID, "content": TEXT_CONTENT}, {}),
    _message("function", {"name": _maybe(st.sampled_from(["f", "g"])), "content": _maybe(st.none() | STRINGS)}, {}),
)
TOOL = st.fixed_dictionaries(
    {
        "type": _maybe(st.just("function")),
        "function": _maybe(
            st.fixed_dictionaries(
                {"name": _maybe(st.sampled_from(["f", "g"]))},
                optional={"parameters": JSON, "description": JSON, "strict": JSON},
            )
        ),
    }
)
IGNORED = ("seed", "presence_penalty", "logit_bias", "metadata", "unknown_field")
PARAM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": _maybe(st.integers(min_value=-1, max_value=200_000)),
    "max_completion_tokens": _maybe(st.integers(min_value=-1, max_value=200_000)),
    "stop": _maybe(STRINGS | st.lists(STRINGS, max_size=3)),
    "temperature": _maybe(st.floats(min_value=0, max_value=2)),
    "top_p": _maybe(st.floats(min_value=0, max_value=1)),
    "user": _maybe(STRINGS),
    "safety_identifier": _maybe(STRINGS),
    "tools": _maybe(st.lists(TOOL, max_size=3)),
    "functions": _maybe(st.lists(TOOL.map(lambda tool: tool.get("function")), max_size=2)),
    "tool_choice": _maybe(
        st.sampled_from(["auto", "none", "required"])
        | st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": WORDS})})
    ),
    "function_call": _maybe(st.sampled_from(["auto", "none", {"name": "f"}])),
    "parallel_tool_calls": _maybe(st.booleans()),
    "stream": _maybe(st.booleans()),
    "stream_options": _maybe(st.fixed_dictionaries({}, optional={"include_usage": _maybe(st.booleans())})),
    "n": _maybe(st.integers(min_value=0, max_value=10)),
    "reasoning_effort": _maybe(st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max"])),
    "response_format": _maybe(
        st.sampled_from([{"type": "text"}, {"type": "json_object"}])
        | st.fixed_dictionaries(
            {"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries({"name": WORDS, "schema": JSON})}
        )
    ),
    "service_tier": _maybe(st.sampled_from(["auto", "default", "flex", "scale", "priority", "fast"])),
    "web_search_options": _maybe(
        st.fixed_dictionaries(
            {},
            optional={
                "search_context_size": _maybe(st.sampled_from(["low", "medium", "high"])),
                "user_location": _maybe(
                    st.fixed_dictionaries(
                        {"type": st.just("approximate"), "approximate": st.dictionaries(WORDS, STRINGS, max_size=3)}
                    )
                ),
            },
        )
    ),
    "prompt_cache_retention": _maybe(st.sampled_from(["in_memory", "24h"])),
    "prompt_cache_options": _maybe(
        st.fixed_dictionaries({}, optional={"mode": st.sampled_from(["implicit", "explicit"]), "ttl": st.just("30m")})
    ),
}
STRUCTURED_BODY = st.fixed_dictionaries(
    {
        "model": _maybe(
            st.sampled_from(
                [
                    "claude-haiku-4-5",
                    "claude-opus-4-6",
                    "gpt-4o",
                    "claude-opus-4-7",
                    "claude-fable-5",
                    "claude-sonnet-5-5",
                ]
            )
        ),
        "messages": _maybe(st.tuples(USER, st.lists(MESSAGE, max_size=5)).map(lambda t: [t[0], *t[1]])),
    },
    optional={**PARAM_VALUES, **{name: JSON for name in IGNORED}},
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_body_translates_or_raises_invalid_request(body: Any) -> None:
    translate_or_refuse(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STRUCTURED_BODY, st.booleans())
def test_request_shaped_body_translates_or_raises_invalid_request(body: Any, auto_cache: bool) -> None:
    translate_or_refuse(body, auto_cache=auto_cache)


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
