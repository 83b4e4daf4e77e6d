"""What the Responses translators share (proxy/translate/responses/common.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import InvalidRequest
from proxy.translate.responses.common import (
    ToolName,
    ToolNames,
    claude_call_id,
    client_call_id,
    item_id,
    open_reasoning,
    seal_reasoning,
)

CLAUDE_ID = re.compile(r"[a-zA-Z0-9_-]+")
BLOCKS = [
    {"type": "thinking", "thinking": "Let me think.\n\u00e9\u2028", "signature": "EqQBCkYIBxgCKkB+/="},
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"},
]


# Tool names --------------------------------------------------------------------------------------


def test_tool_names_map_claude_names_back() -> None:
    names = ToolNames({"ns__f": ToolName("function", "f", "ns"), "patch": ToolName("custom", "patch")})
    assert names.client("ns__f") == ToolName("function", "f", "ns")
    assert names.client("patch") == ToolName("custom", "patch")


def test_a_name_the_request_did_not_define_is_a_plain_function() -> None:
    assert ToolNames().client("made_up") == ToolName("function", "made_up")


# Call ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call_id", ["call_abc123", "fc_68b0", "toolu_01A09q90qw90lq917835lq9", "a-b_c"])
def test_ids_claude_accepts_are_kept(call_id: str) -> None:
    assert claude_call_id(call_id) == call_id
    assert client_call_id(call_id) == call_id


@pytest.mark.parametrize("call_id", ["call.1", "a:b/c", "", "héllo", "cpx_looks_encoded", "with space"])
def test_other_ids_are_encoded_reversibly(call_id: str) -> None:
    encoded = claude_call_id(call_id)
    assert CLAUDE_ID.fullmatch(encoded)
    assert encoded != call_id
    assert client_call_id(encoded) == call_id


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_every_id_round_trips_through_a_valid_claude_id(call_id: str) -> None:
    encoded = claude_call_id(call_id)
    assert CLAUDE_ID.fullmatch(encoded)
    assert client_call_id(encoded) == call_id


@settings(max_examples=500)
@given(st.from_regex(CLAUDE_ID, fullmatch=True))
def test_ids_claude_made_come_back_unchanged_or_decoded_consistently(claude_id: str) -> None:
    """Any id Claude sends maps to a client id that maps back to it: no two Claude ids collide."""
    assert claude_call_id(client_call_id(claude_id)) == claude_id


def test_distinct_ids_stay_distinct() -> None:
    ids = ["a.b", "a_b", "cpx_YS5i", "a:b"]
    assert len({claude_call_id(call_id) for call_id in ids}) == len(ids)


# Sealed reasoning --------------------------------------------------------------------------------


def test_sealed_blocks_open_byte_for_byte() -> None:
    sealed = seal_reasoning(BLOCKS)
    assert sealed.startswith("cpr1.")
    assert CLAUDE_ID.fullmatch(sealed.removeprefix("cpr1."))  # no character a client might escape
    assert open_reasoning(sealed, "p") == BLOCKS


def test_sealing_keeps_only_the_fields_claude_takes_back() -> None:
    extra = [{**BLOCKS[0], "citations": None}, {**BLOCKS[1], "index": 3}]
    assert open_reasoning(seal_reasoning(extra), "p") == BLOCKS


def test_sealing_is_deterministic() -> None:
    assert seal_reasoning(BLOCKS) == seal_reasoning([dict(block) for block in BLOCKS])


def test_only_thinking_blocks_can_be_sealed() -> None:
    with pytest.raises(ValueError):
        seal_reasoning([{"type": "text", "text": "x"}])


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        ["cpr1.x"],
        "",
        "gAAAAABoZ3xkYWJjZGVm",  # what OpenAI itself issues
        "cpr0." + seal_reasoning(BLOCKS).removeprefix("cpr1."),
        "cpr1.",
        "cpr1.!!!",
        "cpr1.AAAA",
        seal_reasoning(BLOCKS)[:-1],
        seal_reasoning(BLOCKS)[:40],
        seal_reasoning(BLOCKS) + "A",
        seal_reasoning(BLOCKS).replace("cpr1.", "cpr1.=", 1),
    ],
)
def test_anything_else_is_a_clean_400_naming_the_path(value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        open_reasoning(value, "input[4].encrypted_content")
    assert info.value.status_code == 400
    assert info.value.param == "input[4].encrypted_content"


def test_every_single_character_change_is_detected() -> None:
    sealed = seal_reasoning(BLOCKS)
    alphabet = "AQgw-_"
    for position in range(len(sealed)):
        for replacement in alphabet:
            if sealed[position] == replacement:
                continue
            changed = sealed[:position] + replacement + sealed[position + 1 :]
            with pytest.raises(InvalidRequest):
                open_reasoning(changed, "p")


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_strings_never_raise_anything_else(value: str) -> None:
    try:
        open_reasoning(value, "p")
    except InvalidRequest as exc:
        assert exc.param == "p"


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("thinking"), "thinking": st.text(), "signature": st.text(min_size=1)}
            ),
            st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": st.text(min_size=1)}),
        ),
        max_size=4,
    )
)
def test_any_thinking_blocks_round_trip(blocks: list[dict[str, str]]) -> None:
    assert open_reasoning(seal_reasoning(blocks), "p") == blocks


# Item ids ----------------------------------------------------------------------------------------


def test_item_ids_are_deterministic_and_unique() -> None:
    assert item_id("msg", "resp_abc", 0) == item_id("msg", "resp_abc", 0) == "msg_abc_0"
    assert item_id("fc_", "resp_abc", 1) == "fc_abc_1"
    ids = {
        item_id(prefix, response, index)
        for prefix in ("msg", "fc")
        for response in ("resp_a", "resp_b")
        for index in range(3)
    }
    assert len(ids) == 12
