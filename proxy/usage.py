"""The gateway's one internal currency for tokens: a typed `Usage`.

It is built from Anthropic's usage object once (`Usage.from_anthropic`, the only reader of that
shape), added up across the n upstream calls of one request, and rendered into each dialect's
shape by that dialect (chat: `proxy.translate.chat.response.to_openai_usage`; native relays
Anthropic's own object unchanged). The ledger, the limits, the metrics and the access line take
a `Usage`, never a dict.

Counts have Anthropic's meaning: `input` excludes the cache reads and writes, which are counted
apart (`cache_read`, `cache_write`); `prompt` is the whole prompt (OpenAI's `prompt_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.errors import UpstreamError

__all__ = ["Usage", "checked_usage", "malformed"]

# Anthropic's token counts that the gateway adds up, meters and bills, by field name.
_COUNTS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_write", "cache_creation_input_tokens"),
    ("cache_read", "cache_read_input_tokens"),
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one request (or one upstream call) used."""

    input: int = 0  # uncached prompt tokens: cache reads and writes excluded
    output: int = 0  # reasoning included
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0  # the thinking tokens among `output`

    @classmethod
    def from_anthropic(cls, usage: Any) -> Usage:
        """From an Anthropic `Usage` object (or a message_start usage overlaid with message_delta's
        cumulative counts). Each count absent, null or a non-negative integer (absent or null: 0);
        null or absent usage is an empty one. Anything else raises `UpstreamError` naming the field."""
        if usage is None:
            return cls()
        if not isinstance(usage, dict):
            raise malformed("usage", usage)
        counts: dict[str, int] = {}
        for field, name in _COUNTS:
            value = usage.get(name)
            if not _countable(value):
                raise malformed(f"usage.{name}", value)
            counts[field] = value or 0
        # `output_tokens_details.thinking_tokens`: the thinking among the output tokens (the final
        # count arrives with message_delta's usage when streaming, which replaces message_start's).
        details = usage.get("output_tokens_details")
        if details is not None and not isinstance(details, dict):
            raise malformed("usage.output_tokens_details", details)
        reasoning = details.get("thinking_tokens") if details is not None else None
        if not _countable(reasoning):
            raise malformed("usage.output_tokens_details.thinking_tokens", reasoning)
        return cls(**counts, reasoning=reasoning or 0)

    def __add__(self, other: Usage) -> Usage:
        """Field by field (n > 1: every choice is its own upstream call)."""
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
            reasoning=self.reasoning + other.reasoning,
        )

    @property
    def prompt(self) -> int:
        """The whole prompt: input, cache reads and cache writes."""
        return self.input + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        """Prompt and output: what limits and budgets count."""
        return self.prompt + self.output


def _countable(value: Any) -> bool:
    # `type(...) is int` also refuses True and False, which isinstance would take for 1 and 0.
    return value is None or (type(value) is int and value >= 0)


def malformed(name: str, value: Any) -> UpstreamError:
    """The error for upstream data of the wrong shape: names the field, shows a short value."""
    shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
    return UpstreamError(f"The upstream API sent malformed data: {name} is {shown}.")


def checked_usage(usage: Any) -> dict[str, Any]:
    """An Anthropic usage object whose counts can be added up (`Usage.from_anthropic` accepts it):
    each count absent, null or a non-negative integer. Null or absent usage is an empty one.
    Anything else raises `UpstreamError` naming the field. The one rule for every route that
    relays or meters upstream usage (the chat stream translator, the native passthrough)."""
    Usage.from_anthropic(usage)
    return {} if usage is None else usage
