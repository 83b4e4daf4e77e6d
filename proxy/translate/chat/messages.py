"""OpenAI chat `messages` → Messages API `system` and `messages` (design §2).

One small function per chat role and per content part type: each reads chat's own shapes and
hands blocks (`claude.blocks`) to a `claude.turns.Conversation`, which owns merging and the
checks on the last turn. Chat's own rules here: system and developer messages are hoisted into
`system`; legacy `function_call`s get ids from their message index and `function` messages answer
the most recent unanswered call of their name; an echoed `refusal` is text. What a message asks
for that Claude cannot do as asked (a participant `name`, an image `detail`) is given to `drop`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NoReturn

from proxy.translate.checks import (
    check_length,
    invalid_type,
    invalid_value,
    missing,
    required,
    required_string,
    required_type,
    unsupported_value,
)
from proxy.translate.claude.blocks import (
    Block,
    cached,
    detail_dropped,
    document_block,
    image_block,
    part_type,
    plain_text,
    text_blocks,
    thinking_block,
    tool_result_block,
    tool_use_block,
)
from proxy.translate.claude.turns import DEFAULT_MAX_CONTENT_BLOCKS, DEFAULT_MAX_MESSAGES, Conversation, Turn
from proxy.translate.params import Drop

__all__ = ["convert_messages"]

# Text-only content parts: part type → the field holding its text.
_TEXT: Final = {"text": "text"}
_TEXT_OR_REFUSAL: Final = {"text": "text", "refusal": "refusal"}


class _Messages:
    """The conversation being built, the legacy function calls still awaiting a result, and where
    dropped fields are recorded."""

    __slots__ = ("conversation", "drop", "function_calls")

    def __init__(self, max_content_blocks: int, drop: Drop | None) -> None:
        self.conversation = Conversation(max_content_blocks, field="messages")
        # Call ids by function name, the most recent last.
        self.function_calls: dict[str, list[str]] = {}
        self.drop: Drop = drop if drop is not None else _unrecorded


def _unrecorded(path: str, why: str) -> None:
    """The `drop` of a caller that does not ask what was dropped."""


def convert_messages(
    raw: Any,
    *,
    model: str,
    prefill: bool,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_content_blocks: int = DEFAULT_MAX_CONTENT_BLOCKS,
    drop: Drop | None = None,
) -> tuple[list[Block], list[Turn]]:
    """The `system` text blocks and the `messages` turns for the client's `messages` list.

    `prefill` says whether `model` accepts a final assistant turn (from the model table);
    `max_messages` and `max_content_blocks` bound what the list may hold (`InvalidRequest` past them);
    `drop` (`ClaudeContext.drop`) records the fields not sent as the client sent them.
    """
    if not isinstance(raw, list):
        if raw is None:
            missing("messages")
        invalid_type("messages", "an array", raw)
    if not raw:
        invalid_value("messages", "expected at least one message.")
    check_length("messages", len(raw), max_messages, "max_messages")
    state = _Messages(max_content_blocks, drop)
    for index, message in enumerate(raw):
        path = f"messages[{index}]"
        if not isinstance(message, dict):
            invalid_type(path, "an object", message)
        role = message.get("role")
        handler = _ROLES.get(role) if isinstance(role, str) else None
        if handler is None:
            if role is None:
                missing(f"{path}.role")
            if not isinstance(role, str):
                invalid_type(f"{path}.role", "a string", role)
            invalid_value(
                f"{path}.role",
                f"{role!r}. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.",
            )
        _participant_name(message, path, role, state)
        handler(message, path, index, state)
    return state.conversation.finish(model=model, prefill=prefill)


def _participant_name(message: dict[str, Any], path: str, role: object, state: _Messages) -> None:
    # A participant's `name` tells OpenAI's model who speaks; Claude's turns have no such field.
    # (A function message's `name` is the function's, and is used.)
    name = message.get("name")
    if role != "function" and name is not None and name != "":
        state.drop(f"{path}.name", "Claude's messages carry no participant name, so it is ignored by this gateway")


# Roles ---------------------------------------------------------------------------------------


def _system(message: dict[str, Any], path: str, index: int, state: _Messages) -> None:
    # Hoisted wherever it appears: system and developer messages are both instructions.
    content = required(message, "content", path)
    state.conversation.count(content, f"{path}.content")
    state.conversation.system(text_blocks(content, f"{path}.content", _TEXT, state.drop))


def _user(message: dict[str, Any], path: str, index: int, state: _Messages) -> None:
    content = required(message, "content", path)
    content_path = f"{path}.content"
    state.conversation.count(content, content_path)
    if isinstance(content, str):
        blocks = plain_text(content)
    elif isinstance(content, list):
        blocks = []
        for j, part in enumerate(content):
            block = _user_part(part, f"{content_path}[{j}]", state.drop)
            if block is not None:
                blocks.append(block)
    else:
        invalid_type(content_path, "a string or an array of content parts", content)
    if not blocks:
        invalid_value(content_path, "a user message must contain non-empty text, an image or a file.")
    state.conversation.user(blocks, path)


def _assistant(message: dict[str, Any], path: str, index: int, state: _Messages) -> None:
    # The upstream turn keeps the order Claude wrote it in: thinking, then text, then tool calls.
    conversation = state.conversation
    blocks: list[Block] = []
    thinking_blocks = message.get("thinking_blocks")
    if thinking_blocks is not None:
        # What the gateway emitted with an earlier answer (README, "Thinking round trip"): Claude's
        # signed thinking, which must come back before the text and tool calls it led to.
        thinking_path = f"{path}.thinking_blocks"
        if not isinstance(thinking_blocks, list):
            invalid_type(thinking_path, "an array", thinking_blocks)
        conversation.count(thinking_blocks, thinking_path)
        for j, block in enumerate(thinking_blocks):
            blocks.append(thinking_block(block, f"{thinking_path}[{j}]"))
    content = message.get("content")
    if content is not None:
        conversation.count(content, f"{path}.content")
        blocks.extend(text_blocks(content, f"{path}.content", _TEXT_OR_REFUSAL, state.drop))
    refusal = message.get("refusal")
    if refusal is not None:
        # An echoed OpenAI refusal (content null, refusal set) is what the model said: keep it as text.
        if not isinstance(refusal, str):
            invalid_type(f"{path}.refusal", "a string", refusal)
        blocks.extend(plain_text(refusal))
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            invalid_type(f"{path}.tool_calls", "an array", tool_calls)
        conversation.count(tool_calls, f"{path}.tool_calls")
        for j, call in enumerate(tool_calls):
            blocks.append(_tool_use(call, f"{path}.tool_calls[{j}]"))
    function_call = message.get("function_call")
    if function_call is not None:
        # Legacy calls carry no id: synthesize one from the message index, stable across retries.
        call_id = f"call_{index}"
        block = _function_use(function_call, call_id, f"{path}.function_call")
        state.function_calls.setdefault(block["name"], []).append(call_id)
        blocks.append(block)
    conversation.assistant(blocks, path)


def _tool(message: dict[str, Any], path: str, index: int, state: _Messages) -> None:
    tool_call_id = required_string(message, "tool_call_id", path)
    content = required(message, "content", path)
    state.conversation.count(content, f"{path}.content")
    block = tool_result_block(tool_call_id, content, f"{path}.content", _TEXT, state.drop)
    state.conversation.tool_results([block], path)


def _function(message: dict[str, Any], path: str, index: int, state: _Messages) -> None:
    name = required_string(message, "name", path)
    # The most recent unanswered legacy call of that name is the one this message answers.
    pending = state.function_calls.get(name)
    if not pending:
        invalid_value(f"{path}.name", f"no earlier assistant message has a function_call named {name!r}.")
    call_id = pending.pop()
    content = message.get("content")
    state.conversation.count(content, f"{path}.content")
    state.conversation.tool_results([tool_result_block(call_id, content, f"{path}.content", _TEXT, state.drop)], path)


_Role = Callable[[dict[str, Any], str, int, _Messages], None]
_ROLES: dict[str, _Role] = {
    "system": _system,
    "developer": _system,
    "user": _user,
    "assistant": _assistant,
    "tool": _tool,
    "function": _function,
}


# User content parts --------------------------------------------------------------------------


def _user_part(part: Any, path: str, drop: Drop) -> Block | None:
    kind = part_type(part, path)
    convert = _USER_PARTS.get(kind)
    if convert is None:
        unsupported_value(
            f"{path}.type", f"unknown content part type {kind!r}; supported: 'text', 'image_url', 'file'."
        )
    return convert(part, path, drop)


def _text_part(part: dict[str, Any], path: str, drop: Drop) -> Block | None:
    blocks = plain_text(required_type(part, "text", path, str, "a string"))
    return cached(blocks[0], part, path, drop) if blocks else None


def _image_part(part: dict[str, Any], path: str, drop: Drop) -> Block:
    image_url = required_type(part, "image_url", path, dict, "an object")
    url = required_type(image_url, "url", f"{path}.image_url", str, "a string")
    detail_dropped(image_url.get("detail"), f"{path}.image_url.detail", drop)
    return cached(image_block(url, f"{path}.image_url.url"), part, path, drop)


def _file_part(part: dict[str, Any], path: str, drop: Drop) -> Block:
    file = required_type(part, "file", path, dict, "an object")
    file_path = f"{path}.file"
    if file.get("file_id") is not None:
        unsupported_value(
            f"{file_path}.file_id", "uploaded file ids are not supported; send the file inline as file_data."
        )
    url = required_type(file, "file_data", file_path, str, "a string")
    block = document_block(url, f"{file_path}.file_data")
    filename = file.get("filename")
    if filename is not None:
        if not isinstance(filename, str):
            invalid_type(f"{file_path}.filename", "a string", filename)
        if filename:
            block["title"] = filename
    return block


def _audio_part(part: dict[str, Any], path: str, drop: Drop) -> NoReturn:
    unsupported_value(f"{path}.type", "audio input is not supported by this gateway.")


_Part = Callable[[dict[str, Any], str, Drop], Block | None]
_USER_PARTS: dict[str, _Part] = {
    "text": _text_part,
    "image_url": _image_part,
    "file": _file_part,
    "input_audio": _audio_part,
}


# Tool calls ----------------------------------------------------------------------------------


def _tool_use(call: Any, path: str) -> Block:
    if not isinstance(call, dict):
        invalid_type(path, "an object", call)
    kind = call.get("type", "function")
    if kind != "function":
        if not isinstance(kind, str):
            invalid_type(f"{path}.type", "a string", kind)
        unsupported_value(f"{path}.type", f"{kind!r} tool calls are not supported; only 'function'.")
    call_id = required_string(call, "id", path)
    function = required_type(call, "function", path, dict, "an object")
    return _function_use(function, call_id, f"{path}.function")


def _function_use(function: Any, call_id: str, path: str) -> Block:
    if not isinstance(function, dict):
        invalid_type(path, "an object", function)
    name = required_string(function, "name", path)
    arguments = required_type(function, "arguments", path, str, "a string")
    return tool_use_block(call_id, name, arguments, f"{path}.arguments")
