"""How much work a request costs the translators, and how much a request may hold.

The translators run on the event loop: work that grows faster than the body stalls every client
(20,000 tool results used to take 20 seconds). Growth is measured by counting the Python lines and
calls executed (`sys.settrace`), which is deterministic: no clock, so no flakiness on a busy machine.
The limits (`max_messages`, `max_content_blocks`, `max_tools`, the model name's length) are checked
on the translator and through the app, on both the chat and the native route.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Any

import httpx
import pytest
import respx

from proxy.config import Settings
from proxy.errors import InvalidRequest
from proxy.models import ModelTable
from proxy.translate.chat.request import to_messages_request
from proxy.translate.chat.response import to_chat_completion
from proxy.translate.checks import MAX_MODEL_NAME_LENGTH
from tests.anthropic_schema import assert_valid_messages_request
from tests.test_app import MESSAGE, UPSTREAM, app_client, assert_openai_error, settings

TABLE = ModelTable.with_overrides()
MODEL = "claude-haiku-4-5"
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
N = 300  # big enough that quadratic work dominates the per-request constant; 4N stays quick

# Request bodies of size ~n, one per way a request can grow -------------------------------------


def _call(k: int) -> dict[str, Any]:
    return {"id": f"toolu_{k}", "type": "function", "function": {"name": "f", "arguments": '{"k": 1}'}}


def _tool_results(n: int) -> dict[str, Any]:
    # One assistant turn of n calls, then n tool messages merged into one user turn.
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": None, "tool_calls": [_call(k) for k in range(n)]},
    ]
    messages += [{"role": "tool", "tool_call_id": f"toolu_{k}", "content": f"result {k}"} for k in range(n)]
    return {"model": MODEL, "messages": messages, "tools": [{"type": "function", "function": {"name": "f"}}]}


def _function_results(n: int) -> dict[str, Any]:
    # n legacy calls with n names, answered oldest first: the worst order for finding each call.
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Go"}]
    messages += [{"role": "assistant", "function_call": {"name": f"f{k}", "arguments": "{}"}} for k in range(n)]
    messages += [{"role": "function", "name": f"f{k}", "content": f"result {k}"} for k in range(n)]
    return {"model": MODEL, "messages": messages, "functions": [{"name": f"f{k}"} for k in range(n)]}


def _thinking_turns(n: int, *, text: bool) -> dict[str, Any]:
    # n assistant messages echoing thinking_blocks (with or without text), merged into one turn.
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Go"}]
    for k in range(n):
        thinking = {"type": "thinking", "thinking": f"step {k}", "signature": SIGNATURE}
        content = f"Checking {k}." if text else None
        messages.append(
            {"role": "assistant", "content": content, "thinking_blocks": [thinking], "tool_calls": [_call(k)]}
        )
    messages += [{"role": "tool", "tool_call_id": f"toolu_{k}", "content": "ok"} for k in range(n)]
    return {"model": MODEL, "messages": messages, "tools": [{"type": "function", "function": {"name": "f"}}]}


def _content_parts(n: int) -> dict[str, Any]:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}}
    parts = [{"type": "text", "text": f"part {k}"} if k % 2 else image for k in range(n)]
    breakpoint_ = {"type": "text", "text": "cached", "prompt_cache_breakpoint": {"mode": "explicit"}}
    system = [{"type": "text", "text": f"rule {k}"} for k in range(n)]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": [*parts, breakpoint_]}]
    return {"model": MODEL, "messages": messages, "stop": [f"stop {k}" for k in range(n)]}


def _conversation(n: int) -> dict[str, Any]:
    # n exchanges of user and assistant turns, with the gateway's automatic cache breakpoints.
    messages: list[dict[str, Any]] = []
    for k in range(n):
        messages += [{"role": "user", "content": f"question {k}"}, {"role": "assistant", "content": f"answer {k}"}]
    messages.append({"role": "user", "content": "last"})
    return {"model": MODEL, "messages": messages}


def _tools(n: int) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}
    tools = [{"type": "function", "function": {"name": f"f{k}", "parameters": schema}} for k in range(n)]
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"anyOf": [schema] * n}}}
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Go"}],
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": f"f{n - 1}"}},
        "response_format": response_format,
    }


REQUESTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "tool messages": _tool_results,
    "function messages": _function_results,
    "assistant messages with thinking_blocks": lambda n: _thinking_turns(n, text=False),
    "assistant messages with thinking_blocks and text": lambda n: _thinking_turns(n, text=True),
    "content parts": _content_parts,
    "alternating turns": _conversation,
    "tools and schemas": _tools,
}


def _message(n: int) -> dict[str, Any]:
    """An upstream Message with n text blocks (each cited), n tool calls and n thinking blocks."""
    citation = {"type": "web_search_result_location", "url": "https://example.com", "title": "t", "cited_text": "c"}
    content: list[dict[str, Any]] = []
    for k in range(n):
        content.append({"type": "thinking", "thinking": f"step {k}", "signature": SIGNATURE})
        content.append({"type": "text", "text": f"text {k}", "citations": [citation]})
        content.append({"type": "tool_use", "id": f"toolu_{k}", "name": "f", "input": {"k": k}})
    return {**MESSAGE, "content": content, "stop_reason": "tool_use"}


# Counting work ---------------------------------------------------------------------------------


def work(run: Callable[[], object]) -> int:
    """Python lines executed and functions called while `run` runs: a deterministic measure of
    work. (Loops inside C code count once; the translators' own loops are all Python.)"""
    events = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal events
        events += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        run()
    finally:
        sys.settrace(previous)
    return events


def growth(make: Callable[[int], Any], run: Callable[[Any], object]) -> float:
    run(make(N))  # warm the caches (model capabilities) so that both measures see the same path
    small, large = make(N), make(4 * N)
    return work(lambda: run(large)) / work(lambda: run(small))


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_request_translation_work_grows_linearly_with_the_request(kind: str) -> None:
    make = REQUESTS[kind]
    assert_valid_messages_request(to_messages_request(make(N), TABLE, auto_cache=True).upstream)
    ratio = growth(make, lambda body: to_messages_request(body, TABLE, auto_cache=True))
    assert ratio <= 6, f"4x the input cost {ratio:.1f}x the work (quadratic would be ~16x)"


def test_response_translation_work_grows_linearly_with_the_reply() -> None:
    ratio = growth(_message, lambda message: to_chat_completion(message, created=0))
    assert ratio <= 6, f"4x the reply cost {ratio:.1f}x the work (quadratic would be ~16x)"


def test_merged_tool_results_keep_their_order_before_the_text_that_follows() -> None:
    body = _tool_results(3)
    body["messages"].append({"role": "user", "content": "And now?"})
    turn = to_messages_request(body, TABLE).upstream["messages"][-1]["content"]
    assert [block.get("tool_use_id", block["type"]) for block in turn] == ["toolu_0", "toolu_1", "toolu_2", "text"]


def test_legacy_function_results_answer_the_most_recent_call_of_their_name() -> None:
    call = {"name": "f", "arguments": "{}"}
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "function_call": call},
            {"role": "assistant", "function_call": call},
            {"role": "function", "name": "f", "content": "second"},
            {"role": "function", "name": "f", "content": "first"},
        ],
        "functions": [{"name": "f"}],
    }
    results = to_messages_request(body, TABLE).upstream["messages"][-1]["content"]
    assert [(r["tool_use_id"], r["content"]) for r in results] == [("call_2", "second"), ("call_1", "first")]
    body["messages"].append({"role": "function", "name": "f", "content": "third"})
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body, TABLE)
    assert info.value.param == "messages[5].name"


# Limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "body", "param"),
    [
        ({"max_messages": 3}, _conversation(2), "messages"),
        ({"max_content_blocks": 10}, _content_parts(6), "messages[1].content"),
        ({"max_content_blocks": 10}, _tool_results(10), "messages[1].tool_calls"),
        ({"max_content_blocks": 12}, _tool_results(10), "messages[3].content"),
        ({"max_content_blocks": 10}, _thinking_turns(6, text=True), "messages[4].thinking_blocks"),
        ({"max_tools": 5}, _tools(6), "tools"),
        ({"max_tools": 5}, _function_results(6), "functions"),
    ],
)
def test_a_request_past_a_limit_is_a_400_naming_the_limit_its_value_and_the_field(
    options: dict[str, int], body: dict[str, Any], param: str
) -> None:
    ((setting, value),) = options.items()
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body, TABLE, **options)
    assert (info.value.status_code, info.value.param) == (400, param)
    assert setting in info.value.message and str(value) in info.value.message
    assert info.value.code == "array_above_max_length"
    to_messages_request(body, TABLE)  # within the default limits


def test_a_request_at_a_limit_is_accepted() -> None:
    to_messages_request(_conversation(1), TABLE, max_messages=3)
    to_messages_request(_tools(6), TABLE, max_tools=6)
    to_messages_request(_tool_results(2), TABLE, max_content_blocks=1 + 2 + 2)  # "Go", two calls, two results


def test_the_settings_default_limits_are_the_translators() -> None:
    defaults = inspect.signature(to_messages_request).parameters
    for name in ("max_messages", "max_content_blocks", "max_tools", "max_n"):
        assert Settings.model_fields[name].default == defaults[name].default, name


def test_a_model_name_past_the_bound_is_refused_without_being_echoed() -> None:
    name = "m" * (MAX_MODEL_NAME_LENGTH + 1)
    with pytest.raises(InvalidRequest) as info:
        to_messages_request({"model": name, "messages": [{"role": "user", "content": "Hi"}]}, TABLE)
    assert (info.value.param, info.value.code) == ("model", "string_above_max_length")
    assert str(MAX_MODEL_NAME_LENGTH) in info.value.message and name not in info.value.message
    to_messages_request({"model": "m" * MAX_MODEL_NAME_LENGTH, "messages": [{"role": "user", "content": "Hi"}]}, TABLE)


# Through the app ---------------------------------------------------------------------------------

LONG_MODEL = "claude-" + "x" * 100_000
NATIVE = {"max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client(mock: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings(), mock) as c:
        yield c


@pytest.fixture
async def limited(mock: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings(max_messages=2, max_content_blocks=4, max_tools=1), mock) as c:
        yield c


@pytest.mark.anyio
async def test_a_long_model_name_is_a_400_on_both_routes_and_never_reaches_metrics(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    chat = await client.post("/v1/chat/completions", json={"model": LONG_MODEL, "messages": NATIVE["messages"]})
    error = assert_openai_error(chat, 400, param="model")
    assert error["code"] == "string_above_max_length"
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        native = await client.post(path, json={**NATIVE, "model": LONG_MODEL})
        assert native.status_code == 400, path
        body = native.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", path
        assert "model" in body["error"]["message"], path
    assert not route.called
    metrics = await client.get("/metrics", headers={"authorization": ""})
    assert metrics.status_code == 200
    assert "x" * MAX_MODEL_NAME_LENGTH not in metrics.text
    assert len(metrics.content) < 1_000_000


@pytest.mark.anyio
async def test_a_model_name_at_the_bound_is_forwarded_on_both_routes(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    name = "claude-" + "x" * (MAX_MODEL_NAME_LENGTH - len("claude-"))
    chat = await client.post("/v1/chat/completions", json={"model": name, "messages": NATIVE["messages"]})
    native = await client.post("/v1/messages", json={**NATIVE, "model": name})
    assert (chat.status_code, native.status_code) == (200, 200), (chat.text, native.text)
    assert route.call_count == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "a"}] * 3}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 5}]}, "messages[0].content"),
        ({"messages": NATIVE["messages"], "tools": [{"type": "function", "function": {"name": "f"}}] * 2}, "tools"),
    ],
    ids=["max_messages", "max_content_blocks", "max_tools"],
)
async def test_the_configured_limits_reach_the_chat_route(
    limited: httpx.AsyncClient, mock: respx.MockRouter, body: dict[str, Any], param: str
) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    response = await limited.post("/v1/chat/completions", json={"model": MODEL, **body})
    error = assert_openai_error(response, 400, param=param)
    assert error["code"] == "array_above_max_length"
    assert not route.called
