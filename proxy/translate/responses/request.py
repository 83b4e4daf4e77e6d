"""An OpenAI Responses request (`POST /v1/responses`) → a Messages API request (issue 15).

`model`, `tools`, `instructions` and `input` are the core of the request and are converted first
(tools before input, because replayed tool calls are named by the tools; see `tools.py` and
`input.py`). Every other parameter is one entry of `PARAMS`, run in table order by the shared
engine (`proxy.translate.params.apply_params`); names may be dotted (``reasoning.effort``).
Adding a Responses field is one entry here plus one fixture in tests/fixtures/responses/request/.

JSON null means "not given", as in the OpenAI API. Fields not in the table are ignored, and like
every field ignored or adapted they are named in `ResponsesRequest.dropped` (or, with `strict`, a
400; see `params.ClaudeContext.drop`). The pipeline resolves `previous_response_id` and passes
the stored items as `history`; this module only checks and echoes the id. `instructions` are not
inherited from the previous response, as OpenAI defines it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.models import ModelTable
from proxy.translate.checks import (
    boolean,
    invalid_type,
    invalid_value,
    json_type,
    missing,
    requested_model,
    required_string,
    unsupported_value,
)
from proxy.translate.claude.blocks import plain_text
from proxy.translate.claude.caching import place_cache_breakpoints, prompt_cache_options, prompt_cache_retention
from proxy.translate.claude.outputs import json_object_instruction, json_schema_output, require_structured_outputs
from proxy.translate.claude.reasoning import apply_reasoning_effort
from proxy.translate.claude.sampling import default_max_tokens, max_tokens, service_tier, temperature, top_p, user_id
from proxy.translate.claude.tools import choose, named_tool_choice, parallel_tool_calls, tool_choice_mode
from proxy.translate.claude.turns import DEFAULT_MAX_CONTENT_BLOCKS, DEFAULT_MAX_MESSAGES
from proxy.translate.params import (
    DEFAULT_MAX_TOOLS,
    OMIT,
    ClaudeContext,
    Param,
    apply_params,
    dropped_fields,
    refuse,
)
from proxy.translate.responses.common import ResponsesRequest
from proxy.translate.responses.input import convert_input
from proxy.translate.responses.tools import WEB_SEARCH_NAME, ToolSet, convert_tools

__all__ = ["PARAMS", "ResponsesContext", "to_messages_request"]

ENCRYPTED_REASONING: Final = "reasoning.encrypted_content"
# The fields the translator converts before the table.
CORE: Final = frozenset({"model", "tools", "instructions", "input"})


@dataclass(slots=True)
class ResponsesContext(ClaudeContext):
    """The core's context, plus what the Responses converters need and learn."""

    tools: ToolSet = field(default_factory=ToolSet)
    store: bool = True  # OpenAI's default
    include: tuple[str, ...] = ()


def to_messages_request(
    body: Any,
    table: ModelTable,
    *,
    history: Sequence[dict[str, Any]] = (),
    references: Mapping[str, dict[str, Any]] | None = None,
    auto_cache: bool = False,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_content_blocks: int = DEFAULT_MAX_CONTENT_BLOCKS,
    max_tools: int = DEFAULT_MAX_TOOLS,
    strict: bool = False,
) -> ResponsesRequest:
    """The Messages API request for a Responses request `body`.

    `history` is the stored input and output items of the response `previous_response_id` names
    (the pipeline looks it up; it is prepended to `input`); `references` the stored items that the
    input's `item_reference`s name, by id (looked up likewise). `auto_cache` marks the stable prefix
    for Anthropic's prompt cache. The `max_` limits bound what a request may hold: input items
    (history included), content parts in all of them, and tool definitions (each member of a
    namespace counts). `strict` (the strict_fields setting) makes a field that would be ignored or
    adapted a 400 naming it. The work done is linear in the body.
    """
    requested = requested_model(body)
    model = table.resolve(requested)
    caps = table.capabilities(model)
    upstream: dict[str, Any] = {"model": model}
    context = ResponsesContext(model=model, caps=caps, upstream=upstream, max_tools=max_tools, strict=strict)
    context.tools = convert_tools(body.get("tools"), "tools", context)
    if body.get("input") is None and not history:
        missing("input")
    system, messages, own_items = convert_input(
        body.get("input"),
        instructions=_instructions(body.get("instructions")),
        history=history,
        references=references or {},
        tools=context.tools,
        model=model,
        prefill=caps.prefill,
        max_messages=max_messages,
        max_content_blocks=max_content_blocks,
        drop=context.drop,
    )
    upstream["messages"] = messages
    if system:
        upstream["system"] = system
    if context.tools.tools:
        upstream["tools"] = context.tools.tools
    apply_params(PARAMS, body, context, core=CORE)
    place_cache_breakpoints(context, auto=auto_cache and context.cache_implicit)
    return ResponsesRequest(
        upstream=upstream,
        model=model,
        requested_model=requested,
        stream=upstream.get("stream") is True,
        store=context.store,
        include_encrypted_reasoning=ENCRYPTED_REASONING in context.include,
        tool_names=context.tools.names(),
        input_items=own_items,
        echo=_echo(body, context),
        dropped=dropped_fields(context.dropped, body),
    )


def _instructions(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, str):
        invalid_type("instructions", "a string", value)
    return plain_text(value)


# Converters --------------------------------------------------------------------------------------


def _stream(value: Any, name: str, context: ResponsesContext) -> Any:
    return True if boolean(value, name) else OMIT


def _tool_choice(value: Any, name: str, context: ResponsesContext) -> Any:
    if isinstance(value, str):
        return tool_choice_mode(value, name, context)
    if not isinstance(value, dict):
        invalid_type(name, "a string or an object", value)
    kind = value.get("type")
    if kind in ("function", "custom"):
        return _named(value.get("name"), f"{name}.name", name, context)
    if kind in ("web_search", "web_search_preview", "web_search_preview_2025_03_11"):
        if context.tools.web_search is None:
            invalid_value(f"{name}.type", f"{kind!r} is chosen, but no web search tool is defined.")
        return choose({"type": "tool", "name": WEB_SEARCH_NAME}, name, context)
    if kind == "allowed_tools":
        return _allowed_tools(value, name, context)
    if kind is None:
        missing(f"{name}.type")
    if not isinstance(kind, str):
        invalid_type(f"{name}.type", "a string", kind)
    unsupported_value(
        f"{name}.type",
        f"{kind!r} is not supported; use 'function', 'custom', 'web_search_preview', 'allowed_tools' or a string mode.",
    )


def _named(tool: Any, path: str, name: str, context: ResponsesContext) -> Any:
    """Force the client's tool `tool`: a top-level tool of that name, else the one namespace member
    of that name."""
    if isinstance(tool, str):
        claude = context.tools.by_client.get((None, tool))
        if claude is None:
            matches = [c for (namespace, member), c in context.tools.by_client.items() if member == tool]
            claude = matches[0] if len(matches) == 1 else None
        if claude is not None:
            return named_tool_choice(claude, path, name, context)
    return named_tool_choice(tool, path, name, context)  # its errors: missing, wrong type, undefined


def _allowed_tools(value: dict[str, Any], name: str, context: ResponsesContext) -> Any:
    """`allowed_tools` where Claude can say the same: every defined tool allowed (the mode alone),
    or exactly one, required (that tool forced). Narrowing the tools otherwise has no equivalent
    that keeps the prompt (and its cache) unchanged."""
    mode = value.get("mode")
    if mode not in ("auto", "required"):
        if mode is None:
            missing(f"{name}.mode")
        invalid_value(f"{name}.mode", f"{mode!r}. Supported values are: 'auto' and 'required'.")
    allowed = value.get("tools")
    if not isinstance(allowed, list):
        if allowed is None:
            missing(f"{name}.tools")
        invalid_type(f"{name}.tools", "an array", allowed)
    names = set()
    for k, tool in enumerate(allowed):
        path = f"{name}.tools[{k}]"
        if not isinstance(tool, dict):
            invalid_type(path, "an object", tool)
        kind = tool.get("type")
        if kind in ("web_search", "web_search_preview", "web_search_preview_2025_03_11"):
            names.add(WEB_SEARCH_NAME)
            continue
        tool_name = tool.get("name")
        if not isinstance(tool_name, str):
            if tool_name is None:
                missing(f"{path}.name")
            invalid_type(f"{path}.name", "a string", tool_name)
        namespace = tool.get("namespace")
        claude = context.tools.by_client.get((namespace if isinstance(namespace, str) else None, tool_name))
        if claude is None:
            invalid_value(f"{path}.name", f"no tool named {tool_name!r} is defined.")
        names.add(claude)
    defined = {tool["name"] for tool in context.upstream.get("tools", [])}
    if names == defined:
        return tool_choice_mode(mode, name, context)
    if len(names) == 1 and mode == "required":
        return choose({"type": "tool", "name": next(iter(names))}, name, context)
    unsupported_value(
        f"{name}.tools",
        "allowing only some of the defined tools is not supported; allow all of them, require exactly "
        "one, or send only the tools the model may call.",
    )


def _max_tool_calls(value: Any, name: str, context: ResponsesContext) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        invalid_type(name, "an integer", value)
    if value < 1:
        invalid_value(name, f"{value} is too small; expected at least 1.")
    # It bounds the calls of built-in tools; web search is the only one Claude runs here.
    if context.tools.web_search is not None:
        context.tools.web_search["max_uses"] = value
    return OMIT


_FORMATS: Final = "Supported values are: 'text', 'json_object' and 'json_schema'."


def _text_format(value: Any, name: str, context: ResponsesContext) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    kind = value.get("type")
    if kind == "text":
        return OMIT
    if kind == "json_object":
        json_object_instruction(name, context)
        return OMIT
    if kind == "json_schema":
        # The Responses API's format is flat: `schema` sits beside `type` (chat nests it). `name`
        # is required, as OpenAI requires it (the response echoes it); it has no Claude equivalent.
        required_string(value, "name", name)
        description = value.get("description")
        if description is not None and not isinstance(description, str):
            invalid_type(f"{name}.description", "a string", description)
        require_structured_outputs(f"{name}.type", context)
        json_schema_output(value, name, name, context)
        return OMIT
    if kind is None:
        missing(f"{name}.type")
    if not isinstance(kind, str):
        invalid_type(f"{name}.type", "a string", kind)
    invalid_value(f"{name}.type", f"{kind!r}. {_FORMATS}")


def _one_of(*values: str) -> Any:
    """A converter accepting only `values`, which adds nothing upstream (checked for the echo)."""
    listed = ", ".join(repr(v) for v in values[:-1]) + f" and {values[-1]!r}"

    def convert(value: Any, name: str, context: ResponsesContext) -> Any:
        if value not in values:
            if not isinstance(value, str):
                invalid_type(name, "a string", value)
            invalid_value(name, f"{value!r}. Supported values are: {listed}.")
        return OMIT

    return convert


_SUMMARIES: Final = ("auto", "concise", "detailed")
_check_summary = _one_of(*_SUMMARIES)
_check_verbosity = _one_of("low", "medium", "high")


def _verbosity(value: Any, name: str, context: ResponsesContext) -> Any:
    # Claude has no length control: effort steers thinking and tool use, not the answer's length.
    _check_verbosity(value, name, context)
    if value != "medium":  # OpenAI's default asks for nothing
        context.drop(name)
    return OMIT


def _reasoning_effort(value: Any, name: str, context: ResponsesContext) -> Any:
    return apply_reasoning_effort(value, name, context, max_tokens_param="max_output_tokens")


def _reasoning_summary(value: Any, name: str, context: ResponsesContext) -> Any:
    """A summary asks to see the reasoning: Claude's thinking `display: summarized` (its thinking
    text is already a summary on current models). It never turns thinking on by itself; a model
    that always thinks is asked to show it."""
    _check_summary(value, name, context)
    upstream = context.upstream
    thinking = upstream.get("thinking")
    if thinking is not None and thinking["type"] in ("adaptive", "enabled"):
        thinking["display"] = "summarized"
    elif thinking is None and context.caps.thinking_always_on:
        upstream["thinking"] = {"type": "adaptive", "display": "summarized"}
    elif thinking is None:
        # No reasoning effort: OpenAI's reasoning models think (and summarize) by default, Claude
        # does not think unless asked, so there is nothing to summarize.
        context.drop(name, "Claude does not think without a reasoning.effort, so there is no summary to show")
    return OMIT


def _include(value: Any, name: str, context: ResponsesContext) -> Any:
    if not isinstance(value, list):
        invalid_type(name, "an array of strings", value)
    for k, item in enumerate(value):
        if not isinstance(item, str):
            invalid_type(f"{name}[{k}]", "a string", item)
        if item == "message.output_text.logprobs":
            unsupported_value(f"{name}[{k}]", "log probabilities are not supported: Claude does not return them.")
    # Other includables name outputs of OpenAI's own tools, which never appear here: nothing to add.
    context.include = tuple(value)
    return OMIT


def _store(value: Any, name: str, context: ResponsesContext) -> Any:
    context.store = boolean(value, name)
    return OMIT


def _truncation(value: Any, name: str, context: ResponsesContext) -> Any:
    if value == "disabled":
        return OMIT
    if value == "auto":
        unsupported_value(
            name,
            "'auto' is not supported: the gateway does not drop the oldest items of a conversation that "
            "exceeds the context window. Use 'disabled' (the default) and shorten the input.",
        )
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    invalid_value(name, f"{value!r}. Supported values are: 'auto' and 'disabled'.")


_MAX_METADATA: Final = (16, 64, 512)  # pairs, key length, value length (OpenAI's limits)


def _metadata(value: Any, name: str, context: ResponsesContext) -> Any:
    pairs, key_length, value_length = _MAX_METADATA
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    if len(value) > pairs:
        invalid_value(name, f"at most {pairs} key-value pairs are allowed, got {len(value)}.")
    for key, item in value.items():
        if len(key) > key_length:
            invalid_value(name, f"keys are at most {key_length} characters long.")
        # Keys are any strings (dots, brackets, empty), so the error names `metadata` and quotes the key.
        if not isinstance(item, str):
            invalid_value(name, f"the value of key {key!r} must be a string, but got {json_type(item)}.")
        if len(item) > value_length:
            invalid_value(name, f"the value of key {key!r} is longer than {value_length} characters.")
    # Metadata describes the response for the client; nothing of it goes upstream.
    return OMIT


def _string(value: Any, name: str, context: ResponsesContext) -> Any:
    if not isinstance(value, str):
        invalid_type(name, "a string", value)
    return OMIT


def _stream_options(value: Any, name: str, context: ResponsesContext) -> Any:
    if not isinstance(value, dict):
        invalid_type(name, "an object", value)
    if value.get("include_obfuscation") is True:
        context.drop(f"{name}.include_obfuscation", "this gateway's events carry no obfuscation")
    return OMIT


def _is_false(value: Any) -> bool:
    return value is False


def _is_falsy(value: Any) -> bool:
    return not value


# Accepted and dropped: no upstream equivalent, and the answer is still right without them.
_IGNORED: Final[Param[ResponsesContext]] = Param()

# Order matters where one entry reads another's result: the output limit and the tool choice before
# reasoning.effort, which checks them (and may raise the default max_tokens); the tool choice before
# parallel_tool_calls, which amends it; reasoning.effort before reasoning.summary, which amends the
# thinking it chose.
PARAMS: Final[dict[str, Param[ResponsesContext]]] = {
    "max_output_tokens": Param("max_tokens", max_tokens, default=default_max_tokens),
    "temperature": Param("temperature", temperature),
    "top_p": Param("top_p", top_p),
    "safety_identifier": Param("metadata", user_id),
    "user": Param("metadata", user_id, yields_to="safety_identifier"),
    "stream": Param("stream", _stream),
    "tool_choice": Param("tool_choice", _tool_choice),
    "parallel_tool_calls": Param("tool_choice", parallel_tool_calls),
    "max_tool_calls": Param(None, _max_tool_calls),
    "text.format": Param(None, _text_format),
    "text.verbosity": Param(None, _verbosity),
    "reasoning.effort": Param(None, _reasoning_effort),
    "reasoning.summary": Param(None, _reasoning_summary),
    "reasoning.generate_summary": Param(None, _reasoning_summary, yields_to="reasoning.summary"),  # deprecated name
    "service_tier": Param("service_tier", service_tier),
    "prompt_cache_retention": Param(None, prompt_cache_retention),
    "prompt_cache_options": Param(None, prompt_cache_options),
    "include": Param(None, _include),
    "store": Param(None, _store),
    "truncation": Param(None, _truncation),
    "metadata": Param(None, _metadata),
    "previous_response_id": Param(None, _string),
    "background": Param(
        None,
        refuse(
            "is not supported: this gateway answers every response in the request that asks for it.", harmless=_is_false
        ),
    ),
    "conversation": Param(None, refuse("is not supported: use previous_response_id to continue a conversation.")),
    "prompt": Param(
        None, refuse("is not supported: reusable prompts live on OpenAI's platform; send the input itself.")
    ),
    "top_logprobs": Param(
        None, refuse("is not supported: Claude does not return log probabilities.", harmless=_is_falsy)
    ),
    "moderation": Param(None, refuse("is not supported: this gateway cannot run OpenAI moderation models.")),
    # Claude's cache is keyed by the exact prompt prefix alone; there is no routing key to set.
    "prompt_cache_key": _IGNORED,
    "client_metadata": _IGNORED,  # Codex's own telemetry
    "stream_options": Param(None, _stream_options),
}


# The echo ----------------------------------------------------------------------------------------


def _echo(body: dict[str, Any], context: ResponsesContext) -> dict[str, Any]:
    """The request fields a Response object repeats, with OpenAI's defaults for those not sent.
    Every value was checked by the table above."""
    text = body.get("text") or {}
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "tools": context.tools.echo,
        "tool_choice": body.get("tool_choice", "auto") or "auto",
        "parallel_tool_calls": _given(body, "parallel_tool_calls", True),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
        "reasoning": {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary") or reasoning.get("generate_summary"),
        },
        "metadata": body.get("metadata") or {},
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "previous_response_id": body.get("previous_response_id"),
        "store": context.store,
        "background": False,
        "temperature": _given(body, "temperature", 1.0),
        "top_p": _given(body, "top_p", 1.0),
        "top_logprobs": _typed(body, "top_logprobs", int, 0),
        "truncation": body.get("truncation") or "disabled",
        "user": _typed(body, "user", str, None),  # unchecked when safety_identifier wins
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": _typed(body, "prompt_cache_key", str, None),  # ignored, so unchecked
        "prompt_cache_retention": body.get("prompt_cache_retention"),
        "service_tier": body.get("service_tier") or "auto",
    }


def _given(body: dict[str, Any], key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def _typed(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """A field the table does not check (ignored, or yielding to another): echoed only when it has
    the type the Response declares."""
    value = body.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else default
