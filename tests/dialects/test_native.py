"""The native dialect (proxy/dialects/native.py): routing a native body, metering its reply and its
stream, errors in Anthropic's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.types.shared import ErrorResponse

from proxy.config import Settings
from proxy.dialects.base import Inbound, Outbound
from proxy.dialects.native import NativeMessages, NativeStream, anthropic_error, anthropic_error_event, message_usage
from proxy.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    InvalidRequest,
    ProxyError,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamOverloaded,
    UpstreamTimeout,
    stream_ended_early,
)
from proxy.models import ModelTable
from proxy.sse import SSEDecoder
from proxy.usage import Usage

TABLE = ModelTable.with_overrides(aliases={"fast": "claude-haiku-4-5"})
STREAMS = Path(__file__).parent.parent / "fixtures" / "chat" / "stream"
BODY = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
NATIVE = NativeMessages()
MESSAGES, COUNT_TOKENS = NATIVE.endpoints


def prepare_native(body: Any, table: ModelTable, *, count_tokens: bool = False, **headers: str) -> Outbound:
    inbound = Inbound(table, Settings(), headers)
    return NATIVE.parse(COUNT_TOKENS if count_tokens else MESSAGES, body, inbound)


def test_body_is_forwarded_as_sent() -> None:
    request = prepare_native(BODY, TABLE)
    assert orjson.loads(request.payload) == BODY
    assert (request.model, request.stream, request.path) == ("claude-haiku-4-5", False, "/v1/messages")


def test_alias_is_resolved_in_the_forwarded_body_only() -> None:
    body = {**BODY, "model": "fast", "stream": True}
    request = prepare_native(body, TABLE)
    assert orjson.loads(request.payload) == {**body, "model": "claude-haiku-4-5"}
    assert body["model"] == "fast"  # the client's body is not modified
    assert (request.model, request.stream) == ("claude-haiku-4-5", True)


def test_fields_the_gateway_does_not_translate_pass_through() -> None:
    body = {**BODY, "container": "c1", "context_management": {"edits": []}, "future_field": [1]}
    assert orjson.loads(prepare_native(body, TABLE).payload) == body


def test_count_tokens_never_streams() -> None:
    body = {"model": "fast", "messages": BODY["messages"], "stream": "whatever"}
    request = prepare_native(body, TABLE, count_tokens=True)
    assert request.stream is False and request.path == "/v1/messages/count_tokens"
    assert request.reserves_tokens is False  # counting is free upstream: a request, no tokens
    assert orjson.loads(request.payload)["model"] == "claude-haiku-4-5"


def test_only_the_anthropic_headers_are_forwarded() -> None:
    headers = {"anthropic-beta": "x", "anthropic-version": "2023-06-01", "authorization": "Bearer sk", "x-api-key": "k"}
    request = NATIVE.parse(MESSAGES, BODY, Inbound(TABLE, Settings(), headers))
    assert request.headers == {"anthropic-beta": "x", "anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1, 2], None),
        ({"messages": []}, "model"),
        ({"model": 5}, "model"),
        ({"model": ""}, "model"),
        ({"model": "claude-haiku-4-5", "stream": "yes"}, "stream"),
    ],
)
def test_bodies_that_cannot_be_routed_are_refused(body: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare_native(body, TABLE)
    assert info.value.status_code == 400
    assert info.value.param == param


def test_message_usage() -> None:
    message = orjson.loads((STREAMS / "text.message.json").read_bytes())
    assert message_usage(message) == message["usage"]
    assert message_usage({"type": "error"}) is None
    assert message_usage([]) is None


@pytest.mark.parametrize("name", ["text", "tool_use", "thinking", "web_search"])
@pytest.mark.parametrize("named", [True, False])
def test_stream_usage_matches_the_final_message(name: str, named: bool) -> None:
    meter = NativeStream()
    assert meter.usage is None and meter.tokens is None
    for event, data in SSEDecoder().feed((STREAMS / f"{name}.sse").read_bytes()):
        assert meter.feed(event if named else "message", data) == b""  # forwarded as it came
    final = orjson.loads((STREAMS / f"{name}.message.json").read_bytes())["usage"]
    usage = meter.usage
    assert usage is not None
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert usage.get(key) == final.get(key), key
    assert meter.tokens == Usage.from_anthropic(usage)


def test_stream_usage_ignores_what_it_cannot_read() -> None:
    meter = NativeStream()
    meter.feed("message_start", b"{not json")
    meter.feed("message_delta", b"[1]")
    meter.feed("message_delta", orjson.dumps({"type": "message_delta", "usage": {"output_tokens": 4}}))
    assert meter.usage == {"output_tokens": 4}


@pytest.mark.parametrize("count", ["7", -1, 2.5, [1]], ids=repr)
def test_usage_whose_counts_cannot_be_added_up_is_left_unmetered_not_raised(count: Any) -> None:
    meter = NativeStream()
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    meter.feed("message_start", orjson.dumps(start))
    meter.feed("message_delta", orjson.dumps({"type": "message_delta", "usage": {"output_tokens": count}}))
    assert meter.usage == {"input_tokens": 5, "output_tokens": 1}  # the odd delta is not merged
    assert meter.tokens is not None and meter.tokens.output == 1
    assert message_usage({"usage": {"input_tokens": count, "output_tokens": 2}}) is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("bad"), "invalid_request_error"),
        (BodyTooLarge("big"), "invalid_request_error"),
        (AuthenticationFailed("who"), "authentication_error"),
        (RateLimited("slow down"), "rate_limit_error"),
        (UpstreamAuthFailed("gateway key"), "api_error"),
        (UpstreamOverloaded("busy"), "overloaded_error"),
        (UpstreamTimeout("late"), "timeout_error"),
        (ProxyError("oops"), "api_error"),
    ],
)
def test_errors_render_in_anthropic_shape(error: ProxyError, kind: str) -> None:
    body = orjson.loads(anthropic_error(error))
    assert body == {"type": "error", "error": {"type": kind, "message": error.message}}
    ErrorResponse.model_validate(body)
    event = anthropic_error_event(error)
    [(name, data)] = SSEDecoder().feed(event)
    assert name == "error"
    assert orjson.loads(data) == body


def test_a_stream_that_ends_before_message_stop_ends_with_the_one_early_end_error() -> None:
    meter = NativeStream()
    for event, data in SSEDecoder().feed((STREAMS / "text.sse").read_bytes()):
        if event != "message_stop":
            meter.feed(event, data)
    assert not meter.done
    [(name, data)] = SSEDecoder().feed(meter.end())
    assert name == "error"
    assert orjson.loads(data)["error"]["message"] == stream_ended_early().message
    assert meter.done and meter.end() == b""


def test_a_whole_stream_ends_with_nothing_added() -> None:
    meter = NativeStream()
    for event, data in SSEDecoder().feed((STREAMS / "text.sse").read_bytes()):
        meter.feed(event, data)
    assert meter.done and meter.end() == b""
