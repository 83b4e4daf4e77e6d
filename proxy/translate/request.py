"""An OpenAI chat completion request → a Messages API request (design §2).

`model` and `messages` are the core of the request and are converted first (messages in
`messages.py`). Every other top-level parameter is one entry of `PARAMS`, run in table order by
the loop in `to_messages_request`: the entry names the upstream field it fills (`target`), the
function that checks and converts the client's value (`convert`, which may return `OMIT`), the
parameter that wins when both are sent (`yields_to`) and the value used when it is absent
(`default`). Adding an OpenAI field is one entry here plus one fixture in tests/fixtures/request/.

JSON null means "not given", as in the OpenAI API. Fields not in the table are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from proxy.errors import InvalidRequest
from proxy.models import EFFORT_LEVELS, EffortLevel, ModelCaps, ModelTable
from proxy.translate.messages import (
    DEFAULT_MAX_CONTENT_BLOCKS,
    DEFAULT_MAX_MESSAGES,
    THINKING_TYPES,
    check_length,
    convert_messages,
    invalid_type,
    invalid_value,
    missing,
    requested_model,
    unsupported_value,
)

__all__ = ["DEFAULT_MAX_TOOLS", "OMIT", "PARAMS", "Param", "TranslatedRequest", "to_messages_request"]

OMIT: Final = object()
"""Returned by a converter when the parameter adds nothing to the upstream body."""

# Tool definitions a request may carry. Real clients send tens, agents with many MCP servers a few
# hundred, and Anthropic documents catalogues of thousands (for its tool search): 10,000 leaves room.
DEFAULT_MAX_TOOLS: Final = 10_000


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    upstream: dict[str, Any]  # the Messages API body; contains "stream": True iff the client streams
    model: str  # resolved upstream model id
    requested_model: str  # the model string as the client sent it
    stream: bool
    include_usage: bool  # stream_options.include_usage
    n: int = 1  # choices asked for: the caller makes this many upstream calls and merges them


@dataclass(slots=True)
class Context:
    """What converters may consult: the model's capabilities and the upstream body built so far,
    and what a converter learns for the caller or for the steps after the table."""

    model: str
    caps: ModelCaps
    upstream: dict[str, Any]
    max_n: int = 8
    max_tools: int = DEFAULT_MAX_TOOLS
    include_usage: bool = False
    n: int = 1
    max_tokens_given: bool = False  # the client named max_tokens / max_completion_tokens
    cache_ttl: str | None = None  # "1h" when the client asked for a longer-lived prompt cache
    cache_implicit: bool = True  # prompt_cache_options.mode is not "explicit"


Convert = Callable[[Any, str, Context], Any]


@dataclass(frozen=True, slots=True)
class Param:
    """How one OpenAI parameter reaches the upstream body. `Param()` alone: accepted and dropped."""

    target: str | None = None  # the upstream field it fills, if any
    convert: Convert | None = None  # checks the client's value, returns the upstream one or OMIT
    yields_to: str | None = None  # an OpenAI parameter that wins over this one when both are sent
    default: Callable[[ModelCaps], Any] | None = None  # fills `target` when the parameter is absent


def to_messages_request(
    body: Any,
    table: ModelTable,
    *,
    max_n: int = 8,
    auto_cache: bool = False,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_content_blocks: int = DEFAULT_MAX_CONTENT_BLOCKS,
    max_tools: int = DEFAULT_MAX_TOOLS,
) -> TranslatedRequest:
    """The Messages API request for an OpenAI chat request.

    `max_n` bounds `n` (the caller makes n upstream calls); `auto_cache` marks the stable prefix
    for Anthropic's prompt cache on every request (see `_place_cache_breakpoints`). The other
    `max_` limits bound what a request may hold: messages, content parts (with tool calls and
    thinking blocks) in all of them, and tool definitions. The work done is linear in the body.
    """
    requested = requested_model(body)
    model = table.resolve(requested)
    caps = table.capabilities(model)
    system, messages = convert_messages(
        body.get("messages"),
        model=model,
        prefill=caps.prefill,
        max_messages=max_messages,
        max_content_blocks=max_content_blocks,
    )

    upstream: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        upstream["system"] = system
    context = Context(model=model, caps=caps, upstream=upstream, max_n=max_n, max_tools=max_tools)
    for name, param in PARAMS.items():
        value = body.get(name)
        if value is None:
            if param.default is not None and param.target is not None and param.target not in upstream:
                upstream[param.target] = param.default(caps)
            continue
        if param.yields_to is not None and body.get(param.yields_to) is not None:
            continue
        result = value if param.convert is None else param.convert(value, name, context)
        if param.target is not None and result is not OMIT:
            upstream[param.target] = result
    _place_cache_breakpoints(context, auto=auto_cache and context.cache_implicit)

    return TranslatedRequest(
        upstream=upstream,
        model=model,
        requested_model=requested,
        stream=upstream.get("stream") is True,
        include_usage=context.include_usage,
        n=context.n,
    )


# Converters ----------------------------------------------------------------------------------


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        invalid_type(name, "a number", value)
    if not low <= value <= high:
        invalid_value(name, f"{value!r} is out of range; expected a number from {low:g} to {high:g}.")
    return value


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        invalid_type(name, "a boolean", value)
    return value


def _max_tokens(value: Any, name: str, context: Context) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        invalid_type(name, "an integer", value)
    if value < 1:
        invalid_value(name, f"{value} is too small; expected at least 1.")
    limit = context.caps.max_output_tokens
    if value > limit:
        invalid_value(name, f"{value} is too large: the model {context.model!r} produces at most {limit} tokens.")
    context.max_tokens_given = True
    return value


def _default_max_tokens(caps: ModelCaps) -> int:
    return min(caps.default_max_tokens, caps.max_output_tokens)


def _stop(value: Any, name: str, context: Context) -> Any:
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
    return sequences or OMIT


# Sampling: API version 2026-10-21 refuses temperature/top_p/top_k on every model, so they are
# validated (a bad value is still the client's error) but sent only when the model table lists
# them for the model. Dropping them silently is a documented adaptation: OpenAI clients send a
# temperature by default, and refusing would break nearly every one of them.


def _temperature(value: Any, name: str, context: Context) -> Any:
    temperature = _number(value, name, 0, 2)
    if "temperature" not in context.caps.sampling:
        return OMIT
    # OpenAI's range is 0 to 2, Anthropic's 0 to 1: clamp rather than rescale, so 0.7 means 0.7.
    return min(temperature, 1.0)


def _top_p(value: Any, name: str, context: Context) -> Any:
    top_p = _number(value, name, 0, 1)
    return top_p if "top_p" in context.caps.sampling else OMIT


def _user_id(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    return {"user_id": value} if value else OMIT


def _stream(value: Any, name: str, context: Context) -> Any:
    return True if _boolean(value, name) else OMIT


def _stream_options(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    include_usage = value.get("include_usage")
    if include_usage is not None:
        context.include_usage = _boolean(include_usage, f"{name}.include_usage")
    return OMIT


def _tools(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, list):
        invalid_type(name, "an array", value)
    check_length(name, len(value), context.max_tools, "max_tools")
    tools = []
    for k, tool in enumerate(value):
        path = f"{name}[{k}]"
        if not isinstance(tool, dict):
            invalid_type(path, "an object", tool)
        kind = tool.get("type")
        if kind is None:
            missing(f"{path}.type")
        if kind != "function":
            if not isinstance(kind, str):
                invalid_type(f"{path}.type", "a string", kind)
            unsupported_value(f"{path}.type", f"{kind!r} tools are not supported; only 'function'.")
        tools.append(_function_tool(tool.get("function"), f"{path}.function"))
    return tools or OMIT


def _functions(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, list):
        invalid_type(name, "an array", value)
    check_length(name, len(value), context.max_tools, "max_tools")
    return [_function_tool(function, f"{name}[{k}]") for k, function in enumerate(value)] or OMIT


def _function_tool(function: Any, path: str) -> dict[str, Any]:
    if function is None:
        missing(path)
    if not isinstance(function, dict):
        invalid_type(path, "an object", function)
    name = function.get("name")
    if name is None:
        missing(f"{path}.name")
    if not isinstance(name, str):
        invalid_type(f"{path}.name", "a string", name)
    if not name:
        invalid_value(f"{path}.name", "expected a non-empty string.")
    tool: dict[str, Any] = {"name": name}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            invalid_type(f"{path}.description", "a string", description)
        if description:
            tool["description"] = description
    parameters = function.get("parameters")
    if parameters is None or parameters == {}:
        # OpenAI: "omitting parameters defines a function with an empty parameter list".
        tool["input_schema"] = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        invalid_type(f"{path}.parameters", "an object (a JSON Schema)", parameters)
    elif "type" not in parameters:
        # Upstream requires the root schema's type; an object schema is the only one a tool can have.
        tool["input_schema"] = {"type": "object", **parameters}
    else:
        tool["input_schema"] = parameters
    strict = function.get("strict")
    if strict is not None:
        tool["strict"] = _boolean(strict, f"{path}.strict")
    return tool


_TOOL_CHOICE_MODES: Final = {"auto": "auto", "none": "none", "required": "any"}


def _tool_choice(value: Any, name: str, context: Context) -> Any:
    if isinstance(value, str):
        mode = _TOOL_CHOICE_MODES.get(value)
        if mode is None:
            invalid_value(name, f"{value!r}. Supported values are: 'none', 'auto' and 'required'.")
        return _choose({"type": mode}, name, context)
    if not isinstance(value, dict):
        invalid_type(name, "a string or an object", value)
    kind = value.get("type")
    if kind == "function":
        return _named_choice(value.get("function"), f"{name}.function", name, context)
    if kind is None:
        missing(f"{name}.type")
    if not isinstance(kind, str):
        invalid_type(f"{name}.type", "a string", kind)
    # allowed_tools and custom tool choices have no Messages API equivalent.
    unsupported_value(f"{name}.type", f"{kind!r} is not supported; use 'function' or a string mode.")


def _function_call(value: Any, name: str, context: Context) -> Any:
    if isinstance(value, str):
        if value not in ("auto", "none"):
            invalid_value(name, f"{value!r}. Supported values are: 'none' and 'auto'.")
        return _choose({"type": value}, name, context)
    return _named_choice(value, name, name, context)


def _named_choice(function: Any, path: str, name: str, context: Context) -> Any:
    if not isinstance(function, dict):
        if function is None:
            missing(path)
        invalid_type(path, "an object", function)
    tool_name = function.get("name")
    if tool_name is None:
        missing(f"{path}.name")
    if not isinstance(tool_name, str):
        invalid_type(f"{path}.name", "a string", tool_name)
    choice = _choose({"type": "tool", "name": tool_name}, name, context)
    if all(tool["name"] != tool_name for tool in context.upstream["tools"]):
        invalid_value(f"{path}.name", f"no tool named {tool_name!r} is defined.")
    return choice


def _choose(choice: dict[str, Any], name: str, context: Context) -> Any:
    if "tools" in context.upstream:
        return choice
    if choice["type"] == "none":
        return OMIT  # without tools the model cannot call one anyway
    invalid_value(name, f"'{name}' is only allowed when tools are specified.")


def _parallel_tool_calls(value: Any, name: str, context: Context) -> Any:
    if _boolean(value, name) or "tools" not in context.upstream:
        return OMIT
    choice = context.upstream.get("tool_choice", {"type": "auto"})
    if choice["type"] == "none":
        return OMIT
    return {**choice, "disable_parallel_tool_use": True}


def _n(value: Any, name: str, context: Context) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        invalid_type(name, "an integer", value)
    if value < 1:
        invalid_value(name, f"{value} is too small; expected at least 1.")
    if value > context.max_n:
        invalid_value(name, f"{value} is too large: this gateway generates at most {context.max_n} choices a request.")
    context.n = value
    return OMIT


# Structured outputs ----------------------------------------------------------------------------

# JSON mode has no constrained-decoding equivalent: Claude's JSON outputs take a schema whose
# objects are closed (`additionalProperties: false`), so "any object" cannot be expressed. An
# instruction gets valid JSON in practice; it is not a guarantee, and the README says so.
JSON_OBJECT_INSTRUCTION: Final = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it and no code fences."
)


def _response_format(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    kind = value.get("type")
    if kind is None:
        missing(f"{name}.type")
    if kind == "text":
        return OMIT
    if kind == "json_object":
        context.upstream.setdefault("system", []).append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
        return OMIT
    if kind != "json_schema":
        if not isinstance(kind, str):
            invalid_type(f"{name}.type", "a string", kind)
        invalid_value(f"{name}.type", f"{kind!r}. Supported values are: 'text', 'json_object' and 'json_schema'.")
    if not context.caps.structured_outputs:
        unsupported_value(f"{name}.type", f"the model {context.model!r} does not support structured outputs.")
    path = f"{name}.json_schema"
    spec = value.get("json_schema")
    if spec is None:
        missing(path)
    if not isinstance(spec, dict):
        invalid_type(path, "an object", spec)
    schema = spec.get("schema")
    if schema is None:
        missing(f"{path}.schema")
    if not isinstance(schema, dict):
        invalid_type(f"{path}.schema", "an object (a JSON Schema)", schema)
    strict = spec.get("strict")
    if strict is not None:
        _boolean(strict, f"{path}.strict")  # Claude's JSON outputs are always strict
    if _ends_in_prefill(context.upstream):
        unsupported_value(name, "structured outputs cannot continue a prefilled assistant message.")
    # `name` and `description` have no Messages API equivalent and are dropped.
    output_format = {"type": "json_schema", "schema": _close_objects(schema, f"{path}.schema")}
    context.upstream.setdefault("output_config", {})["format"] = output_format
    return OMIT


_SUBSCHEMA_MAPS: Final = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS: Final = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE: Final = ("items", "not", "additionalProperties", "contains")


# Deeper schemas than this are refused rather than walked: JSON reads nest far deeper than any
# real schema, and the walk below is recursive.
MAX_SCHEMA_DEPTH: Final = 64


def _close_objects(schema: Any, name: str, depth: int = 0) -> Any:
    """A copy of `schema` in which every object schema that leaves `additionalProperties` unset
    sets it to false, as Claude's JSON outputs require (and OpenAI's strict mode already does)."""
    if not isinstance(schema, dict):
        return schema
    if depth > MAX_SCHEMA_DEPTH:
        invalid_value(name, f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels.")
    closed = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(closed.get(key), dict):
            closed[key] = {k: _close_objects(v, name, depth + 1) for k, v in closed[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(closed.get(key), list):
            closed[key] = [_close_objects(v, name, depth + 1) for v in closed[key]]
    for key in _SUBSCHEMA_ONE:
        if isinstance(closed.get(key), dict):
            closed[key] = _close_objects(closed[key], name, depth + 1)
    kind = closed.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if is_object and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _ends_in_prefill(upstream: dict[str, Any]) -> bool:
    last = upstream["messages"][-1]
    return last["role"] == "assistant" and all(block["type"] != "tool_use" for block in last["content"])


# Reasoning ---------------------------------------------------------------------------------

# OpenAI's reasoning_effort (openai.types.shared.ReasoningEffort) → Claude's effort level.
# "minimal" has no level of its own; "none" turns thinking off where the model allows it.
_EFFORT: Final[dict[str, EffortLevel]] = {
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
_FORCED_CHOICES: Final = frozenset({"any", "tool"})


def _reasoning_effort(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    if value != "none" and value not in _EFFORT:
        invalid_value(
            name, f"{value!r}. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'."
        )
    caps = context.caps
    upstream = context.upstream
    if value == "none":
        if "disabled" in caps.thinking:
            upstream["thinking"] = {"type": "disabled"}
        elif "between_tools" in caps.thinking:
            upstream["thinking"] = {"type": "between_tools"}  # no thinking before the answer
        elif caps.effort:
            # Thinking that cannot be turned off: the least of it the model allows.
            upstream.setdefault("output_config", {})["effort"] = min(caps.effort, key=EFFORT_LEVELS.index)
        return OMIT
    if "adaptive" in caps.thinking:
        if not caps.thinking_always_on:
            upstream["thinking"] = {"type": "adaptive"}
    elif "enabled" in caps.thinking:
        budget = _fit_budget(_BUDGET[value], name, context)
        upstream["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif not caps.effort:
        unsupported_value(name, f"the model {context.model!r} does not support reasoning.")
    if caps.effort:
        upstream.setdefault("output_config", {})["effort"] = _nearest_effort(_EFFORT[value], caps.effort)
    if upstream.get("thinking", {}).get("type") in ("adaptive", "enabled"):
        if upstream.get("tool_choice", {}).get("type") in _FORCED_CHOICES:
            unsupported_value(
                name, "Claude cannot think while tool use is forced; use tool_choice 'auto' or drop reasoning_effort."
            )
        if _ends_in_prefill(upstream):
            unsupported_value(
                name,
                "Claude cannot think while continuing a prefilled assistant message; "
                "remove the trailing assistant message or reasoning_effort.",
            )
    return OMIT


def _nearest_effort(level: EffortLevel, accepted: frozenset[EffortLevel]) -> EffortLevel:
    """`level` if the model accepts it, else the highest accepted level below it (never more effort
    than asked), else the lowest accepted one."""
    rank = EFFORT_LEVELS.index(level)
    below = [other for other in accepted if EFFORT_LEVELS.index(other) <= rank]
    if below:
        return max(below, key=EFFORT_LEVELS.index)
    return min(accepted, key=EFFORT_LEVELS.index)


def _fit_budget(budget: int, name: str, context: Context) -> int:
    """A thinking budget the API accepts (at least 1024, less than max_tokens). OpenAI counts
    reasoning inside max_completion_tokens as Claude counts thinking inside max_tokens, so a limit
    the client set is kept and the budget shrinks to fit it; the gateway's own default grows to
    leave the usual room for the answer, within the model's ceiling."""
    upstream = context.upstream
    max_tokens: int = upstream["max_tokens"]
    if context.max_tokens_given:
        if max_tokens <= _MIN_BUDGET:
            invalid_value(
                name,
                f"thinking needs more than {_MIN_BUDGET} tokens, but max_completion_tokens is {max_tokens}; "
                "raise it or drop reasoning_effort.",
            )
        return min(budget, max_tokens - 1)
    caps = context.caps
    if caps.max_output_tokens <= _MIN_BUDGET:
        unsupported_value(name, f"the model {context.model!r} cannot produce enough tokens to think.")
    max_tokens = min(caps.max_output_tokens, max(max_tokens, budget + caps.default_max_tokens))
    upstream["max_tokens"] = max_tokens
    return min(budget, max(_MIN_BUDGET, max_tokens - caps.default_max_tokens), max_tokens - 1)


# Service tier and speed ---------------------------------------------------------------------

# OpenAI service_tier → Messages API service_tier. Claude has no cheaper "flex" tier for live
# requests, so flex (and default) keep to standard capacity; scale, priority and fast may use
# priority capacity. priority and fast also ask for fast mode, which is what OpenAI means by them
# (its response reports "priority" for both), where the model table says the model has it.
_SERVICE_TIERS: Final[dict[str, str]] = {
    "auto": "auto",
    "default": "standard_only",
    "flex": "standard_only",
    "scale": "auto",
    "priority": "auto",
    "fast": "auto",
}


def _service_tier(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    tier = _SERVICE_TIERS.get(value)
    if tier is None:
        invalid_value(
            name, f"{value!r}. Supported values are: 'auto', 'default', 'flex', 'scale', 'priority' and 'fast'."
        )
    if value in ("priority", "fast") and context.caps.fast:
        context.upstream["speed"] = "fast"
    return tier


# Web search -----------------------------------------------------------------------------------

_LOCATION_FIELDS: Final = ("city", "region", "country", "timezone")


def _web_search_options(value: Any, name: str, context: Context) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    size = value.get("search_context_size")
    if size is not None and size not in ("low", "medium", "high"):
        invalid_value(f"{name}.search_context_size", f"{size!r}. Supported values are: 'low', 'medium' and 'high'.")
    tool_type = context.caps.web_search
    if tool_type is None:
        unsupported_value(name, f"the model {context.model!r} does not support web search.")
    # search_context_size has no equivalent (max_uses caps the number of searches, not their size).
    tool: dict[str, Any] = {"type": tool_type, "name": "web_search"}
    location = value.get("user_location")
    if location is not None:
        tool["user_location"] = _user_location(location, f"{name}.user_location")
    context.upstream.setdefault("tools", []).append(tool)
    return OMIT


def _user_location(location: Any, path: str) -> dict[str, Any]:
    if not isinstance(location, dict):
        invalid_type(path, "an object", location)
    kind = location.get("type")
    if kind != "approximate":
        invalid_value(f"{path}.type", f"{kind!r}; the only supported value is 'approximate'.")
    approximate = location.get("approximate")
    if approximate is None:
        missing(f"{path}.approximate")
    if not isinstance(approximate, dict):
        invalid_type(f"{path}.approximate", "an object", approximate)
    mapped: dict[str, Any] = {"type": "approximate"}
    for key in _LOCATION_FIELDS:
        field = approximate.get(key)
        if field is None:
            continue
        if not isinstance(field, str):
            invalid_type(f"{path}.approximate.{key}", "a string", field)
        if field:
            mapped[key] = field
    return mapped


# Prompt caching -------------------------------------------------------------------------------

_MAX_BREAKPOINTS: Final = 4


def _prompt_cache_retention(value: Any, name: str, context: Context) -> Any:
    if value not in ("in_memory", "24h"):
        if not isinstance(value, str):
            invalid_type(name, "a string", value)
        invalid_value(name, f"{value!r}. Supported values are: 'in_memory' and '24h'.")
    # Claude's longest cache lifetime is 1 hour; "in_memory" is its default of 5 minutes.
    if value == "24h":
        context.cache_ttl = "1h"
    return OMIT


def _prompt_cache_options(value: Any, name: str, context: Context) -> Any:
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


def _place_cache_breakpoints(context: Context, *, auto: bool) -> None:
    """Mark the prompt cache breakpoints: the client's own (`prompt_cache_breakpoint` on content
    parts, marked by messages.py), and with `auto` the gateway's.

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
    keep = _MAX_BREAKPOINTS - 1 if auto else _MAX_BREAKPOINTS
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


def _refuse(reason: str, *, harmless: Callable[[Any], bool] = lambda value: False) -> Convert:
    """A parameter whose answer would be wrong without it: 400 unless its value is `harmless`."""

    def convert(value: Any, name: str, context: Context) -> Any:
        if harmless(value):
            return OMIT
        raise InvalidRequest(f"Unsupported parameter: '{name}' {reason}", param=name, code="unsupported_parameter")

    return convert


def _is_falsy(value: Any) -> bool:
    return not value


def _no_audio(value: Any) -> bool:
    return not (isinstance(value, list) and "audio" in value)


_NO_LOGPROBS: Final = "is not supported: Claude does not return log probabilities."
# Accepted and dropped: no upstream equivalent, and the answer is still right without them.
# Listed so the compatibility table can be read off this file; unknown fields are dropped too.
_IGNORED: Final = Param()

# Order matters where one entry reads another's result: tools before tool choices, and the tool
# choices before parallel_tool_calls, which amends whichever was chosen; max_tokens and the tool
# choice before reasoning_effort, which checks them (and may raise the default max_tokens).
PARAMS: Final[dict[str, Param]] = {
    "max_completion_tokens": Param("max_tokens", _max_tokens),
    "max_tokens": Param("max_tokens", _max_tokens, yields_to="max_completion_tokens", default=_default_max_tokens),
    "stop": Param("stop_sequences", _stop),
    "temperature": Param("temperature", _temperature),
    "top_p": Param("top_p", _top_p),
    "safety_identifier": Param("metadata", _user_id),
    "user": Param("metadata", _user_id, yields_to="safety_identifier"),
    "stream": Param("stream", _stream),
    "stream_options": Param(None, _stream_options),
    "n": Param(None, _n),
    "tools": Param("tools", _tools),
    "functions": Param("tools", _functions, yields_to="tools"),
    "tool_choice": Param("tool_choice", _tool_choice),
    "function_call": Param("tool_choice", _function_call, yields_to="tool_choice"),
    "parallel_tool_calls": Param("tool_choice", _parallel_tool_calls),
    "web_search_options": Param(None, _web_search_options),
    "response_format": Param(None, _response_format),
    "reasoning_effort": Param(None, _reasoning_effort),
    "service_tier": Param("service_tier", _service_tier),
    "prompt_cache_retention": Param(None, _prompt_cache_retention),
    "prompt_cache_options": Param(None, _prompt_cache_options),
    "logprobs": Param(None, _refuse(_NO_LOGPROBS, harmless=_is_falsy)),
    "top_logprobs": Param(None, _refuse(_NO_LOGPROBS, harmless=_is_falsy)),
    "audio": Param(None, _refuse("is not supported: this gateway produces text only.")),
    "modalities": Param(
        None, _refuse("with 'audio' is not supported: this gateway produces text only.", harmless=_no_audio)
    ),
    "prediction": Param(None, _refuse("is not supported: Claude has no predicted outputs.")),
    "moderation": Param(None, _refuse("is not supported: this gateway cannot run OpenAI moderation models.")),
    "seed": _IGNORED,
    "presence_penalty": _IGNORED,
    "frequency_penalty": _IGNORED,
    "logit_bias": _IGNORED,
    "store": _IGNORED,
    "metadata": _IGNORED,
    # Claude has no length control: effort steers thinking and tool use, not the answer's length.
    "verbosity": _IGNORED,
    # Claude's cache is keyed by the exact prompt prefix alone; there is no routing key to set.
    "prompt_cache_key": _IGNORED,
}
