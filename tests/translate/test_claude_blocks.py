"""Content blocks (proxy/translate/claude/blocks.py) from values a dialect extracted, with the
client's path in every error."""

from __future__ import annotations

import base64

import pytest

from proxy.errors import InvalidRequest
from proxy.translate.claude.blocks import (
    document_block,
    image_block,
    plain_text,
    text_blocks,
    thinking_block,
    tool_result_block,
    tool_use_block,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
RESPONSES_TEXT = {"input_text": "text", "output_text": "text", "refusal": "refusal"}


def test_blank_text_makes_no_block() -> None:
    assert plain_text(" \n\t") == []
    assert plain_text("hi") == [{"type": "text", "text": "hi"}]


def test_text_blocks_read_the_part_types_and_fields_the_dialect_names() -> None:
    parts = [
        {"type": "input_text", "text": "a"},
        {"type": "refusal", "refusal": "b"},
        {"type": "output_text", "text": " "},
    ]
    assert text_blocks(parts, "input[0].content", RESPONSES_TEXT) == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]


def test_a_part_type_the_dialect_does_not_name_is_refused_listing_those_it_does() -> None:
    with pytest.raises(InvalidRequest) as info:
        text_blocks([{"type": "input_image"}], "input[0].content", RESPONSES_TEXT)
    assert info.value.param == "input[0].content[0].type"
    assert "only 'input_text' or 'output_text' or 'refusal'" in info.value.message


def test_an_image_labelled_with_the_wrong_media_type_gets_the_type_of_its_bytes() -> None:
    block = image_block(f"data:image/jpeg;base64,{PNG}", "input[0].content[1].image_url")
    assert block["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert image_block("https://example.com/a.png", "p")["source"] == {
        "type": "url",
        "url": "https://example.com/a.png",
    }


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "data:image/png,abc", "data:image/png;base64,!!", "data:image/tiff;base64,AAAA"]
)
def test_a_bad_image_url_is_a_400_at_the_given_path(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        image_block(url, "input[0].content[1].image_url")
    assert info.value.param == "input[0].content[1].image_url"


def test_a_pdf_document_carries_a_non_empty_title_and_other_files_are_refused() -> None:
    url = "data:application/pdf;base64,JVBERi0xLjQ="
    assert document_block(url, "p", title="a.pdf")["title"] == "a.pdf"
    assert "title" not in document_block(url, "p", title="")
    with pytest.raises(InvalidRequest) as info:
        document_block("data:text/plain;base64,aGk=", "input[0].content[2].file_data")
    assert (info.value.param, info.value.code) == ("input[0].content[2].file_data", "unsupported_value")


def test_tool_use_arguments_are_parsed_and_bad_ones_named_at_the_given_path() -> None:
    assert tool_use_block("call_1", "f", '{"a": 1}', "input[1].arguments")["input"] == {"a": 1}
    assert tool_use_block("call_1", "f", " ", "input[1].arguments")["input"] == {}
    for arguments in ("{", "[1]"):
        with pytest.raises(InvalidRequest) as info:
            tool_use_block("call_1", "f", arguments, "input[1].arguments")
        assert info.value.param == "input[1].arguments"


def test_a_tool_result_keeps_text_content_and_drops_blank_content() -> None:
    assert tool_result_block("c", " ", "p", RESPONSES_TEXT) == {"type": "tool_result", "tool_use_id": "c"}
    assert tool_result_block("c", "ok", "p", RESPONSES_TEXT)["content"] == "ok"
    parts = [{"type": "input_text", "text": "ok"}]
    assert tool_result_block("c", parts, "p", RESPONSES_TEXT)["content"] == [{"type": "text", "text": "ok"}]


def test_an_echoed_thinking_block_keeps_only_its_known_fields() -> None:
    block = {"type": "thinking", "thinking": "t", "signature": "s", "extra": 1}
    assert thinking_block(block, "p") == {"type": "thinking", "thinking": "t", "signature": "s"}
    with pytest.raises(InvalidRequest) as info:
        thinking_block({"type": "thinking", "thinking": "t"}, "input[2]")
    assert info.value.param == "input[2].signature"
