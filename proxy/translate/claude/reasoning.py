"""An OpenAI reasoning effort → Claude's thinking and effort, under the model's capabilities.

`apply_reasoning_effort` is a `params.Convert` (it returns `OMIT` and fills `thinking`,
`output_config.effort` and perhaps `max_tokens` itself): chat's `reasoning_effort` and the
Responses API's `reasoning.effort` are the same values. It must run after the output token limit
and the tool choice, which it checks (and may raise the gateway's default max_tokens).

Which thinking: adaptive where the model has it (never a manual budget then: Opus 4.7 and later,
Sonnet 5 and the 5.x Fable and Mythos refuse `budget_tokens`), else a manual budget where the model
takes one (`enabled`), else effort alone. Which effort: the asked level if the model accepts it,
else the nearest below (`accepted_efforts`: with thinking off, only `effort_without_thinking`).
An effort other than the one asked, and thinking where `none` asked for none, are adaptations,
recorded with `ClaudeContext.drop` (a 400 under strict_fields).
"""

from __future__ import annotations

from typing import Any, Final

from proxy.models import EFFORT_LEVELS, EffortLevel, ModelCaps
from proxy.translate.checks import invalid_type, invalid_value, unsupported_value
from proxy.translate.claude.tools import FORCED_CHOICES
from proxy.translate.claude.turns import ends_in_prefill
from proxy.translate.params import OMIT, ClaudeContext

__all__ = ["EFFORTS", "accepted_efforts", "apply_reasoning_effort", "thinking_off"]

# OpenAI's reasoning effort (openai.types.shared.ReasoningEffort) → Claude's effort level.
# "minimal" has no level of its own; "none" turns thinking off where the model allows it.
EFFORTS: Final[dict[str, EffortLevel]] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}
# Manual thinking budgets (`thinking.type: enabled`) for models without adaptive thinking. Claude
# requires at least 1024 and less than max_tokens; `_fit_budget` keeps them so.
_BUDGET: Final[dict[str, int]] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}
_MIN_BUDGET: Final = 1024
_THINKING_OFF: Final = frozenset({"disabled", "between_tools"})  # no thinking before the answer


def apply_reasoning_effort(
    value: Any, name: str, context: ClaudeContext, *, max_tokens_param: str = "max_completion_tokens"
) -> Any:
    """Thinking and effort for the reasoning effort `value` of parameter `name`; `OMIT`.
    `max_tokens_param` names the client's output token limit in errors about it."""
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    if value != "none" and value not in EFFORTS:
        invalid_value(
            name, f"{value!r}. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'."
        )
    caps = context.caps
    upstream = context.upstream
    if value == "none":
        _no_reasoning(name, context)
        return OMIT
    if "adaptive" in caps.thinking:
        if not caps.thinking_always_on:
            upstream["thinking"] = {"type": "adaptive"}
    elif "enabled" in caps.thinking:
        budget = _fit_budget(_BUDGET[value], name, context, max_tokens_param)
        upstream["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif not caps.effort:
        unsupported_value(name, f"the model {context.model!r} does not support reasoning.")
    if caps.effort:
        _set_effort(EFFORTS[value], name, context)
    if upstream.get("thinking", {}).get("type") in ("adaptive", "enabled"):
        if upstream.get("tool_choice", {}).get("type") in FORCED_CHOICES:
            unsupported_value(
                name, f"Claude cannot think while tool use is forced; use tool_choice 'auto' or drop {name}."
            )
        if ends_in_prefill(upstream):
            unsupported_value(
                name,
                "Claude cannot think while continuing a prefilled assistant message; "
                f"remove the trailing assistant message or {name}.",
            )
    return OMIT


def _no_reasoning(name: str, context: ClaudeContext) -> None:
    """`none`: thinking off where the model allows it; else (thinking that cannot be turned off)
    the least effort the model accepts, an adaptation; else (a model without reasoning) nothing."""
    caps = context.caps
    if "disabled" in caps.thinking:
        context.upstream["thinking"] = {"type": "disabled"}
    elif "between_tools" in caps.thinking:
        context.upstream["thinking"] = {"type": "between_tools"}  # no thinking before the answer
    elif caps.effort:
        lowest = min(caps.effort, key=EFFORT_LEVELS.index)
        context.drop(name, f"the model {context.model!r} always thinks, so it is sent its lowest effort, {lowest!r}")
        context.upstream.setdefault("output_config", {})["effort"] = lowest


def thinking_off(upstream: dict[str, Any], caps: ModelCaps) -> bool:
    """Whether the request as built runs without thinking: thinking disabled (or only between
    tools), or no `thinking` sent to a model that can neither think adaptively nor take a budget."""
    thinking = upstream.get("thinking")
    if isinstance(thinking, dict):
        return thinking.get("type") in _THINKING_OFF
    return not caps.thinking & {"adaptive", "enabled"}


def accepted_efforts(caps: ModelCaps, *, without_thinking: bool) -> frozenset[EffortLevel]:
    """The effort levels the model accepts, with thinking on or off (Opus 5 takes only up to
    `high` with thinking disabled: `ModelCaps.effort_without_thinking`)."""
    if without_thinking and caps.effort_without_thinking is not None:
        return caps.effort & caps.effort_without_thinking
    return caps.effort


def _set_effort(level: EffortLevel, name: str, context: ClaudeContext) -> None:
    """`output_config.effort` for the asked `level`: the nearest level the model accepts as the
    request stands; an other level than asked is recorded as an adaptation."""
    accepted = accepted_efforts(context.caps, without_thinking=thinking_off(context.upstream, context.caps))
    if not accepted:  # effort only with thinking, and thinking is off: leave it to the model's default
        context.drop(name, f"the model {context.model!r} takes no effort level without thinking")
        return
    sent = _nearest_effort(level, accepted)
    if sent != level:
        context.drop(name, f"the model {context.model!r} has no effort {level!r}, so it is sent {sent!r}")
    context.upstream.setdefault("output_config", {})["effort"] = sent


def _nearest_effort(level: EffortLevel, accepted: frozenset[EffortLevel]) -> EffortLevel:
    """`level` if the model accepts it, else the highest accepted level below it (never more effort
    than asked), else the lowest accepted one."""
    rank = EFFORT_LEVELS.index(level)
    below = [other for other in accepted if EFFORT_LEVELS.index(other) <= rank]
    if below:
        return max(below, key=EFFORT_LEVELS.index)
    return min(accepted, key=EFFORT_LEVELS.index)


def _fit_budget(budget: int, name: str, context: ClaudeContext, max_tokens_param: str) -> int:
    """A thinking budget the API accepts (at least 1024, less than max_tokens). OpenAI counts
    reasoning inside its output token limit as Claude counts thinking inside max_tokens, so a limit
    the client set is kept and the budget shrinks to fit it; the gateway's own default grows to
    leave the usual room for the answer, within the model's ceiling."""
    upstream = context.upstream
    max_tokens: int = upstream["max_tokens"]
    if context.max_tokens_given:
        if max_tokens <= _MIN_BUDGET:
            invalid_value(
                name,
                f"thinking needs more than {_MIN_BUDGET} tokens, but {max_tokens_param} is {max_tokens}; "
                f"raise it or drop {name}.",
            )
        return min(budget, max_tokens - 1)
    caps = context.caps
    if caps.max_output_tokens <= _MIN_BUDGET:
        unsupported_value(name, f"the model {context.model!r} cannot produce enough tokens to think.")
    max_tokens = min(caps.max_output_tokens, max(max_tokens, budget + caps.default_max_tokens))
    upstream["max_tokens"] = max_tokens
    return min(budget, max(_MIN_BUDGET, max_tokens - caps.default_max_tokens), max_tokens - 1)
