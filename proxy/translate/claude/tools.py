"""Tools on the Claude side: function definitions, tool choice, parallel tool use, web search.

A dialect extracts the values from its own shapes (chat nests a function in ``tools[k].function``,
the Responses API does not) and passes them with the client's path. Converters with the
`params.Convert` signature (`parallel_tool_calls`) go straight into a dialect's table.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.translate.checks import boolean, invalid_type, invalid_value, missing, unsupported_value
from proxy.translate.params import OMIT, ClaudeContext

__all__ = [
    "FORCED_CHOICES",
    "TOOL_CHOICE_MODES",
    "approximate_location",
    "choose",
    "function_tool",
    "named_tool_choice",
    "parallel_tool_calls",
    "tool_choice_mode",
    "tool_name",
    "web_search_tool",
]


# Function tools --------------------------------------------------------------------------------


def tool_name(name: Any, path: str) -> str:
    """A tool's name: a required, non-empty string; `path` is the name's."""
    if name is None:
        missing(path)
    if not isinstance(name, str):
        invalid_type(path, "a string", name)
    if not name:
        invalid_value(path, "expected a non-empty string.")
    return name


def function_tool(name: Any, description: Any, parameters: Any, strict: Any, path: str) -> dict[str, Any]:
    """A Claude tool for an OpenAI function definition's fields (each as the client sent it, None
    when absent); `path` is the object holding them (``tools[3].function``, ``tools[3]``)."""
    tool: dict[str, Any] = {"name": tool_name(name, f"{path}.name")}
    if description is not None:
        if not isinstance(description, str):
            invalid_type(f"{path}.description", "a string", description)
        if description:
            tool["description"] = description
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
    if strict is not None:
        tool["strict"] = boolean(strict, f"{path}.strict")
    return tool


# Tool choice -----------------------------------------------------------------------------------

TOOL_CHOICE_MODES: Final = {"auto": "auto", "none": "none", "required": "any"}
# Claude's tool choices that force a tool call.
FORCED_CHOICES: Final = frozenset({"any", "tool"})


def tool_choice_mode(mode: str, name: str, context: ClaudeContext) -> Any:
    """Claude's tool_choice for an OpenAI mode string ('auto', 'none', 'required'), or `OMIT`."""
    claude_mode = TOOL_CHOICE_MODES.get(mode)
    if claude_mode is None:
        invalid_value(name, f"{mode!r}. Supported values are: 'none', 'auto' and 'required'.")
    return choose({"type": claude_mode}, name, context)


def named_tool_choice(function_name: Any, path: str, name: str, context: ClaudeContext) -> Any:
    """Claude's tool_choice forcing the tool `function_name` (at `path`), which the request must
    define; `name` is the tool choice parameter's. Run after the tools are in `context.upstream`."""
    if function_name is None:
        missing(path)
    if not isinstance(function_name, str):
        invalid_type(path, "a string", function_name)
    choice = choose({"type": "tool", "name": function_name}, name, context)
    if all(tool["name"] != function_name for tool in context.upstream["tools"]):
        invalid_value(path, f"no tool named {function_name!r} is defined.")
    return choice


def choose(choice: dict[str, Any], name: str, context: ClaudeContext) -> Any:
    """`choice` when the request defines tools; without tools 'none' adds nothing (`OMIT`) and
    any other choice is the client's error. A forced choice (`any`, `tool`) on a model that refuses
    forced tool use (`ModelCaps.forced_tool_choice`) is a 400 naming `name`."""
    if "tools" not in context.upstream:
        if choice["type"] == "none":
            return OMIT  # without tools the model cannot call one anyway
        invalid_value(name, f"'{name}' is only allowed when tools are specified.")
    if choice["type"] in FORCED_CHOICES and not context.caps.forced_tool_choice:
        # No faithful adaptation: `auto` (with or without an instruction to call a tool) lets the
        # model answer in text, which a client that forces a call is not written to expect.
        unsupported_value(
            name,
            f"the model {context.model!r} does not support forced tool use; use 'auto' "
            "(the model may then answer without calling a tool) or a model that supports it.",
        )
    return choice


def parallel_tool_calls(value: Any, name: str, context: ClaudeContext) -> Any:
    """`parallel_tool_calls: false` → the chosen tool_choice with `disable_parallel_tool_use`.
    A converter whose target is `tool_choice`, run after the tool choice."""
    if boolean(value, name) or "tools" not in context.upstream:
        return OMIT
    choice = context.upstream.get("tool_choice", {"type": "auto"})
    if choice["type"] == "none":
        return OMIT
    return {**choice, "disable_parallel_tool_use": True}


# Web search ------------------------------------------------------------------------------------

_LOCATION_FIELDS: Final = ("city", "region", "country", "timezone")


def web_search_tool(name: str, context: ClaudeContext) -> dict[str, Any]:
    """The web search server tool for the model (the model table names its version), not yet
    added to the request: the caller may set `user_location`, then appends it to the tools.
    `name` is the client parameter that asked for it."""
    tool_type = context.caps.web_search
    if tool_type is None:
        unsupported_value(name, f"the model {context.model!r} does not support web search.")
    # search_context_size has no equivalent (max_uses caps the number of searches, not their size).
    return {"type": tool_type, "name": "web_search"}


def approximate_location(fields: dict[str, Any], path: str) -> dict[str, Any]:
    """Claude's approximate `user_location` from an object with city, region, country and
    timezone (each optional, a string); `path` is that object's."""
    mapped: dict[str, Any] = {"type": "approximate"}
    for key in _LOCATION_FIELDS:
        field = fields.get(key)
        if field is None:
            continue
        if not isinstance(field, str):
            invalid_type(f"{path}.{key}", "a string", field)
        if field:
            mapped[key] = field
    return mapped
