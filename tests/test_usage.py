"""`proxy.usage.Usage`: read once from Anthropic's usage, added up, rendered by the chat dialect,
and booked by the ledger with its cache reads and writes as cache tokens."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.dialects.native import NativeStream
from proxy.errors import UpstreamError
from proxy.keys import KeyService, NewKey
from proxy.translate.chat.response import to_openai_usage
from proxy.translate.chat.stream import StreamTranslator
from proxy.usage import Usage, checked_usage

MODEL = "claude-haiku-4-5"
FULL = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 248,
    "cache_read_input_tokens": 1800,
    "output_tokens": 96,
    "output_tokens_details": {"thinking_tokens": 71},
    "service_tier": "standard",
}


def test_from_anthropic_reads_every_count() -> None:
    usage = Usage.from_anthropic(FULL)
    assert usage == Usage(input=12, output=96, cache_read=1800, cache_write=248, reasoning=71)
    assert usage.prompt == 12 + 1800 + 248
    assert usage.total == 12 + 1800 + 248 + 96


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, Usage()),
        ({}, Usage()),
        ({"input_tokens": 5, "output_tokens": 7}, Usage(input=5, output=7)),
        ({"input_tokens": 5, "cache_read_input_tokens": None, "output_tokens": None}, Usage(input=5)),
        ({"output_tokens": 2, "output_tokens_details": None}, Usage(output=2)),
        ({"output_tokens": 2, "output_tokens_details": {}}, Usage(output=2)),
        ({"cache_creation_input_tokens": 40}, Usage(cache_write=40)),
    ],
    ids=repr,
)
def test_from_anthropic_takes_absent_or_null_counts_as_zero(given: Any, expected: Usage) -> None:
    assert Usage.from_anthropic(given) == expected


@pytest.mark.parametrize(
    ("given", "field", "shown"),
    [
        ("7", "usage", "'7'"),
        ({"input_tokens": "7"}, "usage.input_tokens", "'7'"),
        ({"output_tokens": -1}, "usage.output_tokens", "-1"),
        ({"cache_read_input_tokens": 2.5}, "usage.cache_read_input_tokens", "2.5"),
        ({"cache_creation_input_tokens": True}, "usage.cache_creation_input_tokens", "True"),
        ({"output_tokens_details": {"thinking_tokens": [1]}}, "usage.output_tokens_details.thinking_tokens", "[1]"),
        ({"output_tokens_details": {"thinking_tokens": -3}}, "usage.output_tokens_details.thinking_tokens", "-3"),
        ({"output_tokens_details": [71]}, "usage.output_tokens_details", "[71]"),
        ({"input_tokens": "x" * 50}, "usage.input_tokens", "str"),
    ],
    ids=repr,
)
def test_malformed_usage_raises_naming_the_field(given: Any, field: str, shown: str) -> None:
    message = f"The upstream API sent malformed data: {field} is {shown}."
    with pytest.raises(UpstreamError) as built:
        Usage.from_anthropic(given)
    assert built.value.message == message
    with pytest.raises(UpstreamError) as checked:
        checked_usage(given)  # the stream translator's check is the same rule, the same words
    assert checked.value.message == message


def test_checked_usage_returns_what_it_was_given() -> None:
    assert checked_usage(FULL) is FULL
    assert checked_usage(None) == {}


def test_usage_is_frozen_and_slotted() -> None:
    usage = Usage(input=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.input = 2  # type: ignore[misc]
    assert not hasattr(usage, "__dict__")


def test_addition_sums_field_by_field() -> None:
    a = Usage(input=10, output=5, cache_read=1, cache_write=2, reasoning=3)
    b = Usage(input=7, output=1, cache_read=30, cache_write=40, reasoning=0)
    assert a + b == Usage(input=17, output=6, cache_read=31, cache_write=42, reasoning=3)
    assert sum([a, b], Usage()) == a + b
    assert (a + b).prompt == a.prompt + b.prompt


def test_chat_rendering_is_openais_completion_usage() -> None:
    rendered = to_openai_usage(Usage.from_anthropic(FULL))
    assert orjson.dumps(rendered) == (
        b'{"prompt_tokens":2060,"completion_tokens":96,"total_tokens":2156,'
        b'"prompt_tokens_details":{"cached_tokens":1800,"cache_write_tokens":248},'
        b'"completion_tokens_details":{"reasoning_tokens":71}}'
    )
    assert to_openai_usage(Usage(input=1) + Usage(output=2))["total_tokens"] == 3


def _event(kind: str, payload: dict[str, Any]) -> tuple[str, bytes]:
    return kind, orjson.dumps({"type": kind, **payload})


START = _event(
    "message_start",
    {"message": {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 21, "cache_read_input_tokens": 1536}}},
)
# message_delta's counts are cumulative: they replace message_start's; a null one leaves it standing.
DELTA = _event(
    "message_delta",
    {"delta": {"stop_reason": "end_turn"}, "usage": {"input_tokens": None, "output_tokens": 9}},
)


def test_a_stream_overlays_message_delta_on_message_start() -> None:
    translator = StreamTranslator(created=1, include_usage=True, model=MODEL)
    meter = NativeStream()
    assert translator.tokens is None and meter.tokens is None
    for event, data in (START, DELTA):
        translator.feed(event, data)
        meter.feed(event, data)
    expected = Usage(input=21, output=9, cache_read=1536)
    assert translator.tokens == expected and meter.tokens == expected
    assert translator.usage == to_openai_usage(expected)


@pytest.mark.anyio
async def test_the_ledger_books_cache_reads_and_writes_as_cache_tokens(tmp_path: Path) -> None:
    service = await KeyService.open(str(tmp_path / "keys.db"), refresh_interval=0.05, flush_interval=0.05)
    try:
        _, secret = await service.create_key(NewKey(name="cache", tpm=100_000))
        principal = await service.authenticate({"authorization": f"Bearer {secret}"})
        read = Usage.from_anthropic({"input_tokens": 1000, "cache_read_input_tokens": 2000, "output_tokens": 100})
        written = Usage.from_anthropic({"input_tokens": 0, "cache_creation_input_tokens": 400, "output_tokens": 0})
        for usage in (read, written):
            await service.settle_usage(await service.admit(principal, MODEL, 10_000), model=MODEL, usage=usage)
        await service.ledger.flush()
        [row] = await service.usage("cache", "2000-01-01", "2999-12-31")
        assert (row.requests, row.input_tokens, row.output_tokens) == (2, 3400, 100)
        assert (row.cached_tokens, row.cache_write_tokens) == (2000, 400)
        # $/M tokens for claude-haiku-4-5: input 1.00, cache read 0.10, cache write 1.25, output 5.00
        assert row.cost_usd == pytest.approx((1000 * 1.00 + 2000 * 0.10 + 400 * 1.25 + 100 * 5.00) / 1e6)
        admission = await service.admit(principal, MODEL, 0)  # limits count the whole prompt + output
        assert admission.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 3500)
    finally:
        await service.aclose()


def test_message_deltas_final_usage_brings_the_thinking_tokens_over_message_starts() -> None:
    # The stream translators overlay message_delta's cumulative counts on message_start's.
    start = {"input_tokens": 12, "output_tokens": 1}
    delta = {"output_tokens": 96, "output_tokens_details": {"thinking_tokens": 71}}
    assert Usage.from_anthropic({**start, **delta}) == Usage(input=12, output=96, reasoning=71)
    assert Usage.from_anthropic({**start, "output_tokens_details": None}).reasoning == 0
