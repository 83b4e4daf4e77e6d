"""The Responses stream translator: Anthropic stream events → Responses stream events.

Golden fixtures in tests/fixtures/responses/stream/: `<case>.expected.json` is the list of event
payloads the client receives for the upstream recording `<case>.sse` (in that directory, or one of
the chat dialect's recordings in tests/fixtures/chat/stream/); `<case>.message.json`, where the
stream completes, is the final Message (for the new recordings, accumulated by the anthropic
SDK's own stream helper), so that the streamed response can be compared with `to_response`.
Every event is checked against the openai SDK's `ResponseStreamEvent` union, and the bytes are
read back through the openai client's `responses.stream()` helper, offline.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.errors import RateLimited, UpstreamError, UpstreamTimeout
from proxy.sse import SSEDecoder
from proxy.translate.responses.response import to_response
from proxy.translate.responses.stream import ResponsesStream, _StreamedString
from proxy.usage import Usage
from tests.translate.test_responses_response import (
    CREATED_AT,
    REQUEST,
    RESPONSE_ID,
    assert_valid_response,
    request_for,
    unknown_fields,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "responses" / "stream"
CHAT_RECORDINGS = Path(__file__).parent.parent / "fixtures" / "chat" / "stream"
CASES = sorted(p.name.removesuffix(".expected.json") for p in FIXTURES.glob("*.expected.json"))
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
UPSTREAM_EVENT = TypeAdapter[Any](RawMessageStreamEvent)
CLIENT_EVENT = TypeAdapter[Any](ResponseStreamEvent)


def recording(case: str, suffix: str) -> Path:
    own = FIXTURES / f"{case}{suffix}"
    return own if own.exists() else CHAT_RECORDINGS / f"{case}{suffix}"


def complete(case: str) -> bool:
    return recording(case, ".message.json").exists()


COMPLETE = [case for case in CASES if complete(case)]


def upstream_events(case: str) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    events = decoder.feed(recording(case, ".sse").read_bytes())
    assert not decoder.pending
    return events


def final_message(case: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(recording(case, ".message.json").read_text(encoding="utf-8"))
    return loaded


def new_stream(request: Any = REQUEST) -> ResponsesStream:
    return ResponsesStream(request, response_id=RESPONSE_ID, created_at=CREATED_AT)


def translate(events: list[tuple[str, bytes]], request: Any = REQUEST) -> tuple[bytes, ResponsesStream]:
    stream = new_stream(request)
    out = b"".join(stream.feed(event, data) for event, data in events)
    return out + stream.end(), stream


def client_events(out: bytes) -> list[dict[str, Any]]:
    """The events as the client's SSE parser sees them; each one's name is its `type`."""
    decoder = SSEDecoder()
    events = decoder.feed(out)
    assert not decoder.pending
    payloads = [orjson.loads(data) for _, data in events]
    assert [name for name, _ in events] == [payload["type"] for payload in payloads]
    return payloads


def events_of(case: str) -> list[dict[str, Any]]:
    out, _ = translate(upstream_events(case))
    return client_events(out)


def comparable(response: dict[str, Any]) -> dict[str, Any]:
    """A response with its function arguments parsed: streamed arguments are upstream's own JSON
    text (with spaces), the non-streaming ones compact JSON of the same value."""
    output = [
        {**item, "arguments": json.loads(item["arguments"])} if item["type"] == "function_call" else item
        for item in response["output"]
    ]
    return {**response, "output": output}


def event(name: str, payload: dict[str, Any]) -> tuple[str, bytes]:
    return name, orjson.dumps(payload)


MESSAGE_START = event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [],
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    },
)
TEXT_START = event(
    "content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
)


def text_delta(text: Any) -> tuple[str, bytes]:
    payload = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return event("content_block_delta", payload)


# Fixtures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_recording_events_match_the_anthropic_sdk_types(case: str) -> None:
    for name, data in upstream_events(case):
        payload = orjson.loads(data)
        assert payload["type"] == name
        if name == "error":
            ErrorResponse.model_validate(payload)
        elif name != "ping":
            UPSTREAM_EVENT.validate_python(payload)


@pytest.mark.parametrize("case", COMPLETE)
def test_final_message_fixture_is_a_valid_anthropic_message(case: str) -> None:
    Message.model_validate(final_message(case))


@pytest.mark.parametrize("case", CASES)
def test_recording_translates_to_golden_events(case: str) -> None:
    assert events_of(case) == json.loads((FIXTURES / f"{case}.expected.json").read_text(encoding="utf-8"))


def test_fixtures_cover_the_cases_the_issue_names() -> None:
    assert {
        "text",
        "thinking_tool_use",
        "tool_use",  # two calls
        "custom_tool_call",
        "namespaced_call",
        "web_search",
        "max_tokens",
        "refusal",
        "error_midstream",
        "ends_early",
    } <= set(CASES)


# Every stream's shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_event_is_a_valid_openai_stream_event(case: str) -> None:
    for payload in events_of(case):
        parsed = CLIENT_EVENT.validate_python(payload, strict=True)
        assert unknown_fields(parsed) == [], payload["type"]


@pytest.mark.parametrize("case", CASES)
def test_sequence_numbers_count_up_from_zero(case: str) -> None:
    events = events_of(case)
    assert [payload["sequence_number"] for payload in events] == list(range(len(events)))


@pytest.mark.parametrize("case", CASES)
def test_stream_opens_with_created_and_in_progress_and_ends_with_one_terminal_event(case: str) -> None:
    types = [payload["type"] for payload in events_of(case)]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in TERMINAL
    assert sum(kind in TERMINAL for kind in types) == 1


@pytest.mark.parametrize("case", CASES)
def test_every_item_added_is_done_with_the_same_id_at_the_same_index(case: str) -> None:
    events = events_of(case)
    added = [(e["output_index"], e["item"]["id"]) for e in events if e["type"] == "response.output_item.added"]
    done = [(e["output_index"], e["item"]["id"]) for e in events if e["type"] == "response.output_item.done"]
    if events[-1]["type"] != "response.failed":
        assert done == added
    assert [index for index, _ in added] == list(range(len(added)))


@pytest.mark.parametrize("case", COMPLETE)
def test_streamed_response_is_the_non_streaming_response(case: str) -> None:
    _, stream = translate(upstream_events(case))
    expected = to_response(final_message(case), REQUEST, response_id=RESPONSE_ID, created_at=CREATED_AT)
    assert stream.response is not None
    assert comparable(stream.response) == comparable(expected)
    assert_valid_response(stream.response)


@pytest.mark.parametrize("case", COMPLETE)
def test_terminal_event_carries_the_final_response(case: str) -> None:
    out, stream = translate(upstream_events(case))
    last = client_events(out)[-1]
    assert last["type"] == f"response.{last['response']['status']}"
    assert last["response"] == stream.response


@pytest.mark.parametrize("case", COMPLETE)
def test_done_items_are_the_final_output(case: str) -> None:
    out, stream = translate(upstream_events(case))
    done = [e["item"] for e in client_events(out) if e["type"] == "response.output_item.done"]
    assert stream.response is not None
    assert done == stream.response["output"]


@pytest.mark.parametrize("case", COMPLETE)
def test_text_deltas_join_to_each_done_text(case: str) -> None:
    joined: dict[tuple[str, int], str] = {}
    for payload in events_of(case):
        key = (payload.get("item_id", ""), payload.get("content_index", 0))
        if payload["type"] == "response.output_text.delta":
            joined[key] = joined.get(key, "") + payload["delta"]
        elif payload["type"] == "response.output_text.done":
            assert joined.pop(key, "") == payload["text"]
    assert joined == {}


@pytest.mark.parametrize("case", COMPLETE)
def test_argument_and_input_deltas_join_to_their_done_value(case: str) -> None:
    joined: dict[str, str] = {}
    for payload in events_of(case):
        kind = payload["type"]
        if kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            joined[payload["item_id"]] = joined.get(payload["item_id"], "") + payload["delta"]
        elif kind == "response.function_call_arguments.done":
            assert joined.pop(payload["item_id"]) == payload["arguments"]
        elif kind == "response.custom_tool_call_input.done":
            assert joined.pop(payload["item_id"]) == payload["input"]
    assert joined == {}


# The openai client reads the stream ----------------------------------------------------------------


def openai_client(body: bytes) -> openai.OpenAI:
    """An openai client whose every request is answered with `body` as an event stream."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", http_client=http, max_retries=0)


@pytest.mark.parametrize(
    "case", [case for case in COMPLETE if final_message(case)["stop_reason"] not in ("max_tokens",)]
)
def test_sdk_stream_helper_accumulates_the_final_response(case: str) -> None:
    out, stream = translate(upstream_events(case))
    client = openai_client(out)
    deltas: list[str] = []
    with client.responses.stream(model="claude-haiku-4-5", input="hi") as events:
        for sdk_event in events:
            if sdk_event.type == "response.output_text.delta":
                deltas.append(sdk_event.delta)
        final = events.get_final_response()
    assert final.output_text == "".join(deltas)
    assert final.id == RESPONSE_ID
    assert stream.response is not None
    assert final.model_dump(mode="json", exclude_unset=True, exclude={"output"}) == {
        key: value for key, value in stream.response.items() if key != "output"
    }


@pytest.mark.parametrize("case", ["max_tokens", "error_midstream", "ends_early"])
def test_sdk_stream_helper_reads_an_unfinished_response_to_its_terminal_event(case: str) -> None:
    out, _ = translate(upstream_events(case))
    with openai_client(out).responses.stream(model="claude-haiku-4-5", input="hi") as events:
        types = [sdk_event.type for sdk_event in events]
    assert types[-1] in ("response.incomplete", "response.failed")


def test_sdk_create_with_stream_yields_every_event() -> None:
    out, _ = translate(upstream_events("thinking_tool_use"))
    events = list(openai_client(out).responses.create(model="claude-haiku-4-5", input="hi", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"


# Failures ----------------------------------------------------------------------------------------


def test_upstream_error_event_fails_the_response_with_the_output_so_far() -> None:
    out, stream = translate(upstream_events("error_midstream"))
    last = client_events(out)[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"
    assert "Overloaded" in last["response"]["error"]["message"]
    assert stream.done
    assert stream.response is None


def test_stream_that_ends_early_fails_once() -> None:
    stream = new_stream()
    for name, data in upstream_events("ends_early"):
        stream.feed(name, data)
    out = stream.end()
    (failed,) = client_events(out)
    assert failed["response"]["error"] == {
        "code": "server_error",
        "message": "The upstream stream ended before the response was complete.",
    }
    assert stream.end() == b""
    assert stream.fail(UpstreamTimeout("late")) == b""


def test_fail_maps_a_rate_limit_to_its_response_error_code() -> None:
    stream = new_stream()
    stream.feed(*MESSAGE_START)
    (failed,) = client_events(stream.fail(RateLimited("Slow down.")))
    assert failed["response"]["error"] == {"code": "rate_limit_exceeded", "message": "Slow down."}


def test_fail_before_any_upstream_event_still_opens_the_response() -> None:
    events = client_events(new_stream().fail(UpstreamTimeout("Upstream timed out.")))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["usage"] is None


def test_nothing_follows_the_terminal_event() -> None:
    _, stream = translate(upstream_events("text"))
    assert stream.done
    assert stream.feed(*text_delta("more")) == b""
    assert stream.fail(UpstreamError("late")) == b""
    assert stream.end() == b""


@pytest.mark.parametrize(
    "bad",
    [
        ("content_block_delta", b"{not json"),
        text_delta(7),
        event("content_block_start", {"type": "content_block_start", "index": 1}),
        event("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": "9"}}),
        event("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": -1}}),
    ],
)
def test_malformed_upstream_event_fails_the_response(bad: tuple[str, bytes]) -> None:
    stream = new_stream()
    stream.feed(*MESSAGE_START)
    stream.feed(*TEXT_START)
    events = client_events(stream.feed(*bad))
    assert events[-1]["type"] == "response.failed"
    assert stream.done


# Events as they arrive -----------------------------------------------------------------------------


def test_each_text_delta_is_forwarded_as_it_arrives() -> None:
    stream = new_stream()
    stream.feed(*MESSAGE_START)
    stream.feed(*TEXT_START)
    for text in ("Hel", "lo", " there"):
        (delta,) = client_events(stream.feed(*text_delta(text)))
        assert (delta["type"], delta["delta"]) == ("response.output_text.delta", text)


def test_ping_is_an_sse_comment_outside_the_sequence() -> None:
    stream = new_stream()
    assert stream.feed("ping", b'{"type":"ping"}') == b": ping\n\n"
    (created, _) = client_events(stream.feed(*MESSAGE_START))
    assert created["sequence_number"] == 0


def test_event_without_a_name_is_routed_by_its_type() -> None:
    stream = new_stream()
    events = client_events(stream.feed("message", MESSAGE_START[1]))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]


def test_unknown_upstream_events_are_ignored() -> None:
    stream = new_stream()
    assert stream.feed("future_event", b"{}") == b""
    assert stream.feed("message", b'{"type":"future_event"}') == b""


def test_tokens_follow_message_start_then_message_delta() -> None:
    assert new_stream().tokens is None
    stream = new_stream()
    events = upstream_events("thinking")
    stream.feed(*events[0])
    assert stream.tokens == Usage(input=58, output=4)
    for name, data in events[1:]:
        stream.feed(name, data)
    assert stream.tokens == Usage(input=58, output=96, reasoning=71)


def test_response_is_none_until_the_response_completes() -> None:
    stream = new_stream()
    events = upstream_events("text")
    for name, data in events[:-2]:
        stream.feed(name, data)
        assert stream.response is None
    for name, data in events[-2:]:
        stream.feed(name, data)
    assert stream.response is not None


def test_encrypted_reasoning_only_when_the_client_includes_it() -> None:
    out, _ = translate(upstream_events("thinking"), request_for(include=[]))
    reasoning = next(e["item"] for e in client_events(out) if e["type"] == "response.output_item.done")
    assert reasoning["type"] == "reasoning"
    assert "encrypted_content" not in reasoning


def test_custom_tool_input_streams_as_text() -> None:
    deltas = [e["delta"] for e in events_of("custom_tool_call") if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == final_message("custom_tool_call")["content"][0]["input"]["input"]


# The custom tool input decoder -----------------------------------------------------------------------


@given(st.text(), st.booleans(), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_streamed_string_decodes_the_input_wherever_the_json_is_split(
    text: str, ascii_only: bool, cuts: list[int]
) -> None:
    raw = json.dumps({"input": text}, ensure_ascii=ascii_only)
    points = sorted({min(cut, len(raw)) for cut in cuts})
    fragments = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    decoder = _StreamedString()
    decoded = "".join(decoder.feed(fragment) for fragment in fragments)
    assert decoded == text
    assert decoder.sent == text


@pytest.mark.parametrize("raw", ['{"patch": "x"}', '["input", "x"]', '{"input": 5}'])
def test_streamed_string_forwards_nothing_for_another_shape(raw: str) -> None:
    decoder = _StreamedString()
    assert "".join(decoder.feed(char) for char in raw) == ""


# Every non-streaming fixture, streamed -----------------------------------------------------------


def stream_of(message: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The stream events Claude would send for `message`: each block started empty and filled
    by deltas cut in pieces, as the API streams them."""
    head = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
    events = [event("message_start", {"type": "message_start", "message": head})]
    for index, block in enumerate(message["content"]):
        start, deltas = _block_events(block)
        events.append(
            event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        for delta in deltas:
            events.append(event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None, "stop_details": message.get("stop_details")}
    events.append(event("message_delta", {"type": "message_delta", "delta": stop, "usage": message["usage"]}))
    events.append(event("message_stop", {"type": "message_stop"}))
    return events


def _halves(text: str) -> list[str]:
    return [piece for piece in (text[: len(text) // 2], text[len(text) // 2 :]) if piece]


def _block_events(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    kind = block["type"]
    if kind == "text":
        citations = [{"type": "citations_delta", "citation": c} for c in block.get("citations") or ()]
        texts = [{"type": "text_delta", "text": piece} for piece in _halves(block["text"])]
        return {"type": "text", "text": ""}, citations + texts
    if kind == "thinking":
        thinking = [{"type": "thinking_delta", "thinking": piece} for piece in _halves(block["thinking"])]
        return {"type": "thinking", "thinking": "", "signature": ""}, [
            *thinking,
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    if kind in ("tool_use", "server_tool_use"):
        raw = json.dumps(block["input"])
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": piece} for piece in _halves(raw)]
    return block, []


RESPONSE_FIXTURES = Path(__file__).parent.parent / "fixtures" / "responses" / "response"
RESPONSE_CASES = sorted(p.name.removesuffix(".message.json") for p in RESPONSE_FIXTURES.glob("*.message.json"))


@pytest.mark.parametrize("case", RESPONSE_CASES)
def test_every_response_fixture_streams_to_the_same_response(case: str) -> None:
    message = json.loads((RESPONSE_FIXTURES / f"{case}.message.json").read_text(encoding="utf-8"))
    events = stream_of(message)
    for _, data in events:
        UPSTREAM_EVENT.validate_python(orjson.loads(data))
    out, stream = translate(events)
    for payload in client_events(out):
        CLIENT_EVENT.validate_python(payload, strict=True)
    expected = to_response(message, REQUEST, response_id=RESPONSE_ID, created_at=CREATED_AT)
    assert stream.response is not None
    assert comparable(stream.response) == comparable(expected)


def test_a_stored_stream_keeps_the_sealed_thinking_the_client_did_not_ask_for() -> None:
    """What the gateway stores (`response`) needs Claude's signed thinking to continue the
    conversation later; the client's events carry it only when it asked for it."""
    request = dataclasses.replace(REQUEST, include_encrypted_reasoning=False)
    stream = ResponsesStream(request, response_id=RESPONSE_ID, created_at=CREATED_AT, keep_sealed=True)
    out = b"".join(stream.feed(event, data) for event, data in upstream_events("thinking_tool_use")) + stream.end()
    assert b"encrypted_content" not in out
    assert stream.response is not None
    kept = [item for item in stream.response["output"] if item["type"] == "reasoning"]
    assert kept and all(item["encrypted_content"].startswith("cpr1.") for item in kept)
    plain, _ = translate(upstream_events("thinking_tool_use"), request)
    assert client_events(out) == client_events(plain)  # the client sees exactly what it would have
