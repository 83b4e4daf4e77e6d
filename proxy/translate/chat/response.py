"""A Messages API `Message` → an OpenAI `chat.completion` (design §3).

Pure functions over plain dicts, as parsed from the upstream JSON: no pydantic, no I/O.
`finish_reason` and `to_openai_usage` are shared with the stream translator so both paths
report the same values. A `refusal` stop fills the message's `refusal` with Claude's explanation
(`stop_details`), in the very words the Responses API's refusal part gets (`refusal_text`).
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.translate.claude.refusals import refusal_text
from proxy.usage import Usage

__all__ = [
    "completion_id",
    "finish_reason",
    "merge_completions",
    "merge_usage",
    "thinking_block",
    "to_chat_completion",
    "to_openai_usage",
    "url_citation",
]

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI's `finish_reason` for an Anthropic `stop_reason`; a reason newer than this table → "stop"."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def completion_id(message_id: str) -> str:
    return "chatcmpl-" + message_id.removeprefix("msg_")


def to_openai_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI `CompletionUsage` from the gateway's `Usage`.

    Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI's `prompt_tokens`
    includes them, with the reads reported again as `cached_tokens`.
    """
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.output,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def merge_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of OpenAI usages (n > 1: every choice is its own upstream call), field by field."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, dict):
                total[key] = merge_usage([total.get(key) or {}, value])
            elif isinstance(value, int):
                total[key] = (total.get(key) or 0) + value
    return total


def merge_completions(completions: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat.completion from n, each from its own upstream call: the first one's id, created
    and model; choices indexed 0..n-1 in order; usage summed."""
    first = completions[0]
    choices = [{**completion["choices"][0], "index": k} for k, completion in enumerate(completions)]
    return {**first, "choices": choices, "usage": merge_usage([c["usage"] for c in completions])}


def thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking or redacted_thinking block as the client echoes it back in `thinking_blocks`."""
    if block["type"] == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block["data"]}
    return {"type": "thinking", "thinking": block.get("thinking", ""), "signature": block.get("signature", "")}


def url_citation(citation: dict[str, Any], start: int, end: int) -> dict[str, Any] | None:
    """OpenAI's `url_citation` annotation for a web search citation of the text at [start, end)."""
    if citation.get("type") != "web_search_result_location":
        return None  # document citations have no URL to point at
    found = {"start_index": start, "end_index": end, "title": citation.get("title") or "", "url": citation["url"]}
    return {"type": "url_citation", "url_citation": found}


def to_chat_completion(message: dict[str, Any], *, created: int, usage: Usage | None = None) -> dict[str, Any]:
    """The chat.completion for a Message. ``usage``: the message's, when the caller has read it
    already (the route does, to meter it), so that it is read once."""
    texts: list[str] = []
    thinking: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    offset = 0  # characters of content so far: where the next text block starts
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text = block["text"]
            texts.append(text)
            for citation in block.get("citations") or ():
                annotation = url_citation(citation, offset, offset + len(text))
                if annotation is not None:
                    annotations.append(annotation)
            offset += len(text)
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
            thinking_blocks.append(thinking_block(block))
        elif kind == "redacted_thinking":
            thinking_blocks.append(thinking_block(block))
        # Server tool blocks (web search …) and future types have no OpenAI equivalent.

    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": refusal_text(message.get("stop_details")) if message.get("stop_reason") == "refusal" else None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if thinking_blocks:
        # Echoed back on the assistant message, these let Claude resume its signed reasoning after
        # a tool call (messages.py turns them back into blocks). LiteLLM's field name and shape.
        reply["thinking_blocks"] = thinking_blocks
    if annotations:
        reply["annotations"] = annotations

    return {
        "id": completion_id(message["id"]),
        "object": "chat.completion",
        "created": created,
        "model": message["model"],
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                # Never null in a non-streaming Message; "stop" keeps the shape valid if it were.
                "finish_reason": finish_reason(message.get("stop_reason")) or "stop",
            }
        ],
        "usage": to_openai_usage(usage if usage is not None else Usage.from_anthropic(message.get("usage"))),
    }
