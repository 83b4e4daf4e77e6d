"""Responses `tools` → Claude tools, with the names Claude will call them by.

The Responses API's tools are flat (``{type: "function", name, parameters}``) and come in kinds
Claude has no word for; each becomes an ordinary Claude tool, and `ToolNames` remembers what the
client called it so that a call comes back as the right output item:

- `function`: Claude's tool as chat makes it (`claude.tools.function_tool`).
- `namespace` (Codex groups an MCP server's functions so): each member becomes its own tool named
  ``<namespace>__<name>``, its description followed by the namespace's.
- `custom` (freeform text, or text in a Lark or regex grammar, like Codex's `apply_patch`): a tool
  taking one string, `input`, whose description tells the model the grammar. Claude cannot
  constrain its output to a grammar; the client checks the text, as it must anyway.
- `web_search` / `web_search_preview`: Claude's web search server tool, in the version the model
  table gives (`ModelCaps.web_search`).

Claude's tool names must match ``^[a-zA-Z0-9_-]{1,64}$``. A name that does not (``container.exec``,
a long namespaced name) or that another tool already took is made valid and unique with a short
digest of the client's name; the mapping is deterministic, so a replayed call of the same tool
gets the same Claude name in every request. Other built-in tools (file search, code interpreter,
computer use, image generation, MCP, shell, ...) run on OpenAI's servers and have no Claude
equivalent here: 400 naming the tool.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.translate.checks import boolean, check_length, invalid_type, invalid_value, missing, unsupported_value
from proxy.translate.claude.tools import approximate_location, function_tool, tool_name, web_search_tool
from proxy.translate.params import ClaudeContext, Drop
from proxy.translate.responses.common import CUSTOM_TOOL_INPUT, ToolName, ToolNames

__all__ = ["MAX_TOOL_NAME_LENGTH", "ToolSet", "claude_tool_name", "convert_tools"]

MAX_TOOL_NAME_LENGTH: Final = 64
_VALID_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INVALID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
_NAMESPACE_SEPARATOR: Final = "__"
_DIGEST_CHARS: Final = 8
WEB_SEARCH_NAME: Final = "web_search"  # the name Claude's web search server tool always has

_WEB_SEARCH_TYPES: Final = frozenset({"web_search", "web_search_2025_08_26"})
_WEB_SEARCH_PREVIEW_TYPES: Final = frozenset({"web_search_preview", "web_search_preview_2025_03_11"})


def claude_tool_name(name: str, namespace: str | None = None, *, attempt: int = 0) -> str:
    """The Claude tool name for the client's tool `name` (in `namespace`, if any): the name itself
    (``namespace__name``) when Claude accepts it, else a valid name ending in a digest of it.
    `attempt` > 0 gives the alternatives used when an earlier tool took the first choice."""
    wanted = name if namespace is None else f"{namespace}{_NAMESPACE_SEPARATOR}{name}"
    if attempt == 0 and _VALID_NAME.fullmatch(wanted):
        return wanted
    key = wanted if namespace is None else f"{namespace}\x00{name}"  # "a__b" flat ≠ b in namespace a
    if attempt:
        key = f"{key}\x00{attempt}"
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_CHARS // 2).hexdigest()
    stem = _INVALID_CHARS.sub("_", wanted)[: MAX_TOOL_NAME_LENGTH - _DIGEST_CHARS - 1]
    return f"{stem}_{digest}"


@dataclass(slots=True)
class ToolSet:
    """The request's tools as Claude sees them, and how to name a tool the client refers to."""

    tools: list[dict[str, Any]] = field(default_factory=list)  # the upstream `tools`
    by_claude: dict[str, ToolName] = field(default_factory=dict)
    by_client: dict[tuple[str | None, str], str] = field(default_factory=dict)  # (namespace, name) → Claude
    web_search: dict[str, Any] | None = None  # the upstream web search tool, when the client offered one
    reserved: set[str] = field(default_factory=set)  # Claude names no client tool may take
    echo: list[dict[str, Any]] = field(default_factory=list)  # the client's tools, as a Response lists them

    def claude_name(self, name: str, namespace: str | None = None) -> str:
        """The Claude name of a client tool; for one this request does not define (a replayed call
        of a tool since removed), the name it would have had."""
        found = self.by_client.get((namespace, name))
        return found if found is not None else claude_tool_name(name, namespace)

    def names(self) -> ToolNames:
        return ToolNames(by_claude=dict(self.by_claude))

    def _name(self, kind: str, name: str, namespace: str | None, path: str) -> str:
        if (namespace, name) in self.by_client:
            where = f"in namespace {namespace!r}" if namespace is not None else "in 'tools'"
            invalid_value(path, f"a tool named {name!r} is already defined {where}.")
        attempt = 0
        claude = claude_tool_name(name, namespace)
        while claude in self.by_claude or claude in self.reserved:
            attempt += 1
            claude = claude_tool_name(name, namespace, attempt=attempt)
        self.by_claude[claude] = ToolName(kind, name, namespace)  # type: ignore[arg-type]
        self.by_client[(namespace, name)] = claude
        return claude


def convert_tools(value: Any, name: str, context: ClaudeContext) -> ToolSet:
    """The Claude tools for the client's `tools` (parameter `name`), bounded by `context.max_tools`
    (every member of a namespace counts). The web search tool, if asked for, reserves its fixed
    name first; the client's flat names are then kept as they are wherever Claude accepts them,
    and members of namespaces get theirs last."""
    tool_set = ToolSet()
    if value is None:
        return tool_set
    if not isinstance(value, list):
        invalid_type(name, "an array", value)
    check_length(name, len(value), context.max_tools, "max_tools")
    kinds = [_kind(tool, f"{name}[{k}]") for k, tool in enumerate(value)]
    members = sum(_members(tool) for tool, kind in zip(value, kinds, strict=True) if kind == "namespace")
    check_length(name, len(value) + members, context.max_tools, "max_tools")
    converted: list[list[dict[str, Any]] | None] = [None] * len(value)
    for k, (tool, kind) in enumerate(zip(value, kinds, strict=True)):
        if kind in _WEB_SEARCH_TYPES or kind in _WEB_SEARCH_PREVIEW_TYPES:
            converted[k] = [_web_search(tool, f"{name}[{k}]", tool_set, context)]
    for k, (tool, kind) in enumerate(zip(value, kinds, strict=True)):
        if kind in ("function", "custom"):
            converted[k] = [_member(tool, kind, f"{name}[{k}]", None, tool_set, context.drop)]
    for k, (tool, kind) in enumerate(zip(value, kinds, strict=True)):
        if kind == "namespace":
            converted[k] = _namespace(tool, f"{name}[{k}]", tool_set, context.drop)
    for k, kind in enumerate(kinds):
        if converted[k] is None:
            unsupported_value(
                f"{name}[{k}].type",
                f"{kind!r} tools are not supported: they run on OpenAI's servers and Claude has no "
                "equivalent here. Supported: 'function', 'custom', 'namespace', 'web_search' and "
                "'web_search_preview'.",
            )
    tool_set.tools = [tool for group in converted if group is not None for tool in group]
    tool_set.echo = [_echo(tool, kind) for tool, kind in zip(value, kinds, strict=True)]
    return tool_set


def _kind(tool: Any, path: str) -> str:
    if not isinstance(tool, dict):
        invalid_type(path, "an object", tool)
    kind = tool.get("type")
    if kind is None:
        missing(f"{path}.type")
    if not isinstance(kind, str):
        invalid_type(f"{path}.type", "a string", kind)
    return kind


def _members(tool: dict[str, Any]) -> int:
    members = tool.get("tools")
    return len(members) if isinstance(members, list) else 0


def _member(
    tool: dict[str, Any], kind: str, path: str, namespace: dict[str, Any] | None, tool_set: ToolSet, drop: Drop
) -> dict[str, Any]:
    """A function or custom tool, at the top level or inside `namespace` (already checked)."""
    name = tool_name(tool.get("name"), f"{path}.name")
    # defer_loading (OpenAI's tool search) and allowed_callers (its programmatic calling) are
    # dropped: every tool is simply offered, which gives the same answers.
    if kind == "function":
        claude = function_tool(name, tool.get("description"), tool.get("parameters"), tool.get("strict"), path)
    else:
        claude = _custom_tool(tool, name, path, drop)
    claude["name"] = tool_set._name(kind, name, None if namespace is None else namespace["name"], f"{path}.name")
    if namespace is not None:
        group = f"This tool belongs to the tool group {namespace['name']!r}"
        detail = namespace["description"]
        note = f"{group}: {detail}" if detail else f"{group}."
        claude["description"] = f"{claude['description']}\n\n{note}" if claude.get("description") else note
    return claude


def _namespace(tool: dict[str, Any], path: str, tool_set: ToolSet, drop: Drop) -> list[dict[str, Any]]:
    namespace = tool_name(tool.get("name"), f"{path}.name")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        invalid_type(f"{path}.description", "a string", description)
    members = tool.get("tools")
    if members is None:
        missing(f"{path}.tools")
    if not isinstance(members, list):
        invalid_type(f"{path}.tools", "an array", members)
    group = {"name": namespace, "description": description or ""}
    converted = []
    for j, member in enumerate(members):
        member_path = f"{path}.tools[{j}]"
        kind = _kind(member, member_path)
        if kind not in ("function", "custom"):
            unsupported_value(f"{member_path}.type", f"{kind!r}; a namespace holds 'function' and 'custom' tools.")
        converted.append(_member(member, kind, member_path, group, tool_set, drop))
    return converted


# Custom tools ------------------------------------------------------------------------------------


def _custom_tool(tool: dict[str, Any], name: str, path: str, drop: Drop) -> dict[str, Any]:
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        invalid_type(f"{path}.description", "a string", description)
    form = tool.get("format")
    note = _format_note(form, f"{path}.format")
    if isinstance(form, dict) and form.get("type") == "grammar":
        # Claude has no constrained decoding for free text: the grammar is described, not enforced.
        drop(f"{path}.format", "the grammar is given to Claude as an instruction and is not enforced")
    return {
        "name": name,
        "description": f"{description}\n\n{note}" if description else note,
        "input_schema": {
            "type": "object",
            "properties": {CUSTOM_TOOL_INPUT: {"type": "string", "description": "The tool's whole input, as text."}},
            "required": [CUSTOM_TOOL_INPUT],
        },
    }


_SYNTAXES: Final = {"lark": "the Lark grammar", "regex": "the regular expression"}


def _format_note(value: Any, path: str) -> str:
    """What the model is told about a custom tool's input format."""
    plain = f"Call this tool with its input as one string in the `{CUSTOM_TOOL_INPUT}` field."
    if value is None:
        return plain
    if not isinstance(value, dict):
        invalid_type(path, "an object", value)
    kind = value.get("type")
    if kind == "text":
        return plain
    if kind != "grammar":
        if kind is None:
            missing(f"{path}.type")
        if not isinstance(kind, str):
            invalid_type(f"{path}.type", "a string", kind)
        invalid_value(f"{path}.type", f"{kind!r}. Supported values are: 'text' and 'grammar'.")
    syntax = value.get("syntax")
    if syntax is None:
        missing(f"{path}.syntax")
    if not isinstance(syntax, str):
        invalid_type(f"{path}.syntax", "a string", syntax)
    if syntax not in _SYNTAXES:
        invalid_value(f"{path}.syntax", f"{syntax!r}. Supported values are: 'lark' and 'regex'.")
    definition = value.get("definition")
    if definition is None:
        missing(f"{path}.definition")
    if not isinstance(definition, str):
        invalid_type(f"{path}.definition", "a string", definition)
    return f"{plain} The string must match {_SYNTAXES[syntax]} below exactly.\n\n```\n{definition}\n```"


# Web search --------------------------------------------------------------------------------------


def _web_search(tool: dict[str, Any], path: str, tool_set: ToolSet, context: ClaudeContext) -> dict[str, Any]:
    if tool_set.web_search is not None:
        invalid_value(f"{path}.type", "only one web search tool may be given.")
    claude = web_search_tool(f"{path}.type", context)
    size = tool.get("search_context_size")
    if size is not None and size not in ("low", "medium", "high"):
        invalid_value(f"{path}.search_context_size", f"{size!r}. Supported values are: 'low', 'medium' and 'high'.")
    external = tool.get("external_web_access")
    if external is not None:
        boolean(external, f"{path}.external_web_access")
    # search_context_size, search_content_types and external_web_access (OpenAI's cached index
    # instead of live pages) have no equivalent: Claude's search always reads the live web.
    if size not in (None, "medium"):
        context.drop(
            f"{path}.search_context_size", "Claude's web search has no context size, so it is ignored by this gateway"
        )
    if external is False:
        context.drop(f"{path}.external_web_access", "Claude's web search always reads the live web")
    filters = tool.get("filters")
    if filters is not None:
        if not isinstance(filters, dict):
            invalid_type(f"{path}.filters", "an object", filters)
        domains = filters.get("allowed_domains")
        if domains is not None and _domains(domains, f"{path}.filters.allowed_domains"):
            claude["allowed_domains"] = list(domains)
    location = tool.get("user_location")
    if location is not None:
        location_path = f"{path}.user_location"
        if not isinstance(location, dict):
            invalid_type(location_path, "an object", location)
        kind = location.get("type")
        if kind not in (None, "approximate"):
            invalid_value(f"{location_path}.type", f"{kind!r}; the only supported value is 'approximate'.")
        mapped = approximate_location(location, location_path)
        if len(mapped) > 1:
            claude["user_location"] = mapped
    tool_set.reserved.add(WEB_SEARCH_NAME)
    tool_set.web_search = claude
    return claude


def _domains(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        invalid_type(path, "an array of strings", value)
    for k, domain in enumerate(value):
        if not isinstance(domain, str):
            invalid_type(f"{path}[{k}]", "a string", domain)
    return value


# The echo ----------------------------------------------------------------------------------------


def _echo(tool: dict[str, Any], kind: str) -> dict[str, Any]:
    """A client tool as a Response lists it: the fields the gateway read (all checked by now),
    so that what it repeats is always a valid `Tool`."""
    if kind == "namespace":
        members = [_echo(member, member["type"]) for member in tool["tools"]]
        return {"type": kind, "name": tool["name"], "description": tool.get("description") or "", "tools": members}
    echo: dict[str, Any] = {"type": kind}
    if kind in ("function", "custom"):
        echo["name"] = tool["name"]
        if isinstance(tool.get("description"), str):
            echo["description"] = tool["description"]
    if kind == "function":
        echo["parameters"] = tool.get("parameters")
        echo["strict"] = tool.get("strict")
    elif kind == "custom":
        if tool.get("format") is not None:
            echo["format"] = {
                key: tool["format"][key] for key in ("type", "syntax", "definition") if key in tool["format"]
            }
    else:  # web search
        for key in ("search_context_size", "external_web_access"):
            if tool.get(key) is not None:
                echo[key] = tool[key]
        filters = tool.get("filters")
        if filters is not None and filters.get("allowed_domains") is not None:
            echo["filters"] = {"allowed_domains": filters["allowed_domains"]}
        location = tool.get("user_location")
        if location is not None:
            echo["user_location"] = {key: location[key] for key in _LOCATION if location.get(key) is not None}
            echo["user_location"]["type"] = "approximate"
    return echo


_LOCATION: Final = ("city", "country", "region", "timezone")
