"""The parameter-table engine (proxy/translate/params.py): table order, absent parameters and
their defaults, `yields_to`, and dotted names read through nested objects (the Responses API's
``reasoning.effort``, ``text.format``)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.models import ModelCaps, ModelTable
from proxy.translate.params import (
    MAX_DROPPED,
    OMIT,
    UNNAMED,
    ClaudeContext,
    Param,
    apply_params,
    dropped_fields,
    ignore,
    lookup,
    refuse,
)

TABLE = ModelTable.with_overrides()
MODEL = "claude-haiku-4-5"


def context() -> ClaudeContext:
    return ClaudeContext(model=MODEL, caps=TABLE.capabilities(MODEL), upstream={})


def seen(value: Any, name: str, context: ClaudeContext) -> Any:
    """A converter that reports what it was called with."""
    return {"value": value, "name": name}


def test_a_dotted_name_is_read_inside_its_parent_object_and_converted_under_its_full_name() -> None:
    ctx = context()
    apply_params({"reasoning.effort": Param("out", seen)}, {"reasoning": {"effort": "high"}}, ctx)
    assert ctx.upstream == {"out": {"value": "high", "name": "reasoning.effort"}}


def test_a_name_nested_two_levels_deep_is_read_too() -> None:
    ctx = context()
    apply_params({"text.format.type": Param("out")}, {"text": {"format": {"type": "json_schema"}}}, ctx)
    assert ctx.upstream == {"out": "json_schema"}


@pytest.mark.parametrize("body", [{}, {"reasoning": None}, {"reasoning": {}}, {"reasoning": {"effort": None}}])
def test_a_dotted_name_with_an_absent_or_null_parent_or_value_is_absent(body: dict[str, Any]) -> None:
    ctx = context()
    apply_params({"reasoning.effort": Param("out", seen, default=lambda caps: "default")}, body, ctx)
    assert ctx.upstream == {"out": "default"}


@pytest.mark.parametrize("parent", ["high", 1, True, ["effort"]])
def test_a_parent_that_is_not_an_object_is_a_400_naming_the_parent(parent: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        apply_params({"reasoning.effort": Param("out", seen)}, {"reasoning": parent}, context())
    assert (info.value.status_code, info.value.param, info.value.code) == (400, "reasoning", "invalid_type")
    assert "expected an object" in info.value.message


def test_a_deeper_parent_that_is_not_an_object_is_named_by_its_dotted_path() -> None:
    with pytest.raises(InvalidRequest) as info:
        apply_params({"text.format.type": Param("out")}, {"text": {"format": "json"}}, context())
    assert info.value.param == "text.format"


def test_lookup_reads_plain_and_dotted_names() -> None:
    body = {"a": 1, "b": {"c": {"d": 2}}}
    assert (lookup(body, "a"), lookup(body, "b.c.d"), lookup(body, "b.x.d")) == (1, 2, None)


def test_a_parameter_yields_to_a_dotted_one_that_is_sent() -> None:
    table = {"text.verbosity": Param("out", seen), "verbosity": Param("out", seen, yields_to="text.verbosity")}
    ctx = context()
    apply_params(table, {"verbosity": "low", "text": {"verbosity": "high"}}, ctx)
    assert ctx.upstream["out"]["name"] == "text.verbosity"
    ctx = context()
    apply_params(table, {"verbosity": "low", "text": {}}, ctx)
    assert ctx.upstream["out"]["name"] == "verbosity"


def test_entries_run_in_table_order_and_a_later_one_sees_the_earlier_ones_result() -> None:
    def after(value: Any, name: str, context: ClaudeContext) -> Any:
        return [context.upstream.get("first"), value]

    ctx = context()
    apply_params({"b": Param("second", after), "a": Param("first")}, {"a": 1, "b": 2}, ctx)
    assert ctx.upstream["second"] == [None, 2]
    ctx = context()
    apply_params({"a": Param("first"), "b": Param("second", after)}, {"a": 1, "b": 2}, ctx)
    assert ctx.upstream["second"] == [1, 2]


def test_a_default_fills_only_an_unset_target_and_reads_the_models_capabilities() -> None:
    def limit(caps: ModelCaps) -> int:
        return caps.max_output_tokens

    table: dict[str, Param[ClaudeContext]] = {
        "max_output_tokens": Param("max_tokens", default=limit),
        "other": Param("max_tokens", default=limit),
    }
    ctx = context()
    apply_params(table, {"max_output_tokens": 5}, ctx)
    assert ctx.upstream == {"max_tokens": 5}
    ctx = context()
    apply_params(table, {}, ctx)
    assert ctx.upstream == {"max_tokens": TABLE.capabilities(MODEL).max_output_tokens}


def test_omit_and_a_bare_param_add_nothing_and_unknown_fields_are_ignored() -> None:
    ctx = context()
    apply_params({"a": Param("a", lambda value, name, context: OMIT), "b": Param()}, {"a": 1, "b": 2, "c": 3}, ctx)
    assert ctx.upstream == {}


def test_refuse_is_a_400_naming_the_parameter_unless_the_value_is_harmless() -> None:
    table = {"logprobs": Param(None, refuse("is not supported.", harmless=lambda value: not value))}
    apply_params(table, {"logprobs": False}, context())
    with pytest.raises(InvalidRequest) as info:
        apply_params(table, {"logprobs": True}, context())
    assert (info.value.param, info.value.code) == ("logprobs", "unsupported_parameter")
    assert info.value.message == "Unsupported parameter: 'logprobs' is not supported."


# Saying what was dropped ------------------------------------------------------------------------


def test_a_bare_param_and_an_unknown_field_are_recorded_as_dropped() -> None:
    ctx = context()
    apply_params(
        {"seed": Param(), "a": Param("a")}, {"x_custom": 1, "a": 1, "seed": 7, "model": "m"}, ctx, core={"model"}
    )
    assert ctx.upstream == {"a": 1}
    assert sorted(ctx.dropped) == ["seed", "x_custom"]


def test_unknown_children_of_a_parent_the_table_reads_dotted_names_in_are_dropped_by_their_path() -> None:
    ctx = context()
    table = {"reasoning.effort": Param("effort")}
    apply_params(table, {"reasoning": {"effort": "low", "budget": 9, "other": None}}, ctx)
    assert ctx.dropped == ["reasoning.budget"]


def test_null_fields_are_not_given_and_so_never_dropped() -> None:
    ctx = context()
    apply_params({"seed": Param()}, {"seed": None, "unknown": None}, ctx)
    assert ctx.dropped == []


def test_ignore_spares_a_harmless_value_and_drops_any_other() -> None:
    table = {"presence_penalty": Param(None, ignore(harmless=lambda value: value == 0))}
    ctx = context()
    apply_params(table, {"presence_penalty": 0}, ctx)
    assert ctx.dropped == []
    apply_params(table, {"presence_penalty": 0.5}, ctx)
    assert ctx.dropped == ["presence_penalty"]


def test_a_parameter_that_yields_to_one_also_sent_is_not_dropped() -> None:
    # OpenAI ignores it the same way: the answer does not differ because of it.
    ctx = context()
    apply_params({"a": Param("x"), "b": Param("x", yields_to="a")}, {"a": 1, "b": 2}, ctx)
    assert ctx.dropped == []


def test_a_harmless_refused_value_asks_for_nothing_and_is_not_dropped() -> None:
    ctx = context()
    apply_params(
        {"logprobs": Param(None, refuse("is not supported.", harmless=lambda v: not v))}, {"logprobs": False}, ctx
    )
    assert ctx.dropped == []


def test_under_strict_a_drop_is_a_400_naming_the_field_and_saying_why() -> None:
    ctx = ClaudeContext(model=MODEL, caps=TABLE.capabilities(MODEL), upstream={}, strict=True)
    with pytest.raises(InvalidRequest) as info:
        apply_params({"seed": Param()}, {"seed": 1}, ctx)
    assert (info.value.status_code, info.value.param, info.value.code) == (400, "seed", "unsupported_value")
    assert info.value.message == "Unsupported value for 'seed': it is ignored by this gateway (strict_fields is on)."
    with pytest.raises(InvalidRequest) as info:
        ctx.drop("messages[3].content[0].image_url.detail", "Claude has no image detail levels")
    assert info.value.param == "messages[3].content[0].image_url.detail"
    assert info.value.message.endswith("Claude has no image detail levels (strict_fields is on).")


def test_under_strict_an_unknown_field_is_a_400_naming_it() -> None:
    ctx = ClaudeContext(model=MODEL, caps=TABLE.capabilities(MODEL), upstream={}, strict=True)
    with pytest.raises(InvalidRequest) as info:
        apply_params({}, {"frobnicate": True}, ctx)
    assert info.value.param == "frobnicate"
    assert "not a field this gateway knows" in info.value.message


def test_dropped_fields_are_in_body_order_without_list_positions_or_duplicates() -> None:
    body = {"model": "m", "messages": [], "temperature": 0, "seed": 1, "text": {}}
    recorded = [
        "seed",
        "text.verbosity",
        "messages[0].content[1].image_url.detail",
        "temperature",
        "messages[4].content[0].image_url.detail",
        "messages[2].name",
        "seed",
    ]
    assert dropped_fields(recorded, body) == (
        "messages[].content[].image_url.detail",
        "messages[].name",
        "temperature",
        "seed",
        "text.verbosity",
    )


@pytest.mark.parametrize("key", ["a\r\nSet-Cookie: x", "é", "", "x" * 65, "a,b", "a b"])
def test_an_unknown_field_whose_name_is_not_plain_is_not_repeated(key: str) -> None:
    ctx = context()
    apply_params({}, {key: 1, "plain_name": 2}, ctx)
    assert dropped_fields(ctx.dropped, {key: 1, "plain_name": 2}) == (UNNAMED, "plain_name")


def test_past_the_limit_the_dropped_fields_end_with_how_many_more_there_are() -> None:
    body = {f"f{k}": k for k in range(MAX_DROPPED + 10)}
    ctx = context()
    apply_params({}, body, ctx)
    shown = dropped_fields(ctx.dropped, body)
    assert len(shown) == MAX_DROPPED
    assert shown[:2] == ("f0", "f1") and shown[-1] == "(+11 more)"
