"""The parameter-table engine (proxy/translate/params.py): table order, absent parameters and
their defaults, `yields_to`, and dotted names read through nested objects (the Responses API's
``reasoning.effort``, ``text.format``)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.models import ModelCaps, ModelTable
from proxy.translate.params import OMIT, ClaudeContext, Param, apply_params, lookup, refuse

TABLE = ModelTable.with_overrides()
MODEL = "claude-sonnet-4-5"


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
