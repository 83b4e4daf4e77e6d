"""Today's per-model rules on the Claude side (issue 16), as the shipped table states them: forced
tool use where a model refuses it, never a manual thinking budget where a model has none, the
effort levels a model takes with thinking off, and the adaptations reported as dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.models import EFFORT_LEVELS, ModelTable
from proxy.simulator.validate import MODEL_IDS
from proxy.translate.claude.reasoning import EFFORTS, accepted_efforts, apply_reasoning_effort, thinking_off
from proxy.translate.claude.tools import named_tool_choice, parallel_tool_calls, tool_choice_mode
from proxy.translate.params import OMIT, ClaudeContext

TABLE = ModelTable.with_overrides()
NO_FORCED_TOOLS = ("claude-fable-5-1", "claude-mythos-5-1", "claude-opus-5-5")
# Opus 4.7 and later, Sonnet 5 and the 5.x Fable and Mythos refuse `thinking.type: enabled`.
NO_MANUAL_BUDGET = (
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-opus-5-5",
    "claude-sonnet-5",
    "claude-sonnet-5-5",
    "claude-fable-5",
    "claude-fable-5-1",
    "claude-fable-5-2",
    "claude-mythos-5",
    "claude-mythos-5-1",
    "claude-mythos-5-2",
)


def context(model: str, table: ModelTable = TABLE, *, strict: bool = False, **upstream: Any) -> ClaudeContext:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Go"}]}], "max_tokens": 8192}
    return ClaudeContext(model=model, caps=table.capabilities(model), upstream={**body, **upstream}, strict=strict)


def with_tools(model: str) -> ClaudeContext:
    return context(model, tools=[{"name": "f", "input_schema": {"type": "object"}}])


# --- forced tool use -------------------------------------------------------------------------------


def test_the_models_that_refuse_forced_tool_use_are_fable_and_mythos_5_1_and_opus_5_5() -> None:
    assert {model for model in MODEL_IDS if not TABLE.capabilities(model).forced_tool_choice} == set(NO_FORCED_TOOLS)


@pytest.mark.parametrize("model", NO_FORCED_TOOLS)
def test_a_forced_tool_choice_on_a_model_that_refuses_it_is_a_400_naming_tool_choice(model: str) -> None:
    forcing: list[Callable[[ClaudeContext], Any]] = [
        lambda ctx: tool_choice_mode("required", "tool_choice", ctx),
        lambda ctx: named_tool_choice("f", "tool_choice.function.name", "tool_choice", ctx),
    ]
    for force in forcing:
        with pytest.raises(InvalidRequest) as info:
            force(with_tools(model))
        assert (info.value.status_code, info.value.param, info.value.code) == (400, "tool_choice", "unsupported_value")
        assert model in info.value.message and "'auto'" in info.value.message


@pytest.mark.parametrize("model", NO_FORCED_TOOLS)
def test_auto_and_none_stay_available_where_forcing_is_refused(model: str) -> None:
    assert tool_choice_mode("auto", "tool_choice", with_tools(model)) == {"type": "auto"}
    assert tool_choice_mode("none", "tool_choice", with_tools(model)) == {"type": "none"}
    ctx = with_tools(model)
    ctx.upstream["tool_choice"] = {"type": "auto"}
    assert parallel_tool_calls(False, "parallel_tool_calls", ctx) == {"type": "auto", "disable_parallel_tool_use": True}


def test_the_refusal_names_the_parameter_the_client_used() -> None:
    with pytest.raises(InvalidRequest) as info:
        named_tool_choice("f", "function_call.name", "function_call", with_tools("claude-opus-5-5"))
    assert info.value.param == "function_call"


def test_forced_tool_use_stays_available_on_other_models() -> None:
    assert tool_choice_mode("required", "tool_choice", with_tools("claude-opus-5")) == {"type": "any"}


def test_an_operator_row_can_say_a_model_refuses_forced_tool_use() -> None:
    table = ModelTable.with_overrides({"claude-opus-5*": {"forced_tool_choice": False}})
    ctx = context("claude-opus-5", table, tools=[{"name": "f", "input_schema": {"type": "object"}}])
    with pytest.raises(InvalidRequest):
        tool_choice_mode("required", "tool_choice", ctx)


# --- no manual budgets -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", NO_MANUAL_BUDGET)
def test_the_table_gives_no_manual_budget_to_the_models_that_refuse_one(model: str) -> None:
    assert "enabled" not in TABLE.capabilities(model).thinking


@pytest.mark.parametrize("model", MODEL_IDS)
@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh", "max"])
def test_reasoning_effort_sends_budget_tokens_only_to_a_model_that_takes_only_a_manual_budget(
    model: str, effort: str
) -> None:
    caps = TABLE.capabilities(model)
    ctx = context(model)
    try:
        apply_reasoning_effort(effort, "reasoning_effort", ctx)
    except InvalidRequest:
        assert not caps.thinking & {"adaptive", "enabled"} and not caps.effort
        return
    thinking = ctx.upstream.get("thinking", {})
    if "budget_tokens" in thinking:
        assert "enabled" in caps.thinking and "adaptive" not in caps.thinking
    if "adaptive" in caps.thinking:
        assert thinking.get("type", "adaptive") == "adaptive"


# --- effort with thinking off ----------------------------------------------------------------------


def test_opus_5_takes_effort_up_to_high_with_thinking_off_and_every_level_with_it_on() -> None:
    caps = TABLE.capabilities("claude-opus-5")
    assert accepted_efforts(caps, without_thinking=True) == {"low", "medium", "high"}
    assert accepted_efforts(caps, without_thinking=False) == set(EFFORT_LEVELS)
    assert TABLE.capabilities("claude-opus-5-5").effort_without_thinking is None


@pytest.mark.parametrize(
    ("thinking", "caps_thinking", "off"),
    [
        ({"type": "disabled"}, ["adaptive", "disabled"], True),
        ({"type": "between_tools"}, ["adaptive", "between_tools"], True),
        ({"type": "adaptive"}, ["adaptive", "disabled"], False),
        ({"type": "enabled", "budget_tokens": 2048}, ["enabled", "disabled"], False),
        (None, ["adaptive"], False),  # thinking always on
        (None, ["disabled"], True),  # a model that cannot think
    ],
)
def test_thinking_is_off_when_disabled_or_when_the_model_cannot_think(
    thinking: dict[str, Any] | None, caps_thinking: list[str], off: bool
) -> None:
    table = ModelTable.with_overrides({"claude-test*": {"thinking": caps_thinking}})
    upstream = {} if thinking is None else {"thinking": thinking}
    assert thinking_off(upstream, table.capabilities("claude-test")) is off


# A model that cannot think but takes effort, capped at `high` without thinking (Opus 5's rule).
CAPPED = ModelTable.with_overrides(
    {"claude-capped*": {"thinking": ["disabled"], "effort_without_thinking": ["low", "medium", "high"]}}
)


@pytest.mark.parametrize(("asked", "sent"), [("low", "low"), ("high", "high"), ("xhigh", "high"), ("max", "high")])
def test_an_effort_above_the_cap_without_thinking_is_sent_as_the_nearest_accepted_level(asked: str, sent: str) -> None:
    ctx = context("claude-capped", CAPPED)
    assert apply_reasoning_effort(asked, "reasoning_effort", ctx) is OMIT
    assert ctx.upstream["output_config"] == {"effort": sent}
    assert "thinking" not in ctx.upstream
    assert ctx.dropped == ([] if asked == sent else ["reasoning_effort"])


def test_under_strict_fields_an_effort_above_the_cap_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        apply_reasoning_effort("max", "reasoning.effort", context("claude-capped", CAPPED, strict=True))
    assert (info.value.param, info.value.code) == ("reasoning.effort", "unsupported_value")


def test_reasoning_effort_none_on_opus_5_disables_thinking_and_sends_no_effort_above_the_cap() -> None:
    ctx = context("claude-opus-5")
    apply_reasoning_effort("none", "reasoning_effort", ctx)
    assert ctx.upstream["thinking"] == {"type": "disabled"}
    assert "output_config" not in ctx.upstream  # the model's default effort, high, is within the cap
    assert ctx.dropped == []


@pytest.mark.parametrize("effort", ["xhigh", "max"])
def test_opus_5_thinks_adaptively_at_its_highest_efforts(effort: str) -> None:
    ctx = context("claude-opus-5")
    apply_reasoning_effort(effort, "reasoning_effort", ctx)
    assert (ctx.upstream["thinking"], ctx.upstream["output_config"], ctx.dropped) == (
        {"type": "adaptive"},
        {"effort": effort},
        [],
    )


# --- adaptations are reported ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "asked", "sent"), [("claude-opus-4-6", "xhigh", "high"), ("claude-opus-4-5", "max", "high")]
)
def test_an_effort_the_model_lacks_is_reported_as_adapted(model: str, asked: str, sent: str) -> None:
    ctx = context(model)
    apply_reasoning_effort(asked, "reasoning_effort", ctx)
    assert ctx.upstream["output_config"] == {"effort": sent}
    assert ctx.dropped == ["reasoning_effort"]


def test_minimal_is_low_and_not_reported() -> None:
    ctx = context("claude-opus-4-7")
    apply_reasoning_effort("minimal", "reasoning_effort", ctx)
    assert (ctx.upstream["output_config"], ctx.dropped) == ({"effort": EFFORTS["minimal"]}, [])


def test_none_on_a_model_that_always_thinks_is_its_lowest_effort_reported_as_adapted() -> None:
    ctx = context("claude-fable-5-2")
    apply_reasoning_effort("none", "reasoning_effort", ctx)
    assert (ctx.upstream.get("thinking"), ctx.upstream["output_config"]) == (None, {"effort": "low"})
    assert ctx.dropped == ["reasoning_effort"]
    with pytest.raises(InvalidRequest):
        apply_reasoning_effort("none", "reasoning_effort", context("claude-fable-5-2", strict=True))
