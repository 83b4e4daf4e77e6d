"""An OpenAI chat completion request → a Messages API request (design §2).

`model` and `messages` are the core of the request and are converted first (messages in
`messages.py`). Every other top-level parameter is one entry of `PARAMS`, run in table order by
`params.apply_params`: most converters are the shared Claude-side ones (`proxy.translate.claude`);
those here read shapes only chat has (`n`, `stream_options`, nested function tools, the legacy
`functions`/`function_call`, `web_search_options`, `response_format`). Adding an OpenAI field is one
entry here plus one fixture in tests/fixtures/chat/request/.

JSON null means "not given", as in the OpenAI API. Fields not in the table are ignored, and like
every field ignored or adapted they are named in `TranslatedRequest.dropped` (or, with `strict`, a
400; see `params.ClaudeContext.drop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from proxy.models import ModelTable
from proxy.translate.chat.messages import convert_messages
from proxy.translate.checks import (
    boolean,
    check_length,
    invalid_type,
    invalid_value,
    missing,
    requested_model,
    unsupported_value,
)
from proxy.translate.claude.caching import place_cache_breakpoints, prompt_cache_options, prompt_cache_retention
from proxy.translate.claude.outputs import json_object_instruction, json_schema_output, require_structured_outputs
from proxy.translate.claude.reasoning import apply_reasoning_effort
from proxy.translate.claude.sampling import (
    default_max_tokens,
    max_tokens,
    service_tier,
    stop_sequences,
    temperature,
    top_p,
    user_id,
)
from proxy.translate.claude.tools import (
    approximate_location,
    choose,
    function_tool,
    named_tool_choice,
    parallel_tool_calls,
    tool_choice_mode,
    web_search_tool,
)
from proxy.translate.claude.turns import DEFAULT_MAX_CONTENT_BLOCKS, DEFAULT_MAX_MESSAGES
from proxy.translate.params import (
    DEFAULT_MAX_TOOLS,
    OMIT,
    ClaudeContext,
    Param,
    apply_params,
    dropped_fields,
    ignore,
    refuse,
)

__all__ = ["PARAMS", "ChatContext", "TranslatedRequest", "to_messages_request"]


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    upstream: dict[str, Any]  # the Messages API body; contains "stream": True iff the client streams
    model: str  # resolved upstream model id
    requested_model: str  # the model string as the client sent it
    stream: bool
    include_usage: bool  # stream_options.include_usage
    n: int = 1  # choices asked for: the caller makes this many upstream calls and merges them
    # Paths of the fields the client sent that did not reach the upstream as sent (ignored or
    # adapted), list positions left out, in body order: `params.dropped_fields`.
    dropped: tuple[str, ...] = ()


@dataclass(slots=True)
class ChatContext(ClaudeContext):
    """The Claude-side context, plus what chat's own parameters learn for the caller."""

    max_n: int = 8
    include_usage: bool = False
    n: int = 1


def to_messages_request(
    body: Any,
    table: ModelTable,
    *,
    max_n: int = 8,
    auto_cache: bool = False,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_content_blocks: int = DEFAULT_MAX_CONTENT_BLOCKS,
    max_tools: int = DEFAULT_MAX_TOOLS,
    strict: bool = False,
) -> TranslatedRequest:
    """The Messages API request for an OpenAI chat request.

    `max_n` bounds `n` (the caller makes n upstream calls); `auto_cache` marks the stable prefix
    for Anthropic's prompt cache on every request (see `caching.place_cache_breakpoints`). The
    other `max_` limits bound what a request may hold: messages, content parts (with tool calls and
    thinking blocks) in all of them, and tool definitions. `strict` (the strict_fields setting)
    makes a field that would be ignored or adapted a 400 naming it. The work done is linear in the body.
    """
    requested = requested_model(body)
    model = table.resolve(requested)
    caps = table.capabilities(model)
    upstream: dict[str, Any] = {"model": model}
    context = ChatContext(model=model, caps=caps, upstream=upstream, max_n=max_n, max_tools=max_tools, strict=strict)
    system, upstream["messages"] = convert_messages(
        body.get("messages"),
        model=model,
        prefill=caps.prefill,
        max_messages=max_messages,
        max_content_blocks=max_content_blocks,
        drop=context.drop,
    )
    if system:
        upstream["system"] = system
    apply_params(PARAMS, body, context, core=CORE)
    place_cache_breakpoints(context, auto=auto_cache and context.cache_implicit)

    return TranslatedRequest(
        upstream=upstream,
        model=model,
        requested_model=requested,
        stream=upstream.get("stream") is True,
        include_usage=context.include_usage,
        n=context.n,
        dropped=dropped_fields(context.dropped, body),
    )


# Chat's own converters -----------------------------------------------------------------------


def _stream(value: Any, name: str, context: ChatContext) -> Any:
    return True if boolean(value, name) else OMIT


def _stream_options(value: Any, name: str, context: ChatContext) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    include_usage = value.get("include_usage")
    if include_usage is not None:
        context.include_usage = boolean(include_usage, f"{name}.include_usage")
    if value.get("include_obfuscation") is True:
        context.drop(f"{name}.include_obfuscation", "this gateway's chunks carry no obfuscation")
    return OMIT


def _n(value: Any, name: str, context: ChatContext) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        invalid_type(name, "an integer", value)
    if value < 1:
        invalid_value(name, f"{value} is too small; expected at least 1.")
    if value > context.max_n:
        invalid_value(name, f"{value} is too large: this gateway generates at most {context.max_n} choices a request.")
    context.n = value
    return OMIT


# Tools: chat nests each definition in `function`; the legacy `functions` list holds them bare.


def _tools(value: Any, name: str, context: ChatContext) -> Any:
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


def _functions(value: Any, name: str, context: ChatContext) -> Any:
    if not isinstance(value, list):
        invalid_type(name, "an array", value)
    check_length(name, len(value), context.max_tools, "max_tools")
    return [_function_tool(function, f"{name}[{k}]") for k, function in enumerate(value)] or OMIT


def _function_tool(function: Any, path: str) -> dict[str, Any]:
    if function is None:
        missing(path)
    if not isinstance(function, dict):
        invalid_type(path, "an object", function)
    return function_tool(
        function.get("name"), function.get("description"), function.get("parameters"), function.get("strict"), path
    )


def _tool_choice(value: Any, name: str, context: ChatContext) -> Any:
    if isinstance(value, str):
        return tool_choice_mode(value, name, context)
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


def _function_call(value: Any, name: str, context: ChatContext) -> Any:
    if isinstance(value, str):
        if value not in ("auto", "none"):
            invalid_value(name, f"{value!r}. Supported values are: 'none' and 'auto'.")
        return choose({"type": value}, name, context)
    return _named_choice(value, name, name, context)


def _named_choice(function: Any, path: str, name: str, context: ChatContext) -> Any:
    if not isinstance(function, dict):
        if function is None:
            missing(path)
        invalid_type(path, "an object", function)
    return named_tool_choice(function.get("name"), f"{path}.name", name, context)


def _web_search_options(value: Any, name: str, context: ChatContext) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    size = value.get("search_context_size")
    if size is not None and size not in ("low", "medium", "high"):
        invalid_value(f"{name}.search_context_size", f"{size!r}. Supported values are: 'low', 'medium' and 'high'.")
    tool = web_search_tool(name, context)
    if size not in (None, "medium"):
        context.drop(f"{name}.search_context_size", _SEARCH_CONTEXT_SIZE)
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
    return approximate_location(approximate, f"{path}.approximate")


def _response_format(value: Any, name: str, context: ChatContext) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    kind = value.get("type")
    if kind is None:
        missing(f"{name}.type")
    if kind == "text":
        return OMIT
    if kind == "json_object":
        json_object_instruction(name, context)
        return OMIT
    if kind != "json_schema":
        if not isinstance(kind, str):
            invalid_type(f"{name}.type", "a string", kind)
        invalid_value(f"{name}.type", f"{kind!r}. Supported values are: 'text', 'json_object' and 'json_schema'.")
    require_structured_outputs(f"{name}.type", context)
    path = f"{name}.json_schema"
    spec = value.get("json_schema")
    if spec is None:
        missing(path)
    if not isinstance(spec, dict):
        invalid_type(path, "an object", spec)
    json_schema_output(spec, path, name, context)
    return OMIT


def _is_falsy(value: Any) -> bool:
    return not value


def _no_audio(value: Any) -> bool:
    return not (isinstance(value, list) and "audio" in value)


def _is_zero(value: Any) -> bool:
    return value == 0 and not isinstance(value, bool)


def _is_false(value: Any) -> bool:
    return value is False


def _is_medium(value: Any) -> bool:
    return isinstance(value, str) and value == "medium"


# What Claude's web search has no equivalent for (max_uses caps the number of searches, not their size).
_SEARCH_CONTEXT_SIZE: Final = "Claude's web search has no context size, so it is ignored by this gateway"
# The fields the translator converts before the table.
CORE: Final = frozenset({"model", "messages"})
_NO_LOGPROBS: Final = "is not supported: Claude does not return log probabilities."
# Accepted and dropped (and reported): no upstream equivalent, and the answer is still right
# without them. `ignore` spares OpenAI's defaults, which ask for nothing. Listed so the
# compatibility table can be read off this file; unknown fields are dropped (and reported) too.
_IGNORED: Final[Param[ChatContext]] = Param()

# Order matters where one entry reads another's result: tools before tool choices, and the tool
# choices before parallel_tool_calls, which amends whichever was chosen; max_tokens and the tool
# choice before reasoning_effort, which checks them (and may raise the default max_tokens).
PARAMS: Final[dict[str, Param[ChatContext]]] = {
    "max_completion_tokens": Param("max_tokens", max_tokens),
    "max_tokens": Param("max_tokens", max_tokens, yields_to="max_completion_tokens", default=default_max_tokens),
    "stop": Param("stop_sequences", stop_sequences),
    "temperature": Param("temperature", temperature),
    "top_p": Param("top_p", top_p),
    "safety_identifier": Param("metadata", user_id),
    "user": Param("metadata", user_id, yields_to="safety_identifier"),
    "stream": Param("stream", _stream),
    "stream_options": Param(None, _stream_options),
    "n": Param(None, _n),
    "tools": Param("tools", _tools),
    "functions": Param("tools", _functions, yields_to="tools"),
    "tool_choice": Param("tool_choice", _tool_choice),
    "function_call": Param("tool_choice", _function_call, yields_to="tool_choice"),
    "parallel_tool_calls": Param("tool_choice", parallel_tool_calls),
    "web_search_options": Param(None, _web_search_options),
    "response_format": Param(None, _response_format),
    "reasoning_effort": Param(None, apply_reasoning_effort),
    "service_tier": Param("service_tier", service_tier),
    "prompt_cache_retention": Param(None, prompt_cache_retention),
    "prompt_cache_options": Param(None, prompt_cache_options),
    "logprobs": Param(None, refuse(_NO_LOGPROBS, harmless=_is_falsy)),
    "top_logprobs": Param(None, refuse(_NO_LOGPROBS, harmless=_is_falsy)),
    "audio": Param(None, refuse("is not supported: this gateway produces text only.")),
    "modalities": Param(
        None, refuse("with 'audio' is not supported: this gateway produces text only.", harmless=_no_audio)
    ),
    "prediction": Param(None, refuse("is not supported: Claude has no predicted outputs.")),
    "moderation": Param(None, refuse("is not supported: this gateway cannot run OpenAI moderation models.")),
    "seed": _IGNORED,
    "presence_penalty": Param(None, ignore(harmless=_is_zero)),
    "frequency_penalty": Param(None, ignore(harmless=_is_zero)),
    "logit_bias": Param(None, ignore(harmless=_is_falsy)),
    "store": Param(None, ignore(harmless=_is_false)),  # OpenAI's stored completions: nothing here
    "metadata": Param(None, ignore(harmless=_is_falsy)),  # describes a stored completion
    # Claude has no length control: effort steers thinking and tool use, not the answer's length.
    "verbosity": Param(None, ignore(harmless=_is_medium)),
    # Claude's cache is keyed by the exact prompt prefix alone; there is no routing key to set.
    "prompt_cache_key": _IGNORED,
}
