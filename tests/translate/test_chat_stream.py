import importlib
import json
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.sse import SSEDecoder
from proxy.translate.chat.response import to_chat_completion
from proxy.translate.chat.stream import ChoiceStreams, StreamTranslator
from tests.translate.test_chat_response import unknown_fields

FIXTURES = Path(__file__).parent.parent / "fixtures" / "chat" / "stream"
COMPLETE = sorted(p.name.removesuffix(".message.json") for p in FIXTURES.glob("*.message.json"))
CREATED = 1764097200
FALLBACK_MODEL = "sonnet-alias"
EVENT = TypeAdapter[Any](RawMessageStreamEvent)


def transcript(name: str) -> bytes:
    return (FIXTURES / f"{name}.sse").read_bytes()


def upstream_events(name: str) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    events = decoder.feed(transcript(name))
    assert not decoder.pending
    return events


def translate(events: list[tuple[str, bytes]], *, include_usage: bool) -> tuple[bytes, StreamTranslator]:
    translator = StreamTranslator(created=CREATED, include_usage=include_usage, model=FALLBACK_MODEL)
    out = b"".join(translator.feed(event, data) for event, data in events)
    return out + translator.end(), translator


def client_payloads(out: bytes) -> list[bytes]:
    """The `data` of each event the client receives, as the client's own SSE parser sees them."""
    decoder = SSEDecoder()
    events = decoder.feed(out)
    assert not decoder.pending
    assert all(name == "message" for name, _ in events)
    return [data for _, data in events]


def chunks_of(payloads: list[bytes]) -> list[dict[str, Any]]:
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        parsed = ChatCompletionChunk.model_validate(chunk, strict=True)
        assert unknown_fields(parsed) == []
    return chunks


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Accumulate deltas the way OpenAI clients do."""
    content: list[str] = []
    refusal: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            refusal.append(delta.get("refusal") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            thinking_blocks.extend(delta.get("thinking_blocks") or ())
            annotations.extend(delta.get("annotations") or ())
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += function.get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {
        "content": "".join(content) or None,
        "refusal": "".join(refusal) or None,
        "reasoning_content": "".join(reasoning) or None,
        "thinking_blocks": thinking_blocks,
        "annotations": annotations,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
    }


@pytest.mark.parametrize("name", [*COMPLETE, "error_midstream"])
def test_transcript_events_match_the_anthropic_sdk_types(name: str) -> None:
    for event, data in upstream_events(name):
        payload = orjson.loads(data)
        assert payload["type"] == event
        if event == "error":
            ErrorResponse.model_validate(payload)
        elif event != "ping":
            EVENT.validate_python(payload)


@pytest.mark.parametrize("name", COMPLETE)
def test_final_message_fixture_is_a_valid_anthropic_message(name: str) -> None:
    Message.model_validate_json((FIXTURES / f"{name}.message.json").read_bytes())


@pytest.mark.parametrize("name", COMPLETE)
@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_chunks_reassemble_to_the_non_streaming_response(name: str, include_usage: bool) -> None:
    out, _ = translate(upstream_events(name), include_usage=include_usage)
    streamed = reassemble(chunks_of(client_payloads(out)))
    message = json.loads((FIXTURES / f"{name}.message.json").read_text(encoding="utf-8"))
    expected = to_chat_completion(message, created=CREATED)["choices"][0]

    assert streamed["content"] == expected["message"]["content"]
    assert streamed["refusal"] == expected["message"]["refusal"]
    assert streamed["reasoning_content"] == expected["message"].get("reasoning_content")
    assert streamed["thinking_blocks"] == expected["message"].get("thinking_blocks", [])
    assert streamed["annotations"] == expected["message"].get("annotations", [])
    assert streamed["finish_reason"] == expected["finish_reason"]
    expected_calls = expected["message"].get("tool_calls", [])
    assert [(c["id"], c["name"]) for c in streamed["tool_calls"]] == [
        (c["id"], c["function"]["name"]) for c in expected_calls
    ]
    # Streamed arguments are upstream's own JSON text (it has spaces); compare them as JSON.
    assert [json.loads(c["arguments"]) for c in streamed["tool_calls"]] == [
        json.loads(c["function"]["arguments"]) for c in expected_calls
    ]


@pytest.mark.parametrize("name", COMPLETE)
def test_every_chunk_shares_id_created_model_and_object(name: str) -> None:
    out, _ = translate(upstream_events(name), include_usage=True)
    chunks = chunks_of(client_payloads(out))
    message = json.loads((FIXTURES / f"{name}.message.json").read_text(encoding="utf-8"))
    expected = to_chat_completion(message, created=CREATED)
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (expected["id"], CREATED, expected["model"], "chat.completion.chunk")
    }


@pytest.mark.parametrize("name", COMPLETE)
def test_first_chunk_carries_the_assistant_role_and_empty_content(name: str) -> None:
    out, _ = translate(upstream_events(name), include_usage=False)
    first = chunks_of(client_payloads(out))[0]
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]


@pytest.mark.parametrize("name", COMPLETE)
def test_include_usage_adds_one_final_chunk_with_usage_and_no_choices(name: str) -> None:
    out, translator = translate(upstream_events(name), include_usage=True)
    chunks = chunks_of(client_payloads(out))
    message = json.loads((FIXTURES / f"{name}.message.json").read_text(encoding="utf-8"))
    expected_usage = to_chat_completion(message, created=CREATED)["usage"]

    with_usage = [c for c in chunks if "usage" in c]
    assert with_usage == [chunks[-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == expected_usage
    assert translator.usage == expected_usage


@pytest.mark.parametrize("name", COMPLETE)
def test_without_include_usage_no_chunk_carries_usage(name: str) -> None:
    out, translator = translate(upstream_events(name), include_usage=False)
    chunks = chunks_of(client_payloads(out))
    assert not any("usage" in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert translator.usage is not None  # still known to the gateway, e.g. for accounting


def test_finish_reason_arrives_on_a_chunk_with_an_empty_delta() -> None:
    out, translator = translate(upstream_events("tool_use"), include_usage=False)
    last = chunks_of(client_payloads(out))[-1]
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.finish_reason == "tool_calls"


def test_tool_call_indexes_count_tool_calls_not_content_blocks() -> None:
    out, _ = translate(upstream_events("tool_use"), include_usage=False)
    starts = [
        call
        for chunk in chunks_of(client_payloads(out))
        for call in chunk["choices"][0]["delta"].get("tool_calls") or ()
        if "id" in call
    ]
    # Content blocks 1 and 2 (block 0 is text) become tool calls 0 and 1.
    assert starts == [
        {
            "index": 0,
            "id": "toolu_01A09q90qw90lq917835lq9V",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
    ]


def test_argument_fragments_are_forwarded_as_they_arrive() -> None:
    out, _ = translate(upstream_events("tool_use"), include_usage=False)
    fragments = [
        (call["index"], call["function"]["arguments"])
        for chunk in chunks_of(client_payloads(out))
        for call in chunk["choices"][0]["delta"].get("tool_calls") or ()
        if "id" not in call
    ]
    assert fragments[:2] == [(0, '{"location": "Par'), (0, 'is, France"')]
    assert all(fragment for _, fragment in fragments)  # empty partial_json is not forwarded


def test_tool_call_without_input_fragments_gets_empty_object_arguments() -> None:
    out, _ = translate(upstream_events("tool_use_no_input"), include_usage=False)
    calls = reassemble(chunks_of(client_payloads(out)))["tool_calls"]
    assert calls == [{"id": "toolu_01VRhj3cWJdV5ZmAL5wpqfRn", "name": "get_time", "arguments": "{}"}]


def test_thinking_deltas_become_reasoning_content_and_the_signed_block_follows_whole() -> None:
    out, _ = translate(upstream_events("thinking"), include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks_of(client_payloads(out))]
    blocks = [block for delta in deltas for block in delta.get("thinking_blocks") or ()]
    assert blocks[0] == {
        "type": "thinking",
        "thinking": "The user asks for 27 * 453. 27 * 453 = 27 * 400 + 27 * 53 = 10800 + 1431 = 12231.",
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds0ZJgJ2aVhSp1t7LEPQL6kGTE4o2SYLyi2+9qa4pbS6"
        "JBSIdq+4Ab7HMgW05SjIu9xhzn7vsCDkk+Cg+QZqTmSjI50Z7=",
    }
    assert len(blocks) == 1
    # The whole block comes once, after its last thinking delta and before the answer's text.
    first_text = next(k for k, delta in enumerate(deltas) if delta.get("content"))
    block_at = next(k for k, delta in enumerate(deltas) if delta.get("thinking_blocks"))
    last_reasoning = max(k for k, delta in enumerate(deltas) if delta.get("reasoning_content"))
    assert last_reasoning < block_at < first_text
    reasoning = [
        c["choices"][0]["delta"]["reasoning_content"]
        for c in chunks_of(client_payloads(out))
        if "reasoning_content" in c["choices"][0]["delta"]
    ]
    assert reasoning == [
        "The user asks for 27 * 453.",
        " 27 * 453 = 27 * 400 + 27 * 53",
        " = 10800 + 1431 = 12231.",
    ]


def test_redacted_thinking_is_sent_whole_when_it_starts() -> None:
    translator = started_translator()
    block = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p"}
    out = translator.feed(
        "content_block_start", orjson.dumps({"type": "content_block_start", "index": 0, "content_block": block})
    )
    assert orjson.loads(out.removeprefix(b"data: "))["choices"][0]["delta"] == {"thinking_blocks": [block]}
    assert translator.feed("content_block_stop", b'{"type":"content_block_stop","index":0}') == b""


def test_signature_delta_produces_no_bytes() -> None:
    translator = started_translator()
    delta = {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}
    data = orjson.dumps({"type": "content_block_delta", "index": 0, "delta": delta})
    assert translator.feed("content_block_delta", data) == b""


def test_ping_becomes_an_sse_comment() -> None:
    translator = started_translator()
    assert translator.feed("ping", b'{"type": "ping"}') == b": ping\n\n"


def test_pings_in_a_transcript_reach_the_client_as_comments() -> None:
    out, _ = translate(upstream_events("tool_use"), include_usage=False)
    assert out.count(b": ping\n\n") == 2


def test_unknown_event_types_are_ignored() -> None:
    events = upstream_events("text")
    events.insert(3, ("content_block_hologram", b'{"type":"content_block_hologram","index":0}'))
    out, _ = translate(events, include_usage=False)
    baseline, _ = translate(upstream_events("text"), include_usage=False)
    assert out == baseline


def test_unknown_delta_types_are_ignored() -> None:
    translator = started_translator()
    citation = {
        "type": "citations_delta",
        "citation": {"type": "char_location", "cited_text": "x", "document_index": 0},
    }
    data = orjson.dumps({"type": "content_block_delta", "index": 0, "delta": citation})
    assert translator.feed("content_block_delta", data) == b""


def test_events_without_an_event_line_are_routed_by_their_type() -> None:
    named = upstream_events("text")
    anonymous = [("message", data) for _, data in named]
    assert translate(anonymous, include_usage=True)[0] == translate(named, include_usage=True)[0]


def test_model_from_message_start_replaces_the_fallback() -> None:
    out, _ = translate(upstream_events("text"), include_usage=False)
    assert FALLBACK_MODEL.encode() not in out
    assert all(c["model"] == "claude-haiku-4-5-20251001" for c in chunks_of(client_payloads(out)))


def test_chunks_are_sse_data_lines_ending_in_a_blank_line() -> None:
    out, _ = translate(upstream_events("text"), include_usage=True)
    frames = [frame for frame in out.split(b"\n\n") if frame]
    assert all(frame.startswith((b"data: ", b": ping")) and b"\n" not in frame for frame in frames)
    assert out.endswith(b"data: [DONE]\n\n")


# --- failures: the client must see an error, never a clean stop


def test_error_event_mid_stream_sends_an_openai_error_payload_and_no_done() -> None:
    out, translator = translate(upstream_events("error_midstream"), include_usage=True)
    payloads = client_payloads(out)
    assert b"[DONE]" not in payloads
    error = orjson.loads(payloads[-1])
    assert error == {
        "error": {
            "message": "Upstream failed mid-stream (overloaded_error): Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": None,
        }
    }
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all(choice["finish_reason"] is None for c in chunks for choice in c["choices"])
    assert not any("usage" in c for c in chunks)
    assert translator.done
    assert translator.finish_reason is None


def test_text_before_the_error_is_still_delivered() -> None:
    out, _ = translate(upstream_events("error_midstream"), include_usage=False)
    chunks = [orjson.loads(p) for p in client_payloads(out)[:-1]]
    assert reassemble(chunks)["content"] == "Here is the first part of the essay"


def test_nothing_is_emitted_after_the_stream_failed() -> None:
    translator = StreamTranslator(created=CREATED, include_usage=True, model=FALLBACK_MODEL)
    for event, data in upstream_events("error_midstream"):
        translator.feed(event, data)
    assert translator.done
    assert translator.feed("content_block_delta", upstream_events("text")[3][1]) == b""
    assert translator.feed("ping", b"{}") == b""
    assert translator.end() == b""
    assert translator.fail(UpstreamError("again")) == b""


def test_fail_emits_the_error_payload_once_and_marks_done() -> None:
    translator = started_translator()
    out = translator.fail(UpstreamTimeout("Upstream stopped sending data."))
    assert out == (
        b'data: {"error":{"message":"Upstream stopped sending data.","type":"timeout_error",'
        b'"param":null,"code":null}}\n\n'
    )
    assert translator.done


def test_finish_on_a_stream_cut_before_message_delta_reports_an_error() -> None:
    events = upstream_events("text")
    cut = [e for e in events if e[0] not in ("message_delta", "message_stop")]
    out, translator = translate(cut, include_usage=True)
    payloads = client_payloads(out)
    assert b"[DONE]" not in payloads
    assert orjson.loads(payloads[-1])["error"]["type"] == "server_error"
    assert translator.done


def test_finish_without_message_stop_but_after_message_delta_is_clean() -> None:
    events = [e for e in upstream_events("text") if e[0] != "message_stop"]
    out, _ = translate(events, include_usage=False)
    assert out.endswith(b"data: [DONE]\n\n")


def test_malformed_event_json_fails_the_stream() -> None:
    translator = started_translator()
    out = translator.feed("content_block_delta", b'{"type":"content_block_delta","index":0,"delta":')
    assert orjson.loads(out.removeprefix(b"data: "))["error"]["type"] == "server_error"
    assert translator.done


def test_event_missing_a_required_field_fails_the_stream() -> None:
    translator = started_translator()
    out = translator.feed("content_block_delta", b'{"type":"content_block_delta","index":0}')
    assert b'"error"' in out
    assert translator.done


def test_usage_combines_message_start_input_with_message_delta_output() -> None:
    _, translator = translate(upstream_events("text"), include_usage=False)
    assert translator.usage == {
        "prompt_tokens": 21 + 1536,
        "completion_tokens": 18,
        "total_tokens": 21 + 1536 + 18,
        "prompt_tokens_details": {"cached_tokens": 1536, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_usage_keeps_message_start_counts_that_message_delta_leaves_null() -> None:
    translator = started_translator()
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 9, "input_tokens": None},
    }
    translator.feed("message_delta", orjson.dumps(delta))
    assert translator.usage is not None
    assert translator.usage["prompt_tokens"] == 21 + 1536
    assert translator.usage["completion_tokens"] == 9


ODD_COUNTS = ["7", -1, 2.5, True, [3], {"n": 1}]


@pytest.mark.parametrize("count", ODD_COUNTS, ids=repr)
@pytest.mark.parametrize("field", ["input_tokens", "cache_read_input_tokens", "output_tokens"])
def test_a_message_start_usage_count_that_is_not_a_non_negative_integer_fails_the_stream(
    field: str, count: Any
) -> None:
    translator = StreamTranslator(created=CREATED, include_usage=True, model=FALLBACK_MODEL)
    _, data = upstream_events("text")[0]
    start = orjson.loads(data)
    start["message"]["usage"][field] = count
    error = orjson.loads(translator.feed("message_start", orjson.dumps(start)).removeprefix(b"data: "))["error"]
    assert f"usage.{field}" in error["message"] and error["type"] == "server_error"
    assert translator.failed and translator.usage is None  # nothing countable arrived
    assert translator.end() == b""


@pytest.mark.parametrize("usage", [{"output_tokens": count} for count in ODD_COUNTS] + [[1], "3", 7])
@pytest.mark.parametrize("include_usage", [True, False])
def test_a_message_delta_usage_that_cannot_be_counted_fails_the_stream_and_never_raises(
    usage: Any, include_usage: bool
) -> None:
    translator = StreamTranslator(created=CREATED, include_usage=include_usage, model=FALLBACK_MODEL)
    out = b""
    for event, data in upstream_events("text"):
        if event == "message_delta":
            data = orjson.dumps({**orjson.loads(data), "usage": usage})
        out += translator.feed(event, data)
    assert translator.end() == b""  # the error event came with message_delta; nothing follows it
    assert translator.failed and b'"error"' in out and not out.endswith(b"data: [DONE]\n\n")
    usage_now = translator.usage  # what the route meters: message_start's counts, all integers
    assert usage_now is not None and all(isinstance(v, int) for v in usage_now.values() if not isinstance(v, dict))


def test_a_thinking_tokens_count_that_is_a_string_fails_the_stream() -> None:
    translator = started_translator()
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 3, "output_tokens_details": {"thinking_tokens": "2"}},
    }
    out = translator.feed("message_delta", orjson.dumps(delta))
    assert b"usage.output_tokens_details.thinking_tokens" in out and translator.failed


@pytest.mark.parametrize(
    ("event", "payload", "field"),
    [
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": 5}}, "delta.text"),
        ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": None}}, "delta.thinking"),
        ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": 7, "name": "f"}}, "id"),
        ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t", "name": []}}, "name"),
        ("message_start", {"message": "not an object"}, None),
        ("content_block_delta", {"index": [0], "delta": {"type": "citations_delta", "citation": {}}}, None),
    ],
    ids=["text-number", "thinking-null", "tool-id-number", "tool-name-list", "message-string", "index-list"],
)
def test_event_fields_of_the_wrong_type_fail_the_stream_with_an_error_event(
    event: str, payload: dict[str, Any], field: str | None
) -> None:
    translator = (
        started_translator()
        if event != "message_start"
        else StreamTranslator(created=CREATED, include_usage=True, model=FALLBACK_MODEL)
    )
    out = translator.feed(event, orjson.dumps({"type": event, **payload}))
    error = orjson.loads(out.removeprefix(b"data: "))["error"]
    assert field is None or field in error["message"]
    assert translator.failed


def test_choice_streams_with_odd_usage_fail_and_still_merge_the_usage_they_can_count() -> None:
    choices = ChoiceStreams(2, created=CREATED, include_usage=True, model=FALLBACK_MODEL, completion_id="chatcmpl-x")
    out = b""
    for event, data in upstream_events("text"):
        if event == "message_delta":
            data = orjson.dumps({**orjson.loads(data), "usage": {"output_tokens": "18"}})
        out += choices.feed(0, event, data)
    out += choices.end(0)
    assert choices.done and b'"error"' in out and not out.endswith(b"data: [DONE]\n\n")
    assert all(t.usage is None or isinstance(t.usage["prompt_tokens"], int) for t in choices.translators)


def test_usage_is_none_before_message_start() -> None:
    assert StreamTranslator(created=CREATED, include_usage=True, model="m").usage is None


def started_translator() -> StreamTranslator:
    translator = StreamTranslator(created=CREATED, include_usage=True, model=FALLBACK_MODEL)
    event, data = upstream_events("text")[0]
    assert translator.feed(event, data).startswith(b"data: ")
    return translator


# --- the openai SDK itself as the client


def sdk_stream(body: bytes) -> Any:
    # openai 3.x sends through httpx2, older releases through httpx: use whichever it has.
    try:
        http: Any = importlib.import_module("httpx2")
    except ImportError:
        http = importlib.import_module("httpx")

    def handler(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        http_client=http.Client(transport=http.MockTransport(handler)),
        max_retries=0,
    )
    return client.chat.completions.create(
        model="claude-haiku-4-5",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )


def test_openai_sdk_reads_a_translated_stream() -> None:
    out, _ = translate(upstream_events("tool_use"), include_usage=True)
    chunks = list(sdk_stream(out))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 472
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert [call.id for call in calls if call.id] == [
        "toolu_01A09q90qw90lq917835lq9V",
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
    ]


def test_openai_sdk_raises_on_an_error_mid_stream() -> None:
    out, _ = translate(upstream_events("error_midstream"), include_usage=True)
    received = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in sdk_stream(out):
            received.append(chunk)
    assert received  # the text before the failure was delivered
    assert all(choice.finish_reason is None for c in received for choice in c.choices)


# --- web search citations


def test_web_search_citations_arrive_as_annotations_when_the_cited_block_ends() -> None:
    out, _ = translate(upstream_events("web_search"), include_usage=False)
    chunks = chunks_of(client_payloads(out))
    streamed = reassemble(chunks)
    [annotation, *_] = streamed["annotations"]
    span = annotation["url_citation"]
    assert streamed["content"][span["start_index"] : span["end_index"]] == (
        " Claude Shannon was born on April 30, 1916, in Petoskey, Michigan."
    )
    # Server tool blocks (the search itself) are not client tool calls.
    assert streamed["tool_calls"] == []


# --- n > 1: several choices in one stream


def interleave(names: list[str]) -> list[tuple[int, str, bytes]]:
    """The events of several transcripts, one choice each, interleaved round-robin."""
    streams = [upstream_events(name) for name in names]
    mixed: list[tuple[int, str, bytes]] = []
    for step in range(max(len(events) for events in streams)):
        for choice, events in enumerate(streams):
            if step < len(events):
                mixed.append((choice, *events[step]))
    return mixed


def merged_stream(names: list[str], *, include_usage: bool) -> tuple[bytes, ChoiceStreams]:
    streams = ChoiceStreams(
        len(names), created=CREATED, include_usage=include_usage, model=FALLBACK_MODEL, completion_id="chatcmpl-n"
    )
    out = b"".join(streams.feed(choice, event, data) for choice, event, data in interleave(names))
    for choice in range(len(names)):
        out += streams.end(choice)
    return out, streams


def test_choice_index_tags_every_chunk() -> None:
    translator = StreamTranslator(created=CREATED, include_usage=False, model="m", choice_index=2, completion_id="x")
    out = b"".join(translator.feed(event, data) for event, data in upstream_events("text")) + translator.end()
    chunks = chunks_of(client_payloads(out))
    assert {choice["index"] for c in chunks for choice in c["choices"]} == {2}
    assert {c["id"] for c in chunks} == {"x"}


def test_choice_streams_interleave_n_choices_with_one_id_one_usage_and_one_done() -> None:
    names = ["text", "tool_use", "thinking"]
    out, streams = merged_stream(names, include_usage=True)
    assert streams.done
    payloads = client_payloads(out)
    assert payloads.count(b"[DONE]") == 1
    chunks = chunks_of(payloads)
    assert {c["id"] for c in chunks} == {"chatcmpl-n"}
    for k, name in enumerate(names):
        mine = [{**c, "choices": [ch for ch in c["choices"] if ch["index"] == k]} for c in chunks if c["choices"]]
        mine = [c for c in mine if c["choices"]]
        assert mine[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        message = json.loads((FIXTURES / f"{name}.message.json").read_text(encoding="utf-8"))
        expected = to_chat_completion(message, created=CREATED)["choices"][0]
        streamed = reassemble(mine)
        assert streamed["content"] == expected["message"]["content"], name
        assert streamed["finish_reason"] == expected["finish_reason"], name
    usage = [c for c in chunks if "usage" in c]
    assert usage == [chunks[-1]]
    assert chunks[-1]["choices"] == []
    prompt = sum(
        to_chat_completion(json.loads((FIXTURES / f"{n}.message.json").read_text(encoding="utf-8")), created=CREATED)[
            "usage"
        ]["prompt_tokens"]
        for n in names
    )
    assert chunks[-1]["usage"]["prompt_tokens"] == prompt


def test_choice_streams_without_include_usage_end_with_done_only() -> None:
    out, _ = merged_stream(["text", "text"], include_usage=False)
    assert not any("usage" in c for c in chunks_of(client_payloads(out)))


def test_choice_streams_send_done_only_after_the_last_choice_ends() -> None:
    streams = ChoiceStreams(2, created=CREATED, include_usage=False, model="m", completion_id="chatcmpl-n")
    for choice, event, data in interleave(["text", "text"]):
        streams.feed(choice, event, data)
    assert streams.end(0) == b""
    assert not streams.done
    assert streams.end(1) == b"data: [DONE]\n\n"


def test_choice_streams_an_error_in_one_choice_ends_the_whole_stream() -> None:
    streams = ChoiceStreams(2, created=CREATED, include_usage=True, model="m", completion_id="chatcmpl-n")
    out = b""
    for choice, event, data in interleave(["text", "error_midstream"]):
        out += streams.feed(choice, event, data)
    assert streams.done
    payloads = client_payloads(out)
    assert b"[DONE]" not in payloads
    assert orjson.loads(payloads[-1])["error"]["type"] == "overloaded_error"
    assert streams.end(0) == b""
    assert streams.feed(0, "ping", b"{}") == b""


def test_choice_streams_a_choice_cut_short_fails_the_stream() -> None:
    streams = ChoiceStreams(2, created=CREATED, include_usage=False, model="m", completion_id="chatcmpl-n")
    cut = [e for e in upstream_events("text") if e[0] not in ("message_delta", "message_stop")]
    for event, data in upstream_events("text"):
        streams.feed(0, event, data)
    for event, data in cut:
        streams.feed(1, event, data)
    assert streams.end(0) == b""
    out = streams.end(1)
    assert orjson.loads(out.removeprefix(b"data: "))["error"]["type"] == "server_error"
    assert streams.done


def test_openai_sdk_reads_a_stream_of_several_choices() -> None:
    out, _ = merged_stream(["text", "tool_use"], include_usage=True)
    chunks = list(sdk_stream(out))
    indexes = {choice.index for c in chunks for choice in c.choices}
    assert indexes == {0, 1}
    assert chunks[-1].usage is not None


# --- today's rules: a refusal's explanation, thinking tokens (issue 16) --------------------------


def test_a_refusal_stop_streams_its_explanation_as_the_refusal_delta_before_the_finish_chunk() -> None:
    out, _ = translate(upstream_events("refusal_explained_after_thinking"), include_usage=False)
    chunks = chunks_of(client_payloads(out))
    *_, refusal, finish = chunks
    assert refusal["choices"][0]["delta"] == {
        "refusal": "This request asks for methods that could enable biological harm."
    }
    assert refusal["choices"][0]["finish_reason"] is None
    assert finish["choices"][0]["finish_reason"] == "content_filter"
    sdk_chunks = list(sdk_stream(out))
    assert [c.choices[0].delta.refusal for c in sdk_chunks if c.choices and c.choices[0].delta.refusal] == [
        "This request asks for methods that could enable biological harm."
    ]


def test_a_refusal_without_an_explanation_streams_the_policy_category() -> None:
    events = [
        (
            event,
            data.replace(
                b'"explanation":"This request asks for methods that could enable biological harm."',
                b'"explanation":null',
            ),
        )
        for event, data in upstream_events("refusal_explained_after_thinking")
    ]
    out, _ = translate(events, include_usage=False)
    refusal = chunks_of(client_payloads(out))[-2]
    assert refusal["choices"][0]["delta"] == {
        "refusal": "The model declined to respond to this request (policy category: bio)."
    }


def test_no_refusal_delta_on_other_stops() -> None:
    for name in COMPLETE:
        if name.startswith("refusal"):
            continue
        out, _ = translate(upstream_events(name), include_usage=False)
        assert not any("refusal" in c["choices"][0]["delta"] for c in chunks_of(client_payloads(out))), name


def test_streamed_thinking_tokens_from_message_delta_are_the_reasoning_tokens() -> None:
    out, translator = translate(upstream_events("refusal_explained_after_thinking"), include_usage=True)
    usage = chunks_of(client_payloads(out))[-1]["usage"]
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 49}
    assert translator.tokens is not None and translator.tokens.reasoning == 49
