"""Claude-side tools and reasoning (proxy/translate/claude/tools.py, reasoning.py) called the way
a dialect with flat tool definitions (the Responses API's) calls them."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.models import ModelTable
from proxy.translate.claude.reasoning import apply_reasoning_effort
from proxy.translate.claude.tools import (
    approximate_location,
    function_tool,
    named_tool_choice,
    parallel_tool_calls,
    tool_choice_mode,
    web_search_tool,
)
from proxy.translate.params import OMIT, ClaudeContext

TABLE = ModelTable.with_overrides()


def context(model: str = "claude-haiku-4-5", **upstream: Any) -> ClaudeContext:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Go"}]}], **upstream}
    return ClaudeContext(model=model, caps=TABLE.capabilities(model), upstream=body)


def test_a_flat_function_definition_becomes_a_claude_tool_with_errors_at_its_own_path() -> None:
    tool = function_tool("f", "Finds.", {"properties": {}}, True, "tools[2]")
    assert tool == {
        "name": "f",
        "description": "Finds.",
        "input_schema": {"type": "object", "properties": {}},
        "strict": True,
    }
    with pytest.raises(InvalidRequest) as info:
        function_tool("", None, None, None, "tools[2]")
    assert info.value.param == "tools[2].name"
    with pytest.raises(InvalidRequest) as info:
        function_tool("f", None, None, "yes", "tools[2]")
    assert info.value.param == "tools[2].strict"


def test_tool_choice_modes_need_tools_except_none() -> None:
    ctx = context(tools=[{"name": "f"}])
    assert tool_choice_mode("required", "tool_choice", ctx) == {"type": "any"}
    assert tool_choice_mode("none", "tool_choice", context()) is OMIT
    with pytest.raises(InvalidRequest) as info:
        tool_choice_mode("auto", "tool_choice", context())
    assert info.value.param == "tool_choice"


def test_a_named_choice_must_name_a_defined_tool_at_the_given_path() -> None:
    ctx = context(tools=[{"name": "f"}])
    assert named_tool_choice("f", "tool_choice.name", "tool_choice", ctx) == {"type": "tool", "name": "f"}
    with pytest.raises(InvalidRequest) as info:
        named_tool_choice("g", "tool_choice.name", "tool_choice", ctx)
    assert (info.value.param, info.value.code) == ("tool_choice.name", "invalid_value")


def test_no_parallel_tool_calls_amends_the_chosen_tool_choice() -> None:
    ctx = context(tools=[{"name": "f"}], tool_choice={"type": "any"})
    assert parallel_tool_calls(False, "parallel_tool_calls", ctx) == {"type": "any", "disable_parallel_tool_use": True}
    assert parallel_tool_calls(True, "parallel_tool_calls", ctx) is OMIT


def test_web_search_with_a_flat_location() -> None:
    tool = web_search_tool("tools[0]", context())
    tool["user_location"] = approximate_location({"city": "Paris", "country": ""}, "tools[0].user_location")
    assert tool == {
        "type": TABLE.capabilities("claude-haiku-4-5").web_search,
        "name": "web_search",
        "user_location": {"type": "approximate", "city": "Paris"},
    }
    with pytest.raises(InvalidRequest) as info:
        approximate_location({"city": 1}, "tools[0].user_location")
    assert info.value.param == "tools[0].user_location.city"


def test_reasoning_effort_errors_name_the_dialects_parameters() -> None:
    ctx = context(max_tokens=1000)
    ctx.max_tokens_given = True
    with pytest.raises(InvalidRequest) as info:
        apply_reasoning_effort("high", "reasoning.effort", ctx, max_tokens_param="max_output_tokens")
    assert info.value.param == "reasoning.effort"
    assert "max_output_tokens is 1000; raise it or drop reasoning.effort" in info.value.message


def test_reasoning_effort_sets_a_thinking_budget_below_max_tokens() -> None:
    ctx = context(max_tokens=4096)
    ctx.max_tokens_given = True
    assert apply_reasoning_effort("medium", "reasoning.effort", ctx) is OMIT
    assert ctx.upstream["thinking"] == {"type": "enabled", "budget_tokens": 4095}
