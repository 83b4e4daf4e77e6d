"""Turn merging (proxy/translate/claude/turns.py), driven directly as a dialect drives it."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.translate.claude.turns import Conversation, ends_in_prefill

SIGNED = {"type": "thinking", "thinking": "hmm", "signature": "sig"}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def result(call_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id}


def call(call_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "f", "input": {}}


def test_consecutive_messages_of_one_role_merge_with_tool_results_first_in_order() -> None:
    conversation = Conversation(field="input")
    conversation.user([text("Go")], "input[0]")
    conversation.assistant([call("a"), call("b")], "input[1]")
    conversation.tool_results([result("a")], "input[2]")
    conversation.user([text("and")], "input[3]")
    conversation.tool_results([result("b")], "input[4]")
    system, turns = conversation.finish(model="m", prefill=False)
    assert system == []
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    assert turns[2]["content"] == [result("a"), result("b"), text("and")]


def test_thinking_leads_a_merged_assistant_turn() -> None:
    conversation = Conversation()
    conversation.user([text("Go")], "messages[0]")
    conversation.assistant([text("Let me look."), call("a")], "messages[1]")
    conversation.assistant([SIGNED, call("b")], "messages[2]")
    _, turns = conversation.finish(model="m", prefill=False)
    assert [block["type"] for block in turns[1]["content"]] == ["thinking", "text", "tool_use", "tool_use"]


def test_system_blocks_are_collected_in_order_wherever_they_come() -> None:
    conversation = Conversation()
    conversation.system([text("one")])
    conversation.user([text("Go")], "messages[1]")
    conversation.system([text("two")])
    system, turns = conversation.finish(model="m", prefill=False)
    assert system == [text("one"), text("two")]
    assert len(turns) == 1


def test_a_refused_prefill_names_the_last_message_merged_into_the_final_turn() -> None:
    conversation = Conversation(field="input")
    conversation.user([text("Go")], "input[0]")
    conversation.assistant([text("Sure")], "input[1]")
    conversation.assistant([text("thing ")], "input[2]")
    with pytest.raises(InvalidRequest) as info:
        conversation.finish(model="m", prefill=False)
    assert (info.value.param, info.value.code) == ("input[2]", "unsupported_value")


def test_an_accepted_prefill_is_stripped_of_trailing_whitespace_and_echoed_thinking() -> None:
    conversation = Conversation()
    conversation.user([text("Go")], "messages[0]")
    conversation.assistant([SIGNED, text("The answer is ")], "messages[1]")
    _, turns = conversation.finish(model="m", prefill=True)
    assert turns[-1]["content"] == [text("The answer is")]
    assert ends_in_prefill({"messages": turns})


def test_a_conversation_without_content_is_a_400_naming_the_dialects_field() -> None:
    conversation = Conversation(field="input")
    conversation.user([], "input[0]")
    conversation.assistant([SIGNED], "input[1]")  # dropped: thinking alone in a final turn
    with pytest.raises(InvalidRequest) as info:
        conversation.finish(model="m", prefill=True)
    assert (info.value.param, info.value.code) == ("input", "invalid_value")


def test_counting_past_the_block_budget_is_a_400_naming_the_field_and_the_limit() -> None:
    conversation = Conversation(3)
    conversation.count(["a", "b"], "input[0].content")
    conversation.count("c", "input[1].content")
    with pytest.raises(InvalidRequest) as info:
        conversation.count([1], "input[2].content")
    assert (info.value.param, info.value.code) == ("input[2].content", "array_above_max_length")
    assert "max_content_blocks is 3" in info.value.message


def test_a_final_tool_call_is_not_a_prefill() -> None:
    turns = [{"role": "user", "content": [text("Go")]}, {"role": "assistant", "content": [call("a")]}]
    assert not ends_in_prefill({"messages": turns})
