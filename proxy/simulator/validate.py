"""Request validation: the Messages API's request shapes as data tables, then the rules beyond them.

The tables were read off the ``anthropic`` SDK's request types (``message_create_params.py``,
``message_count_tokens_params.py`` and the ``*_param.py`` files they import). The SDK is a test
dependency only: ``tests/test_simulator.py`` holds these tables and the simulator's verdicts up against it.

A table entry is a :data:`Check` -- a function of the JSON value and its dotted path that raises a 400
when the value does not fit. :class:`Shape` is an object with its required and optional fields (any other
field is refused); :class:`Tagged` is a union told apart by one field, ``type`` (or ``role`` for messages).
Errors read the way the API renders them. The first problem found is the one reported, a shape's own
fields in table order before any unknown field:

    messages.0.content.1.text.text: Input should be a valid string      (the block's tag joins the path)
    messages.0.content.1.type: Input tag 'txet' found using 'type' does not match any of the expected tags: ...
    tools.0.custom.name: Field required
    thinking.enabled.budget_tokens: Input should be a valid integer
    metadata.user: Extra inputs are not permitted
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from proxy.models import EFFORT_LEVELS, ModelCaps, ModelTable


class SimError(Exception):
    """An error the simulator answers in Anthropic's shape."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> SimError:
    return SimError(400, "invalid_request_error", message)


# --- checks: the building blocks of the tables ---------------------------------------------------

Check = Callable[[Any, str], None]
"""Checks one JSON value found at a dotted path; raises a 400 :class:`SimError` if it does not fit."""
Fields = Mapping[str, Check]


def _at(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _refuse(path: str, problem: str) -> NoReturn:
    raise invalid(f"{path}: {problem}" if path else problem)


def _either(names: Iterable[str]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``: how pydantic lists what it expected."""
    items = list(names)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        _refuse(path, "Input should be a valid string")


def integer(value: Any, path: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _refuse(path, "Input should be a valid integer")


def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        _refuse(path, "Input should be a valid boolean")


def json_object(value: Any, path: str) -> None:
    """Any JSON object (``dict[str, object]`` in the SDK): a tool's input, a JSON schema."""
    if not isinstance(value, dict):
        _refuse(path, "Input should be a valid dictionary")


def literal(*options: str) -> Check:
    expected = "Input should be " + _either(repr(option) for option in options)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, str) or value not in options:
            _refuse(path, expected)

    return check


def nullable(check: Check) -> Check:
    def check_or_null(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return check_or_null


def list_of(item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            _refuse(path, "Input should be a valid list")
        for index, element in enumerate(value):
            item(element, _at(path, index))

    return check


_JSON_TYPES: Final[dict[type, str]] = {str: "string", list: "list", dict: "dictionary"}


def by_json_type(branches: Mapping[type, Check]) -> Check:
    """A union whose branch the value's JSON type picks, such as ``str | Iterable[TextBlockParam]``."""
    expected = "Input should be " + _either(f"a valid {_JSON_TYPES[kind]}" for kind in branches)

    def check(value: Any, path: str) -> None:
        for kind, branch in branches.items():
            if isinstance(value, kind):
                branch(value, path)
                return
        _refuse(path, expected)

    return check


@dataclass(frozen=True)
class Shape:
    """A JSON object: each required and optional field with its check. Any other field is refused."""

    required: Fields
    optional: Fields = field(default_factory=dict)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(self.required) | frozenset(self.optional)

    def __call__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _refuse(path, "Input should be a valid dictionary")
        for key, check in self.required.items():
            if key not in value:
                _refuse(_at(path, key), "Field required")
            check(value[key], _at(path, key))
        for key, check in self.optional.items():
            if key in value:
                check(value[key], _at(path, key))
        for key in value:
            if key not in self.required and key not in self.optional:
                _refuse(_at(path, key), "Extra inputs are not permitted")


@dataclass(frozen=True)
class Tagged:
    """A union of shapes told apart by one field. The tag joins the path of errors inside the branch
    (``tools.0.custom.name``), except for messages, whose ``role`` the API leaves out of the path."""

    branches: Mapping[str, Shape]
    key: str = "type"
    default: str | None = None  # the branch for an object without the tag (a tool without "type")
    tag_in_path: bool = True

    def __call__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _refuse(path, "Input should be a valid dictionary or object to extract fields from")
        tag = value.get(self.key)
        if tag is None and self.default is not None:
            tag = self.default
        elif self.key not in value:
            _refuse(path, f"Unable to extract tag using discriminator {self.key!r}")
        if not isinstance(tag, str) or tag not in self.branches:
            expected = ", ".join(repr(name) for name in self.branches)
            _refuse(
                _at(path, self.key),
                f"Input tag '{tag}' found using {self.key!r} does not match any of the expected tags: {expected}",
            )
        self.branches[tag](value, _at(path, tag) if self.tag_in_path else path)


def _tag(name: str, required: Fields, optional: Fields | None = None) -> Shape:
    """A branch of a tagged union: its ``type`` is ``name``; then its own fields."""
    return Shape({"type": literal(name), **required}, optional or {})


# --- the request's shapes, read off the SDK's *_param.py types ---------------------------------------
#
# Where the SDK also accepts a response block in a request (``TextBlock`` beside ``TextBlockParam``),
# the table takes the union of the two: a response citation may omit ``document_title`` and carry
# ``file_id``; a response ``tool_use`` block's ``caller`` may be null.

MODEL_IDS: Final = (
    # ModelParam's known ids, in the SDK's order (newest first); GET /v1/models lists them.
    "claude-fable-5-2",
    "claude-mythos-5-2",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-fable-5-1",
    "claude-opus-5-5",
    "claude-mythos-5-1",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-mythos-preview",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
)

CACHE_CONTROL: Final = nullable(Shape({"type": literal("ephemeral")}, {"ttl": literal("5m", "1h")}))
CITATIONS_CONFIG: Final = Shape({}, {"enabled": boolean})
CALLER: Final = nullable(
    Tagged(
        {
            "direct": _tag("direct", {}),
            "code_execution_20250825": _tag("code_execution_20250825", {"tool_id": string}),
            "code_execution_20260120": _tag("code_execution_20260120", {"tool_id": string}),
        }
    )
)

_IN_DOCUMENT: Final[Fields] = {"document_title": nullable(string), "file_id": nullable(string)}
_TITLE: Final[Fields] = {"title": nullable(string)}
CITATION: Final = Tagged(
    {
        "char_location": _tag(
            "char_location",
            {"cited_text": string, "document_index": integer, "start_char_index": integer, "end_char_index": integer},
            _IN_DOCUMENT,
        ),
        "page_location": _tag(
            "page_location",
            {"cited_text": string, "document_index": integer, "start_page_number": integer, "end_page_number": integer},
            _IN_DOCUMENT,
        ),
        "content_block_location": _tag(
            "content_block_location",
            {"cited_text": string, "document_index": integer, "start_block_index": integer, "end_block_index": integer},
            _IN_DOCUMENT,
        ),
        "web_search_result_location": _tag(
            "web_search_result_location", {"cited_text": string, "encrypted_index": string, "url": string}, _TITLE
        ),
        "search_result_location": _tag(
            "search_result_location",
            {
                "cited_text": string,
                "search_result_index": integer,
                "source": string,
                "start_block_index": integer,
                "end_block_index": integer,
            },
            _TITLE,
        ),
    }
)

# --- content blocks

TEXT: Final = _tag("text", {"text": string}, {"cache_control": CACHE_CONTROL, "citations": nullable(list_of(CITATION))})

IMAGE_MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
IMAGE: Final = _tag(
    "image",
    {
        "source": Tagged(
            {
                "base64": _tag("base64", {"media_type": literal(*IMAGE_MEDIA_TYPES), "data": string}),
                "url": _tag("url", {"url": string}),
                "file": _tag("file", {"file_id": string}),
            }
        )
    },
    {
        "cache_control": CACHE_CONTROL,
        "transformations": nullable(Shape({}, {"oversized_image": literal("downsize", "error")})),
    },
)

DOCUMENT: Final = _tag(
    "document",
    {
        "source": Tagged(
            {
                "base64": _tag("base64", {"media_type": literal("application/pdf"), "data": string}),
                "text": _tag("text", {"media_type": literal("text/plain"), "data": string}),
                "content": _tag(
                    "content",
                    {"content": by_json_type({str: string, list: list_of(Tagged({"text": TEXT, "image": IMAGE}))})},
                ),
                "url": _tag("url", {"url": string}),
                "file": _tag("file", {"file_id": string}),
            }
        )
    },
    {
        "cache_control": CACHE_CONTROL,
        "citations": nullable(CITATIONS_CONFIG),
        "context": nullable(string),
        "title": nullable(string),
    },
)

SEARCH_RESULT: Final = _tag(
    "search_result",
    {"content": list_of(TEXT), "source": string, "title": string},
    {"cache_control": CACHE_CONTROL, "citations": CITATIONS_CONFIG},
)

_DOWNLOAD: Final[Fields] = {"download_id": string, "url": string}
BROWSER_STATE: Final = _tag(
    "browser_state",
    {"tabs": list_of(Shape({"tab_id": string, "title": string, "url": string}, {"active": boolean}))},
    {
        "cache_control": CACHE_CONTROL,
        "state_changes": nullable(
            list_of(
                Tagged(
                    {
                        "tab_opened": _tag("tab_opened", {"tab_id": string}),
                        "download_started": _tag("download_started", _DOWNLOAD),
                        "download_completed": _tag(
                            "download_completed",
                            _DOWNLOAD,
                            {"path": nullable(string), "size_bytes": nullable(integer)},
                        ),
                        "download_failed": _tag("download_failed", _DOWNLOAD, {"error": nullable(string)}),
                    }
                )
            )
        ),
    },
)

TOOL_RESULT_CONTENT: Final = Tagged(
    {
        "text": TEXT,
        "image": IMAGE,
        "search_result": SEARCH_RESULT,
        "document": DOCUMENT,
        "tool_reference": _tag("tool_reference", {"tool_name": string}, {"cache_control": CACHE_CONTROL}),
        "browser_state": BROWSER_STATE,
    }
)

SERVER_TOOL_NAMES: Final = (
    "web_search",
    "web_fetch",
    "code_execution",
    "bash_code_execution",
    "text_editor_code_execution",
    "tool_search_tool_regex",
    "tool_search_tool_bm25",
)


def _server_tool_result(name: str, content: Check, optional: Fields) -> Shape:
    # A server tool's result is replayed as the API sent it; only its outline is checked here.
    return _tag(name, {"tool_use_id": string, "content": content}, {"cache_control": CACHE_CONTROL, **optional})


BLOCKS: Final = {
    "text": TEXT,
    "image": IMAGE,
    "document": DOCUMENT,
    "search_result": SEARCH_RESULT,
    "thinking": _tag("thinking", {"thinking": string, "signature": string}),
    "redacted_thinking": _tag("redacted_thinking", {"data": string}),
    "tool_use": _tag(
        "tool_use",
        {"id": string, "name": string, "input": json_object},
        {"cache_control": CACHE_CONTROL, "caller": CALLER, "toolset_name": nullable(string)},
    ),
    "tool_result": _tag(
        "tool_result",
        {"tool_use_id": string},
        {
            "cache_control": CACHE_CONTROL,
            "content": by_json_type({str: string, list: list_of(TOOL_RESULT_CONTENT)}),
            "is_error": boolean,
            "toolset_name": nullable(string),
        },
    ),
    "server_tool_use": _tag(
        "server_tool_use",
        {"id": string, "name": literal(*SERVER_TOOL_NAMES), "input": json_object},
        {"cache_control": CACHE_CONTROL, "caller": CALLER},
    ),
    "web_search_tool_result": _server_tool_result(
        "web_search_tool_result", by_json_type({list: list_of(json_object), dict: json_object}), {"caller": CALLER}
    ),
    "web_fetch_tool_result": _server_tool_result("web_fetch_tool_result", json_object, {"caller": CALLER}),
    "code_execution_tool_result": _server_tool_result("code_execution_tool_result", json_object, {}),
    "bash_code_execution_tool_result": _server_tool_result("bash_code_execution_tool_result", json_object, {}),
    "text_editor_code_execution_tool_result": _server_tool_result(
        "text_editor_code_execution_tool_result", json_object, {}
    ),
    "tool_search_tool_result": _server_tool_result("tool_search_tool_result", json_object, {}),
    "container_upload": _tag("container_upload", {"file_id": string}, {"cache_control": CACHE_CONTROL}),
}
BLOCK: Final = Tagged(BLOCKS)

# --- messages: the role picks what the content may hold

ROLES: Final = {
    "user": Shape({"role": literal("user"), "content": by_json_type({str: string, list: list_of(BLOCK)})}),
    "assistant": Shape({"role": literal("assistant"), "content": by_json_type({str: string, list: list_of(BLOCK)})}),
    "system": Shape({"role": literal("system"), "content": by_json_type({str: string, list: list_of(TEXT)})}),
}
MESSAGE: Final = Tagged(ROLES, key="role", tag_in_path=False)

# --- tools: a custom tool (no "type", or "custom"), or one of the API's own tools

_TOOL_OPTIONS: Final[Fields] = {
    "allowed_callers": list_of(
        literal("direct", "code_execution_20250825", "code_execution_20260120", "code_execution_20260521")
    ),
    "cache_control": CACHE_CONTROL,
    "defer_loading": boolean,
    "strict": boolean,
}
_EXAMPLES: Final[Fields] = {"input_examples": list_of(json_object)}
CUSTOM_TOOL: Final = Shape(
    {"name": string, "input_schema": json_object},
    {
        "type": nullable(literal("custom")),
        **_TOOL_OPTIONS,
        "description": string,
        "eager_input_streaming": nullable(boolean),
        **_EXAMPLES,
    },
)

_DOMAINS: Final[Fields] = {
    "allowed_domains": nullable(list_of(string)),
    "blocked_domains": nullable(list_of(string)),
    "max_uses": nullable(integer),
}
_WEB_SEARCH: Final[Fields] = {
    **_DOMAINS,
    "user_location": nullable(
        Shape(
            {"type": literal("approximate")},
            {
                "city": nullable(string),
                "country": nullable(string),
                "region": nullable(string),
                "timezone": nullable(string),
            },
        )
    ),
}
_URL_SOURCE_TOOLS: Final[Fields] = {"tools": list_of(Shape({"type": literal("tool_reference"), "name": string}))}
_ALL_OR_NONE: Final = {"all": _tag("all", {}), "none": _tag("none", {})}
_URL_SOURCE: Final = Tagged(
    {**_ALL_OR_NONE, "only": _tag("only", _URL_SOURCE_TOOLS), "except": _tag("except", _URL_SOURCE_TOOLS)}
)
_WEB_FETCH: Final = {
    **_DOMAINS,
    "citations": nullable(CITATIONS_CONFIG),
    "max_content_tokens": nullable(integer),
    "url_sources": nullable(
        Shape(
            {},
            {
                "client_tool_results": _URL_SOURCE,
                "server_tool_results": _URL_SOURCE,
                "user_input": Tagged(_ALL_OR_NONE),
            },
        )
    ),
}
_CACHED: Final[Fields] = {"use_cache": boolean}
_INCLUSION: Final[Fields] = {"response_inclusion": literal("full", "excluded")}

SERVER_TOOLS: Final[dict[str, tuple[str, Fields]]] = {
    # type: (its fixed name, its options beyond allowed_callers / cache_control / defer_loading / strict)
    "bash_20250124": ("bash", _EXAMPLES),
    "code_execution_20250522": ("code_execution", {}),
    "code_execution_20250825": ("code_execution", {}),
    "code_execution_20260120": ("code_execution", {}),
    "code_execution_20260521": ("code_execution", {}),
    "memory_20250818": ("memory", _EXAMPLES),
    "text_editor_20250124": ("str_replace_editor", _EXAMPLES),
    "text_editor_20250429": ("str_replace_based_edit_tool", _EXAMPLES),
    "text_editor_20250728": ("str_replace_based_edit_tool", {**_EXAMPLES, "max_characters": nullable(integer)}),
    "web_search_20250305": ("web_search", _WEB_SEARCH),
    "web_search_20260209": ("web_search", _WEB_SEARCH),
    "web_search_20260318": ("web_search", {**_WEB_SEARCH, **_INCLUSION}),
    "web_fetch_20250910": ("web_fetch", _WEB_FETCH),
    "web_fetch_20260209": ("web_fetch", _WEB_FETCH),
    "web_fetch_20260309": ("web_fetch", {**_WEB_FETCH, **_CACHED}),
    "web_fetch_20260318": ("web_fetch", {**_WEB_FETCH, **_CACHED, **_INCLUSION}),
    "tool_search_tool_bm25": ("tool_search_tool_bm25", {}),
    "tool_search_tool_bm25_20251119": ("tool_search_tool_bm25", {}),
    "tool_search_tool_regex": ("tool_search_tool_regex", {}),
    "tool_search_tool_regex_20251119": ("tool_search_tool_regex", {}),
}
# The toolsets' per-action ``configs`` are checked only for being an object.
TOOLSETS: Final = ("browser_toolset_20260801", "computer_toolset_20260801")

TOOL: Final = Tagged(
    {
        "custom": CUSTOM_TOOL,
        **{
            kind: _tag(kind, {"name": literal(name)}, {**_TOOL_OPTIONS, **options})
            for kind, (name, options) in SERVER_TOOLS.items()
        },
        **{
            kind: _tag(kind, {}, {"cache_control": CACHE_CONTROL, "configs": nullable(json_object)})
            for kind in TOOLSETS
        },
    },
    default="custom",
)

# --- request options

_PARALLEL: Final[Fields] = {"disable_parallel_tool_use": boolean}
TOOL_CHOICE: Final = Tagged(
    {
        "auto": _tag("auto", {}, _PARALLEL),
        "any": _tag("any", {}, _PARALLEL),
        "tool": _tag("tool", {"name": string}, _PARALLEL),
        "none": _tag("none", {}),
    }
)

_DISPLAY: Final[Fields] = {"display": nullable(literal("summarized", "omitted"))}
THINKING_CONFIG: Final = Tagged(
    {
        "enabled": _tag("enabled", {"budget_tokens": integer}, _DISPLAY),
        "adaptive": _tag("adaptive", {}, _DISPLAY),
        "between_tools": _tag("between_tools", {}),
        "disabled": _tag("disabled", {}),
    }
)

OUTPUT_CONFIG: Final = Shape(
    {},
    {
        "effort": nullable(literal("low", "medium", "high", "xhigh", "max")),
        "format": nullable(Shape({"type": literal("json_schema"), "schema": json_object})),
    },
)
METADATA: Final = Shape({}, {"user_id": nullable(string)})
CONTAINER: Final = Shape(
    {},
    {
        "id": nullable(string),
        "skills": nullable(
            list_of(Shape({"skill_id": string, "type": literal("anthropic", "custom")}, {"version": string}))
        ),
    },
)

# --- the two request bodies (``stream`` is taken off a create request before it is checked)

_SHARED: Final[Fields] = {
    "cache_control": CACHE_CONTROL,
    "output_config": OUTPUT_CONFIG,
    "speed": nullable(literal("standard", "fast")),
    "system": by_json_type({str: string, list: list_of(TEXT)}),
    "thinking": THINKING_CONFIG,
    "tool_choice": TOOL_CHOICE,
    "tools": list_of(TOOL),
    "user_profile_id": string,
    "workspace_id": string,
}
CREATE: Final = Shape(
    {"model": string, "max_tokens": integer, "messages": list_of(MESSAGE)},
    {
        **_SHARED,
        "container": nullable(by_json_type({str: string, dict: CONTAINER})),
        "diagnostics": nullable(Shape({}, {"previous_message_id": nullable(string)})),
        "inference_geo": nullable(string),
        "metadata": METADATA,
        "service_tier": literal("auto", "standard_only"),
        "stop_sequences": list_of(string),
    },
)
COUNT_TOKENS: Final = Shape({"model": string, "messages": list_of(MESSAGE)}, _SHARED)


# --- the rules beyond the types ----------------------------------------------------------------

_ID = re.compile(r"[a-zA-Z0-9_-]+")
_ID_PATTERN = "String should match pattern '^[a-zA-Z0-9_-]+$'"
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
_NO_PREFILL = "This model does not support assistant message prefill. The conversation must end with a user message."


def is_custom_tool(tool: dict[str, Any]) -> bool:
    return tool.get("type") in (None, "custom")


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content)


def check_model(model: str, table: ModelTable) -> ModelCaps:
    """The model's capabilities; an id outside ``claude-*`` or a retired model is a 404."""
    if not model.startswith("claude-"):
        raise SimError(404, "not_found_error", f"model: {model}")
    caps = table.capabilities(model)
    if caps.lifecycle == "retired":
        successor = f" Use {caps.successor} instead." if caps.successor else ""
        raise SimError(404, "not_found_error", f"model: {model} has been retired.{successor}")
    return caps


def _check_sampling(body: dict[str, Any], caps: ModelCaps) -> None:
    for name in sorted(caps.sampling):
        if name not in body:
            continue
        value = body[name]
        if name == "top_k":
            if not isinstance(value, int) or isinstance(value, bool):
                raise invalid("top_k: Input should be a valid integer")
            if value < 0:
                raise invalid("top_k: Input should be greater than or equal to 0")
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise invalid(f"{name}: Input should be a valid number")
        if not 0 <= value <= 1:
            bound = "less than or equal to 1" if value > 1 else "greater than or equal to 0"
            raise invalid(f"{name}: Input should be {bound}")


def _check_messages(body: dict[str, Any]) -> None:
    system = body.get("system")
    if isinstance(system, list):
        for block in system:
            if not block["text"]:
                raise invalid("system: text content blocks must be non-empty")
            if not block["text"].strip():
                raise invalid("system: text content blocks must contain non-whitespace text")
    messages: list[dict[str, Any]] = body["messages"]
    if not messages:
        raise invalid("messages: at least one message is required")
    last = len(messages) - 1
    for i, message in enumerate(messages):
        role = message["role"]
        final_assistant = i == last and role == "assistant"
        content = message["content"]
        if not content and not final_assistant:
            raise invalid(
                f"messages.{i}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        if isinstance(content, str):
            if content and not content.strip() and not final_assistant:
                raise invalid("messages: text content blocks must contain non-whitespace text")
            continue
        for j, block in enumerate(content):
            kind = block["type"]
            if kind == "text":
                if not block["text"]:
                    raise invalid("messages: text content blocks must be non-empty")
                if not block["text"].strip() and not final_assistant:
                    raise invalid("messages: text content blocks must contain non-whitespace text")
            elif kind == "tool_use":
                if role != "assistant":
                    raise invalid(f"messages.{i}.content.{j}: `tool_use` blocks can only be in `assistant` messages")
                if not _ID.fullmatch(block["id"]):
                    raise invalid(f"messages.{i}.content.{j}.tool_use.id: {_ID_PATTERN}")
            elif kind == "tool_result":
                if role != "user":
                    raise invalid(f"messages.{i}.content.{j}: `tool_result` blocks can only be in `user` messages")
                if not _ID.fullmatch(block["tool_use_id"]):
                    raise invalid(f"messages.{i}.content.{j}.tool_result.tool_use_id: {_ID_PATTERN}")
            elif kind in ("thinking", "redacted_thinking") and role != "assistant":
                raise invalid(f"messages.{i}.content.{j}: `{kind}` blocks can only be in `assistant` messages")
        kinds = [block["type"] for block in content]
        if role == "assistant" and {"thinking", "redacted_thinking"} & set(kinds):
            if kinds[0] not in ("thinking", "redacted_thinking"):
                raise invalid(
                    f"messages.{i}.content.0: If an assistant message contains any thinking blocks, the "
                    f"first block must be thinking or redacted_thinking. Found {kinds[0]}."
                )
            if final_assistant and kinds[-1] in ("thinking", "redacted_thinking"):
                raise invalid(f"messages.{i}: The final block in an assistant message cannot be `{kinds[-1]}`.")


def _turns(messages: list[dict[str, Any]]) -> list[tuple[str, list[tuple[int, int, dict[str, Any]]]]]:
    """Consecutive messages of one role form one turn, as the API combines them."""
    turns: list[tuple[str, list[tuple[int, int, dict[str, Any]]]]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            continue
        blocks = [(i, j, block) for j, block in enumerate(blocks_of(message))]
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return turns


def _check_tool_pairing(messages: list[dict[str, Any]]) -> None:
    turns = _turns(messages)
    previous_ids: set[str] = set()
    for t, (role, blocks) in enumerate(turns):
        if role == "user":
            for i, j, block in blocks:
                if block["type"] == "tool_result" and block["tool_use_id"] not in previous_ids:
                    raise invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                        f"blocks: {block['tool_use_id']}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message."
                    )
            previous_ids = set()
            continue
        uses = [(i, j, block["id"]) for i, j, block in blocks if block["type"] == "tool_use"]
        seen: set[str] = set()
        for i, j, tool_id in uses:
            if tool_id in seen:
                raise invalid(f"messages.{i}.content.{j}: `tool_use` ids must be unique")
            seen.add(tool_id)
        answered: set[str] = set()
        if t + 1 < len(turns):
            for _, _, block in turns[t + 1][1]:
                if block["type"] != "tool_result":
                    break
                answered.add(block["tool_use_id"])
        missing = [tool_id for _, _, tool_id in uses if tool_id not in answered]
        if missing:
            index = next(i for i, _, tool_id in uses if tool_id == missing[0])
            raise invalid(
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message."
            )
        previous_ids = seen


def _check_tools(body: dict[str, Any]) -> None:
    names: set[str] = set()
    for k, tool in enumerate(body.get("tools") or ()):
        if not is_custom_tool(tool):
            continue
        if not _TOOL_NAME.fullmatch(tool["name"]):
            raise invalid(f"tools.{k}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if tool["input_schema"].get("type") != "object":
            raise invalid(f"tools.{k}.custom.input_schema.type: Input should be 'object'")
        if tool["name"] in names:
            raise invalid("tools: Tool names must be unique.")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice and choice["type"] in ("any", "tool"):
        if not body.get("tools"):
            raise invalid("tool_choice may only be specified while providing tools.")
        if choice["type"] == "tool" and choice["name"] not in names:
            raise invalid(f"tool_choice.name: Tool '{choice['name']}' not found in `tools`")


def _check_thinking(body: dict[str, Any], caps: ModelCaps, max_tokens: int | None) -> None:
    thinking = body.get("thinking")
    mode = thinking["type"] if thinking else "disabled"
    messages = [m for m in body["messages"] if m["role"] != "system"]
    if mode != "disabled":
        # between_tools is an adaptive variant: accepted wherever adaptive thinking is.
        effective = "adaptive" if mode == "between_tools" else mode
        if effective not in caps.thinking:
            hint = (
                ' Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
                if "adaptive" in caps.thinking
                else ""
            )
            raise invalid(f'"thinking.type.{mode}" is not supported for this model.{hint}')
        if mode == "enabled":
            budget = thinking["budget_tokens"] if thinking else 0
            if budget < 1024:
                raise invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if max_tokens is not None and budget >= max_tokens:
                raise invalid(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                    f"documentation at {_THINKING_DOCS}#max-tokens-and-context-window-size"
                )
        choice = body.get("tool_choice")
        if choice and choice["type"] in ("any", "tool"):
            raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
    if not messages:
        return
    final = messages[-1]
    in_tool_loop = final["role"] == "user" and any(b["type"] == "tool_result" for b in blocks_of(final))
    if mode == "enabled" and (final["role"] == "assistant" or in_tool_loop):
        all_messages = body["messages"]
        index = next((i for i in reversed(range(len(all_messages))) if all_messages[i]["role"] == "assistant"), None)
        if index is not None:
            blocks = blocks_of(body["messages"][index])
            kind = blocks[0]["type"] if blocks else "text"
            if kind not in ("thinking", "redacted_thinking"):
                raise invalid(
                    f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                    f"`{kind}`. When `thinking` is enabled, a final `assistant` message must start with a "
                    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
                    "recommend you include thinking blocks from previous turns. To avoid this requirement, "
                    f"disable `thinking`. Please consult our documentation at {_THINKING_DOCS}"
                )
    if mode == "disabled" and final["role"] == "assistant":
        index = len(body["messages"]) - 1
        for j, block in enumerate(blocks_of(final)):
            if block["type"] in ("thinking", "redacted_thinking"):
                raise invalid(
                    f"messages.{index}.content.{j}: When thinking is disabled, an `assistant` message in the "
                    "final position cannot contain `thinking`. To use thinking blocks, enable `thinking` in "
                    "your request."
                )


_THINKING_OFF: Final = ("disabled", "between_tools")


def _check_model_rules(body: dict[str, Any], caps: ModelCaps) -> None:
    """What a model refuses beyond its thinking modes: forced tool use where the model does not
    force tools, thinking turned off where it always thinks, and, with thinking off, an effort level
    outside ``caps.effort_without_thinking``."""
    choice = body.get("tool_choice")
    if choice and choice["type"] in ("any", "tool") and not caps.forced_tool_choice:
        raise invalid(
            f"tool_choice.type: '{choice['type']}' is not supported for this model. Forced tool use is not "
            "available; use 'auto' or 'none'."
        )
    thinking = body.get("thinking")
    if thinking and thinking["type"] == "disabled" and "disabled" not in caps.thinking:
        raise invalid(
            '"thinking.type.disabled" is not supported for this model. Use "thinking.type.adaptive" and '
            '"output_config.effort" to control thinking behavior.'
        )
    effort = (body.get("output_config") or {}).get("effort")
    if effort is None:
        return
    off = thinking["type"] in _THINKING_OFF if thinking else not caps.thinking & {"adaptive", "enabled"}
    if off and caps.effort_without_thinking is not None and effort not in caps.effort_without_thinking:
        allowed = ", ".join(f"'{level}'" for level in EFFORT_LEVELS if level in caps.effort_without_thinking)
        raise invalid(
            f"output_config.effort: '{effort}' is not supported while thinking is disabled on this model "
            f"(accepted: {allowed}). Lower the effort or enable thinking."
        )


def _check_prefill(body: dict[str, Any], caps: ModelCaps) -> None:
    messages = body["messages"]
    final = messages[-1]
    if final["role"] != "assistant":
        return
    if not caps.prefill:
        raise invalid(_NO_PREFILL)
    blocks = blocks_of(final)
    if blocks and blocks[-1]["type"] == "text" and blocks[-1]["text"] != blocks[-1]["text"].rstrip():
        raise invalid("messages: final assistant content cannot end with trailing whitespace")


def check_fields(fields: Shape, body: dict[str, Any], extra_allowed: frozenset[str]) -> None:
    """Check a request body against its shape; ``extra_allowed`` fields are left to the caller."""
    fields({key: value for key, value in body.items() if key not in extra_allowed}, "")


def validate_create(body: Any, table: ModelTable) -> tuple[dict[str, Any], ModelCaps, bool]:
    """Check a ``POST /v1/messages`` body; returns the body without ``stream``, the caps, and ``stream``."""
    if not isinstance(body, dict):
        raise invalid("Input should be a valid dictionary or object to extract fields from")
    model = body.get("model")
    caps = table.capabilities(model) if isinstance(model, str) and model.startswith("claude-") else None
    sampling = frozenset(caps.sampling) if caps else frozenset()
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean")
    request = {key: value for key, value in body.items() if key != "stream"}
    check_fields(CREATE, request, sampling)
    caps = check_model(request["model"], table)
    max_tokens: int = request["max_tokens"]
    if max_tokens < 0:
        raise invalid("max_tokens: Input should be greater than or equal to 0")
    if max_tokens > caps.max_output_tokens:
        raise invalid(
            f"max_tokens: {max_tokens} > {caps.max_output_tokens}, which is the maximum allowed number of "
            f"output tokens for {request['model']}"
        )
    _check_sampling(request, caps)
    _check_messages(request)
    _check_prefill(request, caps)
    _check_tool_pairing(request["messages"])
    _check_tools(request)
    _check_thinking(request, caps, max_tokens)
    _check_model_rules(request, caps)
    return request, caps, stream


def validate_count(body: Any, table: ModelTable) -> dict[str, Any]:
    """Check a ``POST /v1/messages/count_tokens`` body."""
    if not isinstance(body, dict):
        raise invalid("Input should be a valid dictionary or object to extract fields from")
    check_fields(COUNT_TOKENS, body, frozenset())
    caps = check_model(body["model"], table)
    _check_messages(body)
    _check_tool_pairing(body["messages"])
    _check_tools(body)
    _check_thinking(body, caps, None)
    _check_model_rules(body, caps)
    return body
