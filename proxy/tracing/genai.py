"""OpenTelemetry's GenAI semantic conventions for one gateway request: pure, dicts in, attributes out.

Every dialect becomes a Messages API call, so the attributes are read off that call's body and the
upstream's Message (or the stream events that build one), the same for chat, Responses and the
native routes. Names and meanings follow the conventions' Anthropic page: ``gen_ai.usage.input_tokens``
is the whole prompt (Anthropic's ``input_tokens`` plus the cache reads and writes), the cache counts
are reported beside it, and ``gen_ai.response.finish_reasons`` holds the upstream's ``stop_reason``
per choice. Content (``gen_ai.input.messages``, ``gen_ai.system_instructions``,
``gen_ai.output.messages``) is opt-in: only with ``log_payloads``, as JSON strings in the
conventions' message schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import orjson

from proxy.usage import Usage

PROVIDER: Final = "anthropic"

# Attribute values as the OpenTelemetry API takes them.
Attributes = dict[str, str | bool | int | float | Sequence[str]]

# Request parameters read off the upstream body: (body field, attribute, accepted types).
_PARAMETERS: Final[tuple[tuple[str, str, tuple[type, ...]], ...]] = (
    ("max_tokens", "gen_ai.request.max_tokens", (int,)),
    ("temperature", "gen_ai.request.temperature", (int, float)),
    ("top_p", "gen_ai.request.top_p", (int, float)),
    ("top_k", "gen_ai.request.top_k", (int, float)),
)

# What a trace keeps of the upstream body until its spans are made: the parameters, as
# (attribute, value) pairs, and the stop sequences; never the body itself.
Parameters = tuple[tuple[tuple[str, int | float], ...], tuple[str, ...] | None]

# What a trace keeps of one upstream Message: its id, model and stop reason.
Replied = tuple[Any, Any, Any]


def parameters(body: Mapping[str, Any]) -> Parameters:
    """The request parameters of ``body``, the Messages API body the gateway sends."""
    found = tuple(
        (name, cast("int | float", value))
        for field, name, types in _PARAMETERS
        if isinstance(value := body.get(field), types) and not isinstance(value, bool)
    )
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops and all(isinstance(s, str) for s in stops):
        return found, tuple(stops)
    return found, None


def model_attributes(operation: str, model: str) -> Attributes:
    """What every request of ``operation`` on ``model`` shares."""
    return {"gen_ai.operation.name": operation, "gen_ai.provider.name": PROVIDER, "gen_ai.request.model": model}


def request_attributes(requested: Parameters | None, stream: bool, n: int) -> Attributes:
    """What else the request asked for (``requested``: from `parameters`)."""
    attributes: Attributes = {}
    if requested is not None:
        found, stops = requested
        attributes.update(found)
        if stops:
            attributes["gen_ai.request.stop_sequences"] = stops
    if stream:
        attributes["gen_ai.request.stream"] = True
    if n != 1:
        attributes["gen_ai.request.choice.count"] = n
    return attributes


def usage_attributes(usage: Usage) -> Attributes:
    attributes: Attributes = {
        "gen_ai.usage.input_tokens": usage.prompt,  # the conventions': cache reads and writes included
        "gen_ai.usage.output_tokens": usage.output,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write,
    }
    if usage.reasoning:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
    return attributes


def replied(message: Mapping[str, Any]) -> Replied:
    """What the response attributes need of an upstream Message."""
    return message.get("id"), message.get("model"), message.get("stop_reason")


def response_attributes(replies: Sequence[Replied]) -> Attributes:
    """The upstream's Message per choice (from `replied`): its id and model (the first choice's),
    and every stop reason."""
    attributes: Attributes = {}
    if not replies:
        return attributes
    response_id, model, _ = replies[0]
    if isinstance(response_id, str):
        attributes["gen_ai.response.id"] = response_id
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    reasons = tuple(reason for _, _, reason in replies if isinstance(reason, str))
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    return attributes


# --- content (opt-in) --------------------------------------------------------------------


def input_attributes(body: Mapping[str, Any]) -> Attributes:
    """The prompt: the system instructions and the chat history, in the conventions' schema."""
    attributes: Attributes = {}
    system = body.get("system")
    if system:
        attributes["gen_ai.system_instructions"] = _json(_parts(system))
    messages = body.get("messages")
    if isinstance(messages, list):
        history = [{"role": m.get("role"), "parts": _parts(m.get("content"))} for m in messages if isinstance(m, dict)]
        attributes["gen_ai.input.messages"] = _json(history)
    return attributes


def output_attributes(messages: Sequence[Mapping[str, Any]]) -> Attributes:
    """The answer: one output message per choice."""
    output = [
        {"role": "assistant", "parts": _parts(m.get("content")), "finish_reason": m.get("stop_reason") or "error"}
        for m in messages
    ]
    return {"gen_ai.output.messages": _json(output)}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if not isinstance(content, list):
        return []
    return [_part(block) for block in content if isinstance(block, dict)]


def _part(block: Mapping[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block.get("text", "")}
    if kind == "thinking":
        return {"type": "reasoning", "content": block.get("thinking", "")}
    if kind in ("tool_use", "server_tool_use"):
        return {"type": "tool_call", "id": block.get("id"), "name": block.get("name"), "arguments": block.get("input")}
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": block.get("tool_use_id"), "response": block.get("content")}
    return {**block, "type": kind if isinstance(kind, str) else "unknown"}  # the schema's generic part


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# --- streams -----------------------------------------------------------------------------


class StreamedMessage:
    """The Message one upstream stream builds, from its events: the id, model and stop reason
    always (two events a stream), the content blocks only when ``content`` is kept (every delta)."""

    __slots__ = ("content", "message")

    def __init__(self, content: bool) -> None:
        self.content = content
        self.message: dict[str, Any] = {}

    def wants(self, event: str) -> bool:
        return event in ("message_start", "message_delta") or (self.content and event.startswith("content_block"))

    def feed(self, event: str, data: bytes) -> None:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # the translator reports a malformed stream; the trace just misses the part
        if not isinstance(parsed, dict):
            return
        if event == "message_start" and isinstance(parsed.get("message"), dict):
            self.message = {**parsed["message"], "content": []}
        elif event == "message_delta" and isinstance(parsed.get("delta"), dict):
            self.message["stop_reason"] = parsed["delta"].get("stop_reason")
        elif event == "content_block_start" and isinstance(parsed.get("content_block"), dict):
            self.message.setdefault("content", []).append(dict(parsed["content_block"]))
        elif event == "content_block_delta":
            self._delta(parsed.get("delta"))
        elif event == "content_block_stop":
            self._parse_input()

    def _delta(self, delta: Any) -> None:
        blocks = self.message.get("content")
        if not blocks or not isinstance(delta, dict):
            return
        block = blocks[-1]
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "input_json_delta":
            block["input"] = (block["input"] if isinstance(block.get("input"), str) else "") + str(
                delta.get("partial_json", "")
            )

    def _parse_input(self) -> None:
        """A tool call's input arrives as JSON text in pieces: parsed once the block is complete."""
        blocks = self.message.get("content")
        if blocks and isinstance(blocks[-1].get("input"), str):
            with contextlib.suppress(orjson.JSONDecodeError):
                blocks[-1]["input"] = orjson.loads(blocks[-1]["input"] or "{}")
