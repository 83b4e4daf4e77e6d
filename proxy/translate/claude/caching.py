"""Prompt caching on the Claude side: the client's retention options and the breakpoints.

`prompt_cache_retention` and `prompt_cache_options` are `params.Convert`s (both OpenAI APIs name
them so); `place_cache_breakpoints` runs once the whole upstream body is built.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.translate.checks import invalid_type, invalid_value
from proxy.translate.claude.blocks import THINKING_TYPES
from proxy.translate.params import OMIT, ClaudeContext

__all__ = ["MAX_BREAKPOINTS", "place_cache_breakpoints", "prompt_cache_options", "prompt_cache_retention"]

MAX_BREAKPOINTS: Final = 4


def prompt_cache_retention(value: Any, name: str, context: ClaudeContext) -> Any:
    if value not in ("in_memory", "24h"):
        if not isinstance(value, str):
            invalid_type(name, "a string", value)
        invalid_value(name, f"{value!r}. Supported values are: 'in_memory' and '24h'.")
    # Claude's longest cache lifetime is 1 hour; "in_memory" is its default of 5 minutes.
    if value == "24h":
        context.cache_ttl = "1h"
        context.drop(name, "'24h' is sent as Claude's longest cache lifetime, 1 hour")
    return OMIT


def prompt_cache_options(value: Any, name: str, context: ClaudeContext) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    mode = value.get("mode")
    if mode is not None:
        if mode not in ("implicit", "explicit"):
            invalid_value(f"{name}.mode", f"{mode!r}. Supported values are: 'implicit' and 'explicit'.")
        context.cache_implicit = mode == "implicit"
    ttl = value.get("ttl")
    if ttl is not None:
        if ttl != "30m":
            invalid_value(f"{name}.ttl", f"{ttl!r}; the only supported value is '30m'.")
        context.cache_ttl = "1h"  # a minimum lifetime of 30 minutes needs Claude's 1-hour cache
    return OMIT


def place_cache_breakpoints(context: ClaudeContext, *, auto: bool) -> None:
    """Mark the prompt cache breakpoints: the client's own (`cache_control` on blocks, from
    `blocks.cached`), and with `auto` the gateway's.

    The gateway's are the top-level `cache_control`, which the API applies to the last cacheable
    block and so moves forward with the conversation (each turn reads what the previous one wrote,
    looking back up to 20 blocks), plus one on the end of the stable prefix (the last system block,
    else the last tool) so that a turn adding more than 20 blocks, or another conversation with the
    same instructions, still finds it. Anthropic allows four breakpoints; as in OpenAI's caching,
    the latest explicit ones are kept (three beside the automatic one). Prompts shorter than the
    model's minimum cacheable length are simply not cached; the API does not refuse them.
    """
    upstream = context.upstream
    marked = [
        block
        for part in (upstream.get("tools", []), upstream.get("system", []), *_message_blocks(upstream["messages"]))
        for block in part
        if "cache_control" in block
    ]
    if not marked and not auto:
        return
    keep = MAX_BREAKPOINTS - 1 if auto else MAX_BREAKPOINTS
    for block in marked[:-keep]:
        del block["cache_control"]
    marked = marked[-keep:]
    if auto:
        prefix = upstream.get("system") or upstream.get("tools")
        if not marked and prefix:
            prefix[-1]["cache_control"] = {"type": "ephemeral"}
            marked.append(prefix[-1])
        upstream["cache_control"] = {"type": "ephemeral"}
    # One lifetime for every breakpoint: the API wants longer-lived entries before shorter ones.
    ttl = context.cache_ttl or next((b["cache_control"]["ttl"] for b in marked if "ttl" in b["cache_control"]), None)
    if ttl is not None:
        for block in marked:
            block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
        if auto:
            upstream["cache_control"] = {"type": "ephemeral", "ttl": ttl}


def _message_blocks(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each message's blocks, with a tool result's nested blocks where they sit in the prompt."""
    parts: list[list[dict[str, Any]]] = []
    for message in messages:
        blocks: list[dict[str, Any]] = []
        for block in message["content"]:
            nested = block.get("content") if block["type"] == "tool_result" else None
            if isinstance(nested, list):
                blocks.extend(nested)
            if block["type"] not in THINKING_TYPES:  # thinking blocks take no cache_control
                blocks.append(block)
        parts.append(blocks)
    return parts
