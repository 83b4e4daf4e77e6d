"""Generation parameters on the Claude side, as `params.Convert`s a dialect's table names:
the output token limit, stop sequences, temperature and top_p, service tier, the end user's id.

Sampling: API version 2026-10-21 refuses temperature/top_p/top_k on every model, so they are
validated (a bad value is still the client's error) but sent only when the model table lists
them for the model. Dropping them is a documented adaptation, reported (`ClaudeContext.drop`):
OpenAI clients send a temperature by default, and refusing would break nearly every one of them.
A value of 1, the default on both sides, asks for nothing and is not reported.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.models import ModelCaps
from proxy.translate.checks import invalid_type, invalid_value, number
from proxy.translate.params import OMIT, ClaudeContext

__all__ = [
    "SERVICE_TIERS",
    "default_max_tokens",
    "max_tokens",
    "service_tier",
    "stop_sequences",
    "temperature",
    "top_p",
    "user_id",
]


def max_tokens(value: Any, name: str, context: ClaudeContext) -> int:
    """The client's output token limit (target `max_tokens`), within the model's ceiling."""
    if isinstance(value, bool) or not isinstance(value, int):
        invalid_type(name, "an integer", value)
    if value < 1:
        invalid_value(name, f"{value} is too small; expected at least 1.")
    limit = context.caps.max_output_tokens
    if value > limit:
        invalid_value(name, f"{value} is too large: the model {context.model!r} produces at most {limit} tokens.")
    context.max_tokens_given = True
    return value


def default_max_tokens(caps: ModelCaps) -> int:
    """`max_tokens` when the client sets no limit (the Messages API requires one)."""
    return min(caps.default_max_tokens, caps.max_output_tokens)


def stop_sequences(value: Any, name: str, context: ClaudeContext) -> Any:
    """A string or an array of strings → `stop_sequences` (blank ones dropped)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        invalid_type(name, "a string or an array of strings", value)
    sequences: list[str] = []
    for k, item in enumerate(items):
        if not isinstance(item, str):
            invalid_type(f"{name}[{k}]", "a string", item)
        # Upstream refuses blank stop sequences; they could never match anything useful anyway.
        if item and not item.isspace():
            sequences.append(item)
        elif item:  # whitespace would stop OpenAI's answer at the first space; Claude's goes on
            context.drop(name if isinstance(value, str) else f"{name}[{k}]", "Claude refuses a blank stop sequence")
    return sequences or OMIT


def temperature(value: Any, name: str, context: ClaudeContext) -> Any:
    value = number(value, name, 0, 2)
    if "temperature" not in context.caps.sampling:
        return _no_sampling(value, name, context)
    # OpenAI's range is 0 to 2, Anthropic's 0 to 1: clamp rather than rescale, so 0.7 means 0.7.
    if value > 1:
        context.drop(name, f"{value!r} is above Claude's range of 0 to 1 and is sent as 1")
    return min(value, 1.0)


def top_p(value: Any, name: str, context: ClaudeContext) -> Any:
    value = number(value, name, 0, 1)
    return value if "top_p" in context.caps.sampling else _no_sampling(value, name, context)


def _no_sampling(value: float, name: str, context: ClaudeContext) -> Any:
    """A sampling field the model does not take (none does under API version 2026-10-21): dropped,
    and reported unless it is 1, the default it gets anyway."""
    if value != 1:
        context.drop(name, f"the model {context.model!r} does not take {name}, so it is ignored by this gateway")
    return OMIT


def user_id(value: Any, name: str, context: ClaudeContext) -> Any:
    """An end user's id (`safety_identifier`, `user`) → `metadata` with `user_id`."""
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    return {"user_id": value} if value else OMIT


# OpenAI service_tier → Messages API service_tier. Claude has no cheaper "flex" tier for live
# requests, so flex (and default) keep to standard capacity; scale, priority and fast may use
# priority capacity. priority and fast also ask for fast mode, which is what OpenAI means by them
# (its response reports "priority" for both), where the model table says the model has it.
SERVICE_TIERS: Final[dict[str, str]] = {
    "auto": "auto",
    "default": "standard_only",
    "flex": "standard_only",
    "scale": "auto",
    "priority": "auto",
    "fast": "auto",
}


def service_tier(value: Any, name: str, context: ClaudeContext) -> Any:
    """OpenAI's service tier → `service_tier` (and `speed: fast` where it asks and the model can)."""
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    tier = SERVICE_TIERS.get(value)
    if tier is None:
        invalid_value(
            name, f"{value!r}. Supported values are: 'auto', 'default', 'flex', 'scale', 'priority' and 'fast'."
        )
    if value in ("priority", "fast") and context.caps.fast:
        context.upstream["speed"] = "fast"
    if value == "flex":
        context.drop(name, "Claude has no flex processing; the request is served at standard capacity")
    return tier
