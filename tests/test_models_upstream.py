"""The upstream's Models API read as capability rows, and how they merge with the shipped table and
the operator's rows; what ``check_serving`` says of retired, deprecated and unknown models."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from anthropic.types import ModelInfo

from proxy import models as models_module
from proxy.errors import InvalidRequest, NotFound
from proxy.models import ModelTable, OncePerDay, model_not_found
from proxy.models_upstream import caps_row, upstream_rows
from proxy.translate.chat.request import to_messages_request
from proxy.translate.responses.request import to_messages_request as responses_to_messages_request
from tests.anthropic_schema import assert_valid_messages_request


def support(flag: bool) -> dict[str, bool]:
    return {"supported": flag}


def model_info(model_id: str = "claude-nova-6", **overrides: Any) -> dict[str, Any]:
    """A ModelInfo as the API sends it (checked against the SDK's type below): a model with effort low
    and high only, always-on adaptive thinking, no structured outputs, no PDFs, no web search."""
    info: dict[str, Any] = {
        "type": "model",
        "id": model_id,
        "display_name": "Claude Nova 6",
        "created_at": "2027-03-01T00:00:00Z",
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
        "line": None,
        "max_tokens": 300_000,
        "max_input_tokens": 1_000_000,
        "capabilities": {
            "batch": support(True),
            "citations": support(False),
            "code_execution": support(False),
            "context_management": {"supported": False},
            "effort": {
                "supported": True,
                "low": support(True),
                "medium": support(False),
                "high": support(True),
                "max": support(False),
                "xhigh": support(False),
            },
            "image_input": support(True),
            "pdf_input": support(False),
            "server_tools": {"supported": False, "code_execution": support(False), "web_search": support(False)},
            "structured_outputs": support(False),
            "thinking": {
                "supported": True,
                "types": {
                    "adaptive": support(True),
                    "enabled": support(False),
                    "disabled": support(False),
                    "between_tools": support(False),
                },
            },
        },
    }
    info.update(overrides)
    ModelInfo.model_validate(info)  # the test's input is what the real API may send
    return info


NOVA = model_info()
SHIPPED = ModelTable.with_overrides()


def with_upstream(*infos: dict[str, Any], table: ModelTable = SHIPPED) -> ModelTable:
    return table.with_upstream(upstream_rows(infos))


# --- the mapping ---------------------------------------------------------------------------------


def test_a_model_info_maps_to_the_caps_fields_the_models_api_determines() -> None:
    assert caps_row(NOVA) == {
        "max_output_tokens": 300_000,
        "max_input_tokens": 1_000_000,
        "lifecycle": "active",
        "structured_outputs": False,
        "image_input": True,
        "pdf_input": False,
        "citations": False,
        "effort": ["low", "high"],
        "thinking": ["adaptive"],
        "web_search": None,
    }


def test_what_the_models_api_does_not_say_is_left_to_the_table() -> None:
    row = caps_row(NOVA)
    for field in ("prefill", "sampling", "fast", "forced_tool_choice", "effort_without_thinking", "successor"):
        assert field not in row
    supported = copy.deepcopy(NOVA)
    supported["capabilities"]["server_tools"]["web_search"] = support(True)
    assert "web_search" not in caps_row(supported), "the tool version to send stays the table's"


def test_a_model_without_effort_support_accepts_no_effort_level() -> None:
    info = copy.deepcopy(NOVA)
    info["capabilities"]["effort"] = {
        "supported": False,
        **{level: support(False) for level in ("low", "medium", "high", "max")},
    }
    assert caps_row(info)["effort"] == []


def test_a_model_without_thinking_accepts_only_disabled() -> None:
    info = copy.deepcopy(NOVA)
    info["capabilities"]["thinking"] = {
        "supported": False,
        "types": {
            "adaptive": support(False),
            "enabled": support(False),
            "disabled": support(True),  # "True on a model that does not support thinking" (ThinkingTypes)
            "between_tools": support(False),
        },
    }
    assert caps_row(info)["thinking"] == ["disabled"]


def test_a_retirement_date_is_read_as_its_utc_day() -> None:
    info = model_info(
        lifecycle="deprecated", deprecated_at="2026-06-01T00:00:00Z", retires_at="2027-01-22T23:30:00-05:00"
    )
    assert caps_row(info)["retires"] == "2027-01-23"
    assert caps_row(info)["lifecycle"] == "deprecated"


@pytest.mark.parametrize(
    "overrides",
    [
        {"capabilities": None},
        {"capabilities": "all of them"},
        {"capabilities": {"effort": {"supported": "yes"}, "thinking": {"types": {"adaptive": support(True)}}}},
        {"capabilities": {"structured_outputs": True, "citations": {"supported": None}}},
    ],
    ids=["null", "string", "partial-thinking-and-bad-effort", "flags-not-objects"],
)
def test_missing_or_malformed_capabilities_are_left_out_not_guessed(overrides: dict[str, Any]) -> None:
    info = {"id": "claude-nova-6", "max_tokens": 0, "max_input_tokens": True, "lifecycle": "gone", **overrides}
    info["retires_at"] = "soon"
    assert caps_row(info) == {}


def test_a_dated_id_is_filed_under_its_alias_too_unless_the_list_has_the_alias() -> None:
    rows = upstream_rows([model_info("claude-nova-6-20270301"), model_info("claude-nova-6-20270101", max_tokens=5)])
    assert rows["claude-nova-6"]["max_output_tokens"] == 300_000, "the newest snapshot, listed first, wins"
    rows = upstream_rows([model_info("claude-nova-6-20270301", max_tokens=5), model_info("claude-nova-6")])
    assert rows["claude-nova-6"]["max_output_tokens"] == 300_000
    assert rows["claude-nova-6-20270301"]["max_output_tokens"] == 5


def test_entries_without_an_id_are_skipped() -> None:
    assert set(upstream_rows([{"max_tokens": 5}, {"id": ""}, {"id": 7}, model_info()])) == {"claude-nova-6"}


# --- the merge -----------------------------------------------------------------------------------


def test_a_model_the_shipped_table_never_heard_of_gets_the_upstreams_capabilities_not_the_catch_alls() -> None:
    before = SHIPPED.capabilities("claude-nova-6")
    assert before.effort == {"low", "medium", "high", "xhigh", "max"} and before.max_output_tokens == 64000
    caps = with_upstream(NOVA).capabilities("claude-nova-6")
    assert caps.effort == {"low", "high"}
    assert caps.thinking == {"adaptive"} and caps.thinking_always_on
    assert caps.structured_outputs is False and caps.pdf_input is False and caps.citations is False
    assert caps.web_search is None
    assert caps.max_output_tokens == 300_000 and caps.max_input_tokens == 1_000_000
    # What the Models API does not say still comes from the catch-all.
    assert caps.prefill is False and caps.sampling == frozenset() and caps.default_max_tokens == 8192


def test_the_shipped_rows_beat_the_upstream_for_the_fields_they_set() -> None:
    # claude-opus-4-1* sets thinking, effort, structured_outputs and max_output_tokens itself.
    shipped = SHIPPED.capabilities("claude-opus-4-1")
    caps = with_upstream(model_info("claude-opus-4-1")).capabilities("claude-opus-4-1")
    assert (caps.thinking, caps.effort, caps.structured_outputs, caps.max_output_tokens) == (
        shipped.thinking,
        shipped.effort,
        shipped.structured_outputs,
        shipped.max_output_tokens,
    )
    assert caps.prefill == shipped.prefill
    # What the row leaves to the catch-all, the upstream's report decides.
    assert (caps.pdf_input, caps.citations, caps.web_search, caps.max_input_tokens) == (False, False, None, 1_000_000)


def test_the_operators_rows_beat_the_upstream_even_in_the_catch_all() -> None:
    operator = ModelTable.with_overrides(
        {"claude-nova-*": {"effort": ["low", "medium", "high"]}, "claude-*": {"pdf_input": True}}
    )
    caps = with_upstream(NOVA, table=operator).capabilities("claude-nova-6")
    assert caps.effort == {"low", "medium", "high"} and caps.pdf_input is True
    assert caps.max_output_tokens == 300_000, "fields the operator leaves alone are still the upstream's"


def test_the_upstreams_lifecycle_beats_the_shipped_table_but_not_the_operator() -> None:
    shipped = ModelTable(
        {
            "claude-*": {**models_module.shipped_rows()["claude-*"]},
            "claude-old-1*": {"lifecycle": "deprecated", "retires": "2027-01-01", "successor": "claude-nova-6"},
        }
    )
    retired = model_info(
        "claude-old-1", lifecycle="retired", deprecated_at="2026-01-01T00:00:00Z", retires_at="2026-12-01T00:00:00Z"
    )
    caps = with_upstream(retired, table=shipped).capabilities("claude-old-1")
    assert (caps.lifecycle, caps.retires, caps.successor) == ("retired", "2026-12-01", "claude-nova-6")
    operator = shipped.with_rows({"claude-old-1": {"lifecycle": "active"}})
    assert with_upstream(retired, table=operator).capabilities("claude-old-1").lifecycle == "active"


def test_without_a_report_the_table_answers_as_it_always_did() -> None:
    table = with_upstream(NOVA)
    for model in ("claude-sonnet-4-6", "claude-opus-5", "claude-haiku-4-5-20251001", "gpt-4o"):
        assert table.capabilities(model) == SHIPPED.capabilities(model)


def test_the_default_max_tokens_never_exceeds_an_upstreams_ceiling() -> None:
    caps = with_upstream(model_info(max_tokens=4096)).capabilities("claude-nova-6")
    assert caps.max_output_tokens == caps.default_max_tokens == 4096


def test_a_report_that_would_make_a_model_invalid_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    table = SHIPPED.with_upstream({"claude-nova-6": {"max_output_tokens": "lots"}, "claude-nova-7": {"effort": []}})
    assert table.capabilities("claude-nova-6") == SHIPPED.capabilities("claude-nova-6")
    assert table.capabilities("claude-nova-7").effort == frozenset()
    assert table.upstream_ids == {"claude-nova-7"}
    assert [r.message for r in caplog.records if "ignored the upstream's capabilities" in r.message]


def test_installing_a_report_makes_a_new_table_and_lookups_stay_cached() -> None:
    table = with_upstream(NOVA)
    assert table is not SHIPPED and SHIPPED.upstream_ids is None and table.upstream_ids == {"claude-nova-6"}
    assert table.capabilities("claude-nova-6") is table.capabilities("claude-nova-6")
    assert with_upstream(model_info(max_tokens=5), table=table).capabilities("claude-nova-6").max_output_tokens == 5


# --- a never-heard-of model, translated ------------------------------------------------------------


def chat(table: ModelTable, **extra: Any) -> dict[str, Any]:
    body = {"model": "claude-nova-6", "messages": [{"role": "user", "content": "Hi"}], **extra}
    upstream = to_messages_request(body, table).upstream
    assert_valid_messages_request(upstream)
    return upstream


def test_a_never_heard_of_model_is_translated_with_the_upstreams_effort_thinking_and_ceiling() -> None:
    table = with_upstream(NOVA)
    assert chat(table, reasoning_effort="high")["output_config"] == {"effort": "high"}
    assert chat(table, reasoning_effort="medium")["output_config"] == {"effort": "low"}, "nearest accepted level"
    assert "thinking" not in chat(table, reasoning_effort="high"), "always-on adaptive: steered by effort only"
    assert chat(table, max_tokens=250_000)["max_tokens"] == 250_000  # over the catch-all's 64000
    with pytest.raises(InvalidRequest) as too_many:
        chat(table, max_tokens=300_001)
    assert too_many.value.param == "max_tokens"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(InvalidRequest) as structured:
        chat(table, response_format=schema)
    assert structured.value.param == "response_format.type"
    # The same body with the shipped table alone: the catch-all's guesses.
    assert chat(SHIPPED, response_format=schema)["output_config"]["format"]["type"] == "json_schema"


def test_a_never_heard_of_model_is_translated_alike_on_the_responses_api() -> None:
    table = with_upstream(NOVA)
    body = {"model": "claude-nova-6", "input": "Hi", "reasoning": {"effort": "high"}, "max_output_tokens": 200_000}
    upstream = responses_to_messages_request(body, table).upstream
    assert_valid_messages_request(upstream)
    assert upstream["output_config"] == {"effort": "high"} and upstream["max_tokens"] == 200_000


# --- check_serving -------------------------------------------------------------------------------

RETIRED = model_info(
    "claude-old-1", lifecycle="retired", deprecated_at="2026-01-01T00:00:00Z", retires_at="2026-11-30T00:00:00Z"
)
DEPRECATED = model_info(
    "claude-dep-2", lifecycle="deprecated", deprecated_at="2026-06-01T00:00:00Z", retires_at="2027-01-22T00:00:00Z"
)


def test_an_active_model_is_served_without_a_warning() -> None:
    assert with_upstream(NOVA).check_serving("claude-nova-6") is None


def test_a_retired_model_is_a_404_that_says_when_and_names_its_successor() -> None:
    table = with_upstream(RETIRED, table=SHIPPED.with_rows({"claude-old-1": {"successor": "claude-nova-6"}}))
    with pytest.raises(NotFound) as refused:
        table.check_serving("claude-old-1")
    error = refused.value
    assert (error.status_code, error.param, error.code) == (404, "model", "model_retired")
    assert "retired on 2026-11-30" in error.message and "'claude-nova-6'" in error.message
    with pytest.raises(NotFound) as unnamed:
        with_upstream(RETIRED).check_serving("claude-old-1")
    assert "instead" not in unnamed.value.message


def test_a_deprecated_model_gets_a_warning_header_value() -> None:
    table = with_upstream(DEPRECATED, table=SHIPPED.with_rows({"claude-dep-2": {"successor": "claude-nova-6"}}))
    warning = table.check_serving("claude-dep-2")
    assert (
        warning
        == "299 - \"The model 'claude-dep-2' is deprecated and retires on 2027-01-22; use 'claude-nova-6' instead.\""
    )


def test_a_deprecated_model_is_logged_once_per_model_per_utc_day(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [datetime(2026, 12, 1, 23, 59, tzinfo=UTC)]
    monkeypatch.setattr(models_module, "DEPRECATION_NOTICES", OncePerDay(clock=lambda: now[0]))
    table = with_upstream(DEPRECATED, model_info("claude-dep-3", lifecycle="deprecated"))
    caplog.set_level(logging.WARNING, "proxy")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "deprecated model requested" in r.getMessage()]

    for _ in range(3):
        assert table.check_serving("claude-dep-2") is not None
    assert len(lines()) == 1 and "claude-dep-2" in lines()[0]
    table.check_serving("claude-dep-3")
    assert len(lines()) == 2, "each model has its own day"
    now[0] += timedelta(minutes=2)  # past midnight UTC
    table.check_serving("claude-dep-2")
    table.check_serving("claude-dep-2")
    assert len(lines()) == 3


def test_once_per_day_counts_days_in_utc_and_stays_bounded() -> None:
    here = datetime(2026, 12, 1, 22, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=-5)))
    clock = [here]
    once = OncePerDay(clock=lambda: clock[0])
    assert once.first_today("a") and not once.first_today("a")
    clock[0] = here + timedelta(hours=3)  # still Dec 1 at -05:00, Dec 2 in UTC
    assert clock[0].day == 1 and once.first_today("a")
    for n in range(OncePerDay.MAX_KEYS + 5):
        once.first_today(f"model-{n}")
    assert len(once._seen) <= OncePerDay.MAX_KEYS


def test_an_id_that_cannot_be_a_claude_model_is_unknown_even_before_the_first_report() -> None:
    with pytest.raises(NotFound) as refused:
        SHIPPED.check_serving("gpt-4o")
    error = refused.value
    assert (error.status_code, error.param, error.code) == (404, "model", "model_not_found")
    assert "model_aliases" in error.message and "PROXY_MODEL_ALIASES" in error.message
    assert error.message == model_not_found("gpt-4o").message


def test_before_the_first_report_any_claude_id_is_left_to_the_upstream() -> None:
    assert SHIPPED.check_serving("claude-nova-6") is None
    assert SHIPPED.check_serving("claude-sonnet-4-6") is None


def test_after_a_report_a_claude_id_nobody_knows_is_unknown() -> None:
    table = with_upstream(NOVA)
    with pytest.raises(NotFound) as refused:
        table.check_serving("claude-nova-9")
    assert refused.value.code == "model_not_found"
    assert table.check_serving("claude-sonnet-4-6") is None, "a shipped row other than the catch-all knows it"


def test_an_alias_target_and_an_operator_row_are_known() -> None:
    table = with_upstream(
        NOVA,
        table=ModelTable.with_overrides({"my-finetune*": {"effort": []}}, {"gpt-4o": "claude-nova-9"}),
    )
    assert table.check_serving("claude-nova-9") is None
    assert table.check_serving("my-finetune-7") is None


def test_an_unknown_models_404_quotes_a_long_id_only_in_part() -> None:
    message = model_not_found("claude-" + "x" * 10_000).message
    assert len(message) < 1000
