"""Deterministic replies: the Message a request gets, and the event stream that reassembles to it.

Everything here is a pure function of the validated request, so the same request always gets the
same body; the stream is derived from the finished Message, so reassembling it gives that Message.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import re
from typing import Any, Final

import orjson

from proxy.simulator.validate import blocks_of, is_custom_tool

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PIECE = re.compile(r"\s*\S+\s*")
_B62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MEDIA_TOKENS: Final = 100
_QUOTE_WORDS: Final = 20
_TARGET_WORDS: Final = 40
_FILLER: Final = (
    "This is a deterministic reply from the claude-proxy simulator.",
    "It stands in for the Anthropic Messages API.",
    "The same request always gets the same answer.",
    "Tests and benchmarks can rely on every word of it.",
    "Nothing here was written by a model.",
    "Have a good day.",
)
_SIMULATE_ERROR = re.compile(r"SIMULATE_ERROR\s+(\d{3})(?:\s+([a-z_]+))?")
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES: Final = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "This request would exceed your organization's rate limit (simulated).",
    "api_error": "Internal server error",
}
# A harmless command for a shell-like tool, so an agent that runs what it is told (Codex's
# `exec_command`, an Agents SDK shell tool) gets on with its loop instead of running "example".
SHELL_COMMAND: Final = "echo claude-proxy simulator"
_SHELL_ARGUMENTS: Final = ("cmd", "command")


# --- tokens ----------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: every run of word characters, and every other non-space character."""
    return len(_TOKEN.findall(text))


def truncate_tokens(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    for k, match in enumerate(_TOKEN.finditer(text), 1):
        if k == limit:
            return text[: match.end()]
    return text


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_tokens(block["text"])
    if kind == "thinking":
        return count_tokens(block["thinking"])
    if kind in ("tool_use", "server_tool_use"):
        return count_tokens(block["name"]) + count_tokens(_json(block.get("input", {})))
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return count_tokens(content)
        return sum(_block_tokens(item) for item in content)
    if kind in ("image", "redacted_thinking"):
        return _MEDIA_TOKENS
    if kind == "document":
        source = block["source"]
        return count_tokens(source["data"]) if source.get("type") == "text" else _MEDIA_TOKENS
    return count_tokens(_json(block))


def input_tokens(request: dict[str, Any]) -> int:
    """Tokens over the system prompt, every message and every tool definition."""
    total = 0
    system = request.get("system")
    if isinstance(system, str):
        total += count_tokens(system)
    elif system:
        total += sum(count_tokens(block["text"]) for block in system)
    for message in request["messages"]:
        content = message["content"]
        if isinstance(content, str):
            total += count_tokens(content)
        else:
            total += sum(_block_tokens(block) for block in content)
    for tool in request.get("tools") or ():
        total += count_tokens(_json(tool))
    return total


# --- ids -------------------------------------------------------------------------------------


def _b62(data: bytes, length: int = 22) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_B62[digit])
    return "".join(chars)


def request_digest(request: dict[str, Any]) -> bytes:
    try:
        canonical = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        canonical = repr(request).encode()
    return hashlib.blake2b(canonical, digest_size=17).digest()


def _signature(text: str) -> str:
    return base64.b64encode(hashlib.blake2b(b"sig:" + text.encode(), digest_size=48).digest()).decode()


# --- the reply -------------------------------------------------------------------------------


def _quote(text: str, words: int = _QUOTE_WORDS) -> str:
    parts = text.split()
    quoted = " ".join(parts[:words])
    return quoted + "..." if len(parts) > words else quoted


def _sentence(text: str) -> str:
    return text if text[-1:] in (".", "!", "?") else text + "."


def _pad(text: str) -> str:
    """Append whole filler sentences until the text has about forty words."""
    words = len(text.split())
    for sentence in _FILLER:
        if words >= _TARGET_WORDS:
            break
        text += " " + sentence
        words += len(sentence.split())
    return text


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _text_of(blocks: list[dict[str, Any]]) -> str:
    return " ".join(block["text"] for block in blocks if block["type"] == "text")


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    text = content if isinstance(content, str) else _text_of(list(content))
    text = _quote(text) or "(no content)"
    return "an error: " + text if block.get("is_error") else text


def _last_user_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    end = next((i for i in reversed(range(len(messages))) if messages[i]["role"] == "user"), None)
    if end is None:
        return []
    start = end
    while start > 0 and messages[start - 1]["role"] == "user":
        start -= 1
    return [block for message in messages[start : end + 1] for block in blocks_of(message)]


def last_user_text(request: dict[str, Any]) -> str:
    return _text_of(_last_user_turn([m for m in request["messages"] if m["role"] != "system"]))


def simulated_error(text: str) -> tuple[int, str, str] | None:
    """``SIMULATE_ERROR <status> [<type>]`` in the last user text: the error to answer instead."""
    match = _SIMULATE_ERROR.search(text)
    if match is None or not 400 <= int(match.group(1)) <= 599:
        return None
    status = int(match.group(1))
    kind = match.group(2) or _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, kind, _ERROR_MESSAGES.get(kind, f"Simulated {kind} (SIMULATE_ERROR {status}).")


def example_value(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value for a JSON schema: required properties only, the simplest value of each type."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return "example"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return example_value(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_value((usable or options)[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return example_value(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind in ("integer", "number"):
        value: float = 1 if kind == "integer" else 1.5
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, int | float) and value < low:
            value = math.ceil(low) if kind == "integer" else low
        if isinstance(high, int | float) and value > high:
            value = math.floor(high) if kind == "integer" else high
        return value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        count = schema.get("minItems", 0)
        count = min(count, 64) if isinstance(count, int) else 0
        return [example_value(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_value(properties.get(name, {}), root, depth + 1) for name in schema.get("required") or ()}
    return "example"


def _json_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema allows by its ``type`` (a name or a list of names)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    return {k for k in kind if isinstance(k, str)} if isinstance(kind, list) else set()


def tool_input(schema: Any) -> Any:
    """The arguments of a call: `example_value`, except that a shell-like tool (a string or array
    ``cmd``/``command`` property) gets `SHELL_COMMAND`, as one string or split into words."""
    value = example_value(schema)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(value, dict) or not isinstance(properties, dict):
        return value
    for name in _SHELL_ARGUMENTS:
        schema_of = properties.get(name)
        if not isinstance(schema_of, dict) or "enum" in schema_of or "const" in schema_of:
            continue  # a `command` picked from a list is no shell command
        kinds = _json_types(schema_of)
        if "string" in kinds:
            value[name] = SHELL_COMMAND
        elif "array" in kinds:
            value[name] = SHELL_COMMAND.split()
    return value


def _tool_calls(request: dict[str, Any], user_text: str) -> tuple[list[dict[str, Any]], bool]:
    tools = [tool for tool in request.get("tools") or () if is_custom_tool(tool)]
    choice = request.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return [], False
    forced = choice["type"] in ("any", "tool")
    if choice["type"] == "tool":
        return [tool for tool in tools if tool["name"] == choice["name"]][:1], True
    named = []
    for order, tool in enumerate(tools):
        found = re.search(rf"(?<![\w-]){re.escape(tool['name'])}(?![\w-])", user_text)
        if found:
            named.append((found.start(), order, tool))
    chosen = [tool for _, _, tool in sorted(named, key=lambda item: item[:2])] or tools[:1]
    if choice.get("disable_parallel_tool_use"):
        chosen = chosen[:1]
    return chosen, forced


def _continue(prefill: str, reply: str) -> str:
    """Continue the assistant's prefill with the reply, without repeating the prefill."""
    if reply.startswith(prefill):
        return reply[len(prefill) :]
    return reply if prefill[-1] in "([{<\"'`" else " " + reply


def _plan(request: dict[str, Any], digest: bytes) -> list[dict[str, Any]]:
    messages = [m for m in request["messages"] if m["role"] != "system"]
    prefill = ""
    if messages and messages[-1]["role"] == "assistant":
        final = blocks_of(messages[-1])
        if final and final[-1]["type"] == "text":
            prefill = final[-1]["text"]
    turn = _last_user_turn(messages)
    user_text = _text_of(turn)
    results = [block for block in turn if block["type"] == "tool_result"]
    calls, forced = _tool_calls(request, user_text) if not results else ([], False)
    names = [tool["name"] for tool in calls]
    said = _quote(user_text)

    fmt = (request.get("output_config") or {}).get("format")
    if fmt and not calls:
        text = _json(example_value(fmt["schema"]))
    elif results:
        plural = "s" if len(results) > 1 else ""
        text = _pad(_sentence(f"Thanks! The tool{plural} returned: " + "; ".join(map(_result_text, results))))
    elif calls:
        text = "" if forced else f"I'll call {_names(names)}."
    else:
        text = _sentence(f"Hello! You said: {said}" if said else "Hello! You sent no text")
        system = request.get("system")
        system_text = system if isinstance(system, str) else _text_of(list(system or ()))
        if system_text.strip():
            text += " " + _sentence(f"I am following your system prompt: {_quote(system_text, 12)}")
        text = _pad(text)
    if prefill and text:
        text = _continue(prefill, text)

    plan: list[dict[str, Any]] = []
    thinking = request.get("thinking")
    if thinking and thinking["type"] != "disabled":
        intent = (
            "I should summarise the tool results."
            if results
            else f"I should call {_names(names)}."
            if calls
            else "I will answer in a friendly, deterministic way."
        )
        thought = _sentence(f"The user wrote: {said or '(no text)'}") + " " + intent
        plan.append({"type": "thinking", "thinking": thought, "signature": _signature(thought)})
        if thinking.get("display") == "omitted":
            plan[-1]["thinking"] = ""
            plan[-1]["tokens"] = count_tokens(thought)
    if text:
        plan.append({"type": "text", "text": text})
    for k, tool in enumerate(calls):
        tool_id = "toolu_01" + _b62(hashlib.blake2b(digest + k.to_bytes(4, "big"), digest_size=17).digest())
        plan.append(
            {
                "type": "tool_use",
                "id": tool_id,
                "name": tool["name"],
                "input": tool_input(tool["input_schema"]),
            }
        )
    return plan


def _find_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop) if stop else -1
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    return best


def build_message(request: dict[str, Any], digest: bytes, input_count: int) -> dict[str, Any]:
    """The non-streaming Message for a validated request."""
    max_tokens: int = request["max_tokens"]
    stops: list[str] = list(request.get("stop_sequences") or ())
    content: list[dict[str, Any]] = []
    used = 0
    thought = 0  # the thinking among `used`, reported as usage.output_tokens_details.thinking_tokens
    stop_reason: str | None = None
    stop_sequence: str | None = None
    for block in _plan(request, digest):
        room = max_tokens - used
        if room <= 0:
            stop_reason = "max_tokens"
            break
        kind = block["type"]
        if kind == "thinking":
            cost = block.pop("tokens", None) or count_tokens(block["thinking"])
            if cost > room:
                block["thinking"] = truncate_tokens(block["thinking"], room)
                cost, stop_reason = room, "max_tokens"
            content.append(block)
            thought += cost
        elif kind == "text":
            text = block["text"]
            found = _find_stop(text, stops)
            if found:
                text = text[: found[0]]
            cost = count_tokens(text)
            if cost > room:
                text, cost, stop_reason = truncate_tokens(text, room), room, "max_tokens"
            elif found:
                stop_reason, stop_sequence = "stop_sequence", found[1]
            if text:
                content.append({"type": "text", "text": text})
        else:
            cost = count_tokens(block["name"]) + count_tokens(_json(block["input"]))
            if cost > room:
                stop_reason = "max_tokens"
                break
            content.append(block)
        used += cost
        if stop_reason:
            break
    if stop_reason is None:
        stop_reason = "tool_use" if content and content[-1]["type"] == "tool_use" else "end_turn"
    usage: dict[str, Any] = {
        "input_tokens": input_count,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": max(used, 1) if max_tokens > 0 else 0,
        "service_tier": "standard",
    }
    if thought:
        usage["output_tokens_details"] = {"thinking_tokens": thought}
    return {
        "model": request["model"],
        "id": "msg_01" + _b62(digest),
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": None,
        "usage": usage,
    }


# --- the stream ------------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _pieces(text: str, group: int = 1) -> list[str]:
    words = _PIECE.findall(text) or [text]
    return ["".join(words[k : k + group]) for k in range(0, len(words), group)]


def _json_pieces(value: Any) -> list[str]:
    text = _json(value)
    cuts = [0, len(text) // 3, 2 * len(text) // 3, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if a < b]


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def stream_events(message: dict[str, Any], *, fail_with: dict[str, Any] | None = None) -> list[bytes]:
    """The SSE events for a Message, in the API's order; ``fail_with`` cuts the stream short with it."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The counts so far: message_delta brings the final ones, the thinking tokens among them.
        "usage": {
            **{key: value for key, value in usage.items() if key != "output_tokens_details"},
            "output_tokens": min(1, usage["output_tokens"]),
        },
    }
    events = [
        _sse("message_start", {"type": "message_start", "message": start}),
        _sse("ping", {"type": "ping"}),
    ]
    if fail_with is not None:
        text = next((b["text"] for b in message["content"] if b["type"] == "text"), _FILLER[0])
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
        events.extend(_delta(0, {"type": "text_delta", "text": piece}) for piece in _pieces(text)[:3])
        events.append(_sse("error", fail_with))
        return events
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"], 4) if p]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas.extend({"type": "input_json_delta", "partial_json": p} for p in _json_pieces(block["input"]))
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        events.extend(_delta(index, delta) for delta in deltas)
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                    "stop_details": None,
                },
                "usage": {
                    "input_tokens": usage["input_tokens"],
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": usage["output_tokens"],
                    **(
                        {"output_tokens_details": usage["output_tokens_details"]}
                        if "output_tokens_details" in usage
                        else {}
                    ),
                },
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events
