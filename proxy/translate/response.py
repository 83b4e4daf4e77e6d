"""A Messages API `Message` → an OpenAI `chat.completion` (design §3).

Pure functions over plain dicts, as parsed from the upstream JSON: no pydantic, no I/O.
`finish_reason` and `to_openai_usage` are shared with the stream translator so both paths
report the same values.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["completion_id", "finish_reason", "to_chat_completion", "to_openai_usage"]

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


def to_openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI `CompletionUsage` from Anthropic `Usage` (or a message_start usage merged with
    message_delta's cumulative counts).

    Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI's `prompt_tokens`
    includes them, with the reads reported again as `cached_tokens`.
    """
    cache_write = usage.get("cache_creation_input_tokens") or 0
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_write + cache_read
    completion = usage.get("output_tokens") or 0
    details = usage.get("output_tokens_details")
    reasoning = (details.get("thinking_tokens") or 0) if isinstance(details, dict) else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def to_chat_completion(message: dict[str, Any], *, created: int) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
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
        # redacted_thinking, server tool blocks and future types have no OpenAI equivalent.

    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)

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
        "usage": to_openai_usage(message.get("usage") or {}),
    }
