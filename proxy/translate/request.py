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
from proxy.models import ModelCaps, ModelTable
from proxy.translate.messages import convert_messages, invalid_type, invalid_value, missing, unsupported_value

__all__ = ["OMIT", "PARAMS", "Param", "TranslatedRequest", "to_messages_request"]

OMIT: Final = object()
"""Returned by a converter when the parameter adds nothing to the upstream body."""


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    upstream: dict[str, Any]  # the Messages API body; contains "stream": True iff the client streams
    model: str  # resolved upstream model id
    requested_model: str  # the model string as the client sent it
    stream: bool
    include_usage: bool  # stream_options.include_usage


@dataclass(slots=True)
class Context:
    """What converters may consult: the model's capabilities and the upstream body built so far."""

    model: str
    caps: ModelCaps
    upstream: dict[str, Any]
    include_usage: bool = False


Convert = Callable[[Any, str, Context], Any]


@dataclass(frozen=True, slots=True)
class Param:
    """How one OpenAI parameter reaches the upstream body. `Param()` alone: accepted and dropped."""

    target: str | None = None  # the upstream field it fills, if any
    convert: Convert | None = None  # checks the client's value, returns the upstream one or OMIT
    yields_to: str | None = None  # an OpenAI parameter that wins over this one when both are sent
    default: Callable[[ModelCaps], Any] | None = None  # fills `target` when the parameter is absent


def to_messages_request(body: Any, table: ModelTable) -> TranslatedRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    requested = body.get("model")
    if requested is None:
        missing("model")
    if not isinstance(requested, str):
        invalid_type("model", "a string", requested)
    if not requested:
        invalid_value("model", "expected a non-empty string.")
    model = table.resolve(requested)
    caps = table.capabilities(model)
    system, messages = convert_messages(body.get("messages"), model=model, prefill=caps.prefill)

    upstream: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        upstream["system"] = system
    context = Context(model=model, caps=caps, upstream=upstream)
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

    return TranslatedRequest(
        upstream=upstream,
        model=model,
        requested_model=requested,
        stream=upstream.get("stream") is True,
        include_usage=context.include_usage,
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


def _is_one(value: Any) -> bool:
    return not isinstance(value, bool) and bool(value == 1)


def _is_text_format(value: Any) -> bool:
    return bool(value == {"type": "text"})


_NO_LOGPROBS: Final = "is not supported: Claude does not return log probabilities."
# Accepted and dropped: no upstream equivalent, and the answer is still right without them.
# Listed so the compatibility table can be read off this file; unknown fields are dropped too.
_IGNORED: Final = Param()

# Order matters where one entry reads another's result: tools before tool choices, and the tool
# choices before parallel_tool_calls, which amends whichever was chosen.
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
    "tools": Param("tools", _tools),
    "functions": Param("tools", _functions, yields_to="tools"),
    "tool_choice": Param("tool_choice", _tool_choice),
    "function_call": Param("tool_choice", _function_call, yields_to="tool_choice"),
    "parallel_tool_calls": Param("tool_choice", _parallel_tool_calls),
    "logprobs": Param(None, _refuse(_NO_LOGPROBS, harmless=_is_falsy)),
    "top_logprobs": Param(None, _refuse(_NO_LOGPROBS, harmless=_is_falsy)),
    "audio": Param(None, _refuse("is not supported: this gateway produces text only.")),
    "modalities": Param(
        None, _refuse("with 'audio' is not supported: this gateway produces text only.", harmless=_no_audio)
    ),
    "prediction": Param(None, _refuse("is not supported: Claude has no predicted outputs.")),
    "n": Param(None, _refuse("is not supported with a value other than 1 yet.", harmless=_is_one)),
    "response_format": Param(None, _refuse("is not supported yet, except {'type': 'text'}.", harmless=_is_text_format)),
    "reasoning_effort": Param(None, _refuse("is not supported yet.")),
    "web_search_options": Param(None, _refuse("is not supported: web search is not available here.")),
    "seed": _IGNORED,
    "presence_penalty": _IGNORED,
    "frequency_penalty": _IGNORED,
    "logit_bias": _IGNORED,
    "store": _IGNORED,
    "metadata": _IGNORED,
    "service_tier": _IGNORED,
    "verbosity": _IGNORED,
    "prompt_cache_key": _IGNORED,
}
