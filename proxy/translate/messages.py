"""OpenAI chat `messages` → Messages API `system` and `messages` (design §2).

One small function per OpenAI role and per content part type. The input is whatever JSON the
client sent, so every access is type-checked first and every failure is an `InvalidRequest`
whose `param` is the exact path at fault (``messages[2].content[0].image_url.url``).

Upstream rules this module owns, so that the request never fails for a reason the client
cannot see in its own body:

- text blocks must contain non-whitespace text: blank text is dropped everywhere;
- turns alternate: consecutive turns of one role are merged, `tool_result` blocks first;
- a final assistant turn (prefill) must not end in whitespace, and some models refuse it.

Every step is linear in the request (a body of tens of thousands of tool results is translated on
the event loop), and how much a request may hold is bounded by limits the caller passes in.

The small error helpers at the end are shared with `request.py`; their wording and codes follow
the OpenAI API's own 400s (``invalid_type``, ``missing_required_parameter`` …).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any, Final, NoReturn

import orjson

from proxy.errors import InvalidRequest

__all__ = [
    "DEFAULT_MAX_CONTENT_BLOCKS",
    "DEFAULT_MAX_MESSAGES",
    "MAX_MODEL_NAME_LENGTH",
    "THINKING_TYPES",
    "convert_messages",
]

Block = dict[str, Any]
Turn = dict[str, Any]

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})

# The Messages API's own limit ("a limit of 100,000 messages in a single request"): past it the
# request would fail upstream anyway, after the gateway had done all the work of translating it.
DEFAULT_MAX_MESSAGES: Final = 100_000
# Content parts, tool calls and thinking blocks in all messages together: two for each message the
# API allows. The body size limit bounds this too, but this one fails early and says why.
DEFAULT_MAX_CONTENT_BLOCKS: Final = 200_000
# Model ids and aliases are a few dozen characters; the requested name labels metrics and log
# lines, which must not grow with what a client sends (100 KB names made /metrics 235 MB).
MAX_MODEL_NAME_LENGTH: Final = 256


def convert_messages(
    raw: Any,
    *,
    model: str,
    prefill: bool,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_content_blocks: int = DEFAULT_MAX_CONTENT_BLOCKS,
) -> tuple[list[Block], list[Turn]]:
    """The `system` text blocks and the `messages` turns for the client's `messages` list.

    `prefill` says whether `model` accepts a final assistant turn (from the model table);
    `max_messages` and `max_content_blocks` bound what the list may hold (`InvalidRequest` past them).
    """
    if not isinstance(raw, list):
        if raw is None:
            missing("messages")
        invalid_type("messages", "an array", raw)
    if not raw:
        invalid_value("messages", "expected at least one message.")
    check_length("messages", len(raw), max_messages, "max_messages")
    conversation = _Conversation(max_content_blocks)
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
        handler(message, path, index, conversation)
    turns = conversation.finish(model=model, prefill=prefill)
    return conversation.system, turns


# The blocks the API wants first in a turn of each role: tool results before anything else in a
# user turn, thinking before anything else in an assistant turn (each kept in its own order).
_LEADING: Final[dict[str, frozenset[str]]] = {"user": frozenset({"tool_result"}), "assistant": THINKING_TYPES}


class _Turn:
    """One upstream turn being built from one or more consecutive client messages.

    The blocks that lead the turn are kept apart from the rest as they arrive, so that merging a
    message is proportional to that message alone; the turn is put in order once, at the end.
    (Re-sorting the merged turn on every message made 20,000 tool results take 20 seconds.)
    """

    __slots__ = ("leading", "rest", "role", "source")

    def __init__(self, role: str, source: int) -> None:
        self.role = role
        self.source = source  # index of the last client message merged into this turn
        self.leading: list[Block] = []
        self.rest: list[Block] = []

    def extend(self, blocks: list[Block]) -> None:
        leading = _LEADING[self.role]
        for block in blocks:
            (self.leading if block["type"] in leading else self.rest).append(block)

    def content(self) -> list[Block]:
        return self.leading + self.rest


class _Conversation:
    """The turns built so far, with what merging, legacy function calls and the limits need."""

    __slots__ = ("blocks_left", "function_calls", "max_content_blocks", "system", "turns")

    def __init__(self, max_content_blocks: int) -> None:
        self.system: list[Block] = []
        self.turns: list[_Turn] = []
        # Legacy calls still awaiting a result: call ids by function name, the most recent last.
        self.function_calls: dict[str, list[str]] = {}
        self.max_content_blocks = max_content_blocks
        self.blocks_left = max_content_blocks

    def count(self, value: Any, path: str) -> None:
        """Charge a content field to the request's block budget, before it is converted: an array
        counts its items (each becomes at most one block), anything else one."""
        self.blocks_left -= len(value) if isinstance(value, list) else 1
        if self.blocks_left < 0:
            limit = self.max_content_blocks
            raise InvalidRequest(
                f"Invalid '{path}': too many content parts. A request may hold at most {limit} content "
                f"parts, tool calls and thinking blocks in all its messages (the gateway's "
                f"max_content_blocks is {limit}), and this one holds more.",
                param=path,
                code="array_above_max_length",
            )

    def add(self, role: str, blocks: list[Block], index: int) -> None:
        if not blocks:
            return
        if not self.turns or self.turns[-1].role != role:
            self.turns.append(_Turn(role, index))
        turn = self.turns[-1]
        turn.extend(blocks)
        turn.source = index

    def finish(self, *, model: str, prefill: bool) -> list[Turn]:
        """The upstream turns, each in order, after the checks on the conversation's last turn."""
        if not self.turns:
            invalid_value("messages", "expected at least one user or assistant message with content.")
        last = self.turns[-1]
        if last.role == "assistant" and all(block["type"] != "tool_use" for block in last.rest):
            # A prefill, not an unanswered tool call (which upstream judges). Echoed thinking only
            # matters before a tool call, and the API refuses it in a final assistant turn: drop it.
            last.leading.clear()
            if not last.rest:
                self.turns.pop()
                if not self.turns:
                    invalid_value("messages", "expected at least one user or assistant message with content.")
            else:
                self._check_prefill(last, model=model, prefill=prefill)
        return [{"role": turn.role, "content": turn.content()} for turn in self.turns]

    @staticmethod
    def _check_prefill(last: _Turn, *, model: str, prefill: bool) -> None:
        # Only text blocks are left, none of them blank, so stripping never empties the turn.
        content = last.rest
        content[-1] = {**content[-1], "text": content[-1]["text"].rstrip()}
        if not prefill:
            raise InvalidRequest(
                f"The model {model!r} does not accept prefill: the conversation must not end with "
                "an assistant message. Remove the trailing assistant message.",
                param=f"messages[{last.source}]",
                code="unsupported_value",
            )


# Roles ---------------------------------------------------------------------------------------


def _system(message: dict[str, Any], path: str, index: int, conversation: _Conversation) -> None:
    # Hoisted wherever it appears: system and developer messages are both instructions.
    content = required(message, "content", path)
    conversation.count(content, f"{path}.content")
    conversation.system.extend(_text_blocks(content, f"{path}.content", refusal=False))


def _user(message: dict[str, Any], path: str, index: int, conversation: _Conversation) -> None:
    content = required(message, "content", path)
    content_path = f"{path}.content"
    conversation.count(content, content_path)
    if isinstance(content, str):
        blocks = _text(content)
    elif isinstance(content, list):
        blocks = []
        for j, part in enumerate(content):
            block = _user_part(part, f"{content_path}[{j}]")
            if block is not None:
                blocks.append(block)
    else:
        invalid_type(content_path, "a string or an array of content parts", content)
    if not blocks:
        invalid_value(content_path, "a user message must contain non-empty text, an image or a file.")
    conversation.add("user", blocks, index)


def _assistant(message: dict[str, Any], path: str, index: int, conversation: _Conversation) -> None:
    # The upstream turn keeps the order Claude wrote it in: thinking, then text, then tool calls.
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
            blocks.append(_thinking_block(block, f"{thinking_path}[{j}]"))
    content = message.get("content")
    if content is not None:
        conversation.count(content, f"{path}.content")
        blocks.extend(_text_blocks(content, f"{path}.content", refusal=True))
    refusal = message.get("refusal")
    if refusal is not None:
        # An echoed OpenAI refusal (content null, refusal set) is what the model said: keep it as text.
        if not isinstance(refusal, str):
            invalid_type(f"{path}.refusal", "a string", refusal)
        blocks.extend(_text(refusal))
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
        conversation.function_calls.setdefault(block["name"], []).append(call_id)
        blocks.append(block)
    conversation.add("assistant", blocks, index)


def _tool(message: dict[str, Any], path: str, index: int, conversation: _Conversation) -> None:
    tool_call_id = required_string(message, "tool_call_id", path)
    content = required(message, "content", path)
    conversation.count(content, f"{path}.content")
    conversation.add("user", [_tool_result(tool_call_id, content, f"{path}.content")], index)


def _function(message: dict[str, Any], path: str, index: int, conversation: _Conversation) -> None:
    name = required_string(message, "name", path)
    # The most recent unanswered legacy call of that name is the one this message answers.
    pending = conversation.function_calls.get(name)
    if not pending:
        invalid_value(f"{path}.name", f"no earlier assistant message has a function_call named {name!r}.")
    call_id = pending.pop()
    content = message.get("content")
    conversation.count(content, f"{path}.content")
    conversation.add("user", [_tool_result(call_id, content, f"{path}.content")], index)


_Role = Callable[[dict[str, Any], str, int, _Conversation], None]
_ROLES: dict[str, _Role] = {
    "system": _system,
    "developer": _system,
    "user": _user,
    "assistant": _assistant,
    "tool": _tool,
    "function": _function,
}


# Content -------------------------------------------------------------------------------------


def _text(text: str) -> list[Block]:
    return [{"type": "text", "text": text}] if text and not text.isspace() else []


def _text_blocks(content: Any, path: str, *, refusal: bool) -> list[Block]:
    """Text-only content: a string, or an array of `text` (and, for assistants, `refusal`) parts."""
    if isinstance(content, str):
        return _text(content)
    if not isinstance(content, list):
        invalid_type(path, "a string or an array of text parts", content)
    blocks: list[Block] = []
    for j, part in enumerate(content):
        part_path = f"{path}[{j}]"
        kind = _part_type(part, part_path)
        if kind == "text" or (refusal and kind == "refusal"):
            text = _text(required_type(part, kind, part_path, str, "a string"))
            blocks.extend(_cached(block, part, part_path) for block in text)
        else:
            allowed = "'text' or 'refusal'" if refusal else "'text'"
            unsupported_value(f"{part_path}.type", f"{kind!r} parts are not accepted here, only {allowed}.")
    return blocks


def _part_type(part: Any, path: str) -> str:
    if not isinstance(part, dict):
        invalid_type(path, "an object", part)
    kind: str = required_type(part, "type", path, str, "a string")
    return kind


def _user_part(part: Any, path: str) -> Block | None:
    kind = _part_type(part, path)
    convert = _USER_PARTS.get(kind)
    if convert is None:
        unsupported_value(
            f"{path}.type", f"unknown content part type {kind!r}; supported: 'text', 'image_url', 'file'."
        )
    return convert(part, path)


def _text_part(part: dict[str, Any], path: str) -> Block | None:
    blocks = _text(required_type(part, "text", path, str, "a string"))
    return _cached(blocks[0], part, path) if blocks else None


def _image_part(part: dict[str, Any], path: str) -> Block:
    # `detail` has no Messages API equivalent and is dropped.
    image_url = required_type(part, "image_url", path, dict, "an object")
    url_path = f"{path}.image_url.url"
    url = required_type(image_url, "url", f"{path}.image_url", str, "a string")
    scheme = url[:8].lower()
    if scheme.startswith("data:"):
        media_type, data, raw = _data_url(url, url_path)
        if media_type not in IMAGE_MEDIA_TYPES:
            unsupported_value(
                url_path,
                f"image media type {media_type!r} is not supported; use image/jpeg, image/png, "
                "image/gif or image/webp.",
            )
        # Clients often mislabel images (a PNG sent as image/jpeg); upstream checks the bytes
        # against the declared type and refuses a mismatch, so trust the magic number instead.
        media_type = _sniff_image(raw) or media_type
        block = {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        return _cached(block, part, path)
    if scheme.startswith(("http://", "https://")):
        return _cached({"type": "image", "source": {"type": "url", "url": url}}, part, path)
    unsupported_value(url_path, "an image URL must be an http(s) URL or a base64 data: URL.")


def _file_part(part: dict[str, Any], path: str) -> Block:
    file = required_type(part, "file", path, dict, "an object")
    file_path = f"{path}.file"
    if file.get("file_id") is not None:
        unsupported_value(
            f"{file_path}.file_id", "uploaded file ids are not supported; send the file inline as file_data."
        )
    data_path = f"{file_path}.file_data"
    url = required_type(file, "file_data", file_path, str, "a string")
    if url[:5].lower() != "data:":
        invalid_value(data_path, "expected a data: URL (data:application/pdf;base64,…).")
    media_type, data, _ = _data_url(url, data_path)
    if media_type != "application/pdf":
        unsupported_value(data_path, f"file media type {media_type!r} is not supported; only application/pdf.")
    block: Block = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    filename = file.get("filename")
    if filename is not None:
        if not isinstance(filename, str):
            invalid_type(f"{file_path}.filename", "a string", filename)
        if filename:
            block["title"] = filename
    return block


def _audio_part(part: dict[str, Any], path: str) -> NoReturn:
    unsupported_value(f"{path}.type", "audio input is not supported by this gateway.")


_Part = Callable[[dict[str, Any], str], Block | None]
_USER_PARTS: dict[str, _Part] = {
    "text": _text_part,
    "image_url": _image_part,
    "file": _file_part,
    "input_audio": _audio_part,
}


def _data_url(url: str, path: str) -> tuple[str, str, bytes]:
    """Media type (lower-cased), base64 payload and decoded bytes of a ``data:…;base64,…`` URL."""
    header, comma, data = url[5:].partition(",")
    if not comma:
        invalid_value(path, "malformed data: URL (no comma before the data).")
    media_type, *options = header.split(";")
    if "base64" not in (option.strip().lower() for option in options):
        invalid_value(path, "a data: URL must be base64-encoded (data:<media type>;base64,<data>).")
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        invalid_value(path, "the data: URL's payload is not valid base64.")
    if not raw:
        invalid_value(path, "the data: URL's payload is empty.")
    return media_type.strip().lower(), data, raw


def _sniff_image(raw: bytes) -> str | None:
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def _thinking_block(block: Any, path: str) -> Block:
    kind = _part_type(block, path)
    if kind == "thinking":
        thinking = required_type(block, "thinking", path, str, "a string")
        signature = required_string(block, "signature", path)
        return {"type": "thinking", "thinking": thinking, "signature": signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": required_string(block, "data", path)}
    unsupported_value(f"{path}.type", f"{kind!r}; expected 'thinking' or 'redacted_thinking'.")


def _cached(block: Block, part: dict[str, Any], path: str) -> Block:
    """`block`, marked as a prompt cache breakpoint when the part carries OpenAI's
    `prompt_cache_breakpoint`; request.py sets the TTL and keeps at most four."""
    breakpoint_ = part.get("prompt_cache_breakpoint")
    if breakpoint_ is None:
        return block
    bp_path = f"{path}.prompt_cache_breakpoint"
    if not isinstance(breakpoint_, dict):
        invalid_type(bp_path, "an object", breakpoint_)
    mode = breakpoint_.get("mode")
    if mode != "explicit":
        invalid_value(f"{bp_path}.mode", f"{mode!r}; the only supported value is 'explicit'.")
    cache_control: Block = {"type": "ephemeral"}
    ttl = breakpoint_.get("ttl")
    if ttl is not None:
        if ttl not in ("30m", "12h"):
            invalid_value(f"{bp_path}.ttl", f"{ttl!r}. Supported values are: '30m' and '12h'.")
        # Anthropic's cache lives 5 minutes or 1 hour; a minimum lifetime of 30m or more needs 1h.
        cache_control["ttl"] = "1h"
    return {**block, "cache_control": cache_control}


# Tools ---------------------------------------------------------------------------------------


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
    return {
        "type": "tool_use",
        "id": call_id,
        "name": name,
        "input": _arguments(arguments, f"{path}.arguments"),
    }


def _arguments(arguments: str, path: str) -> dict[str, Any]:
    # Streaming accumulators send "" for a call without parameters; that means {}.
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except ValueError:
        invalid_value(path, "the arguments are not valid JSON.")
    if not isinstance(value, dict):
        invalid_value(path, "the arguments must be a JSON object.")
    return value


def _tool_result(tool_use_id: str, content: Any, path: str) -> Block:
    block: Block = {"type": "tool_result", "tool_use_id": tool_use_id}
    if content is None:
        return block
    if isinstance(content, str):
        # A blank string would be a blank text block upstream; no content says the same.
        if content and not content.isspace():
            block["content"] = content
        return block
    blocks = _text_blocks(content, path, refusal=False)
    if blocks:
        block["content"] = blocks
    return block


# Errors, shared with request.py --------------------------------------------------------------


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def invalid_type(param: str, expected: str, value: Any) -> NoReturn:
    raise InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, detail: str) -> NoReturn:
    raise InvalidRequest(f"Invalid value for '{param}': {detail}", param=param, code="invalid_value")


def unsupported_value(param: str, detail: str) -> NoReturn:
    raise InvalidRequest(f"Unsupported value for '{param}': {detail}", param=param, code="unsupported_value")


def check_length(param: str, length: int, limit: int, setting: str) -> None:
    """400 when the array at `param` holds more than `limit` items; `setting` names the limit."""
    if length > limit:
        raise InvalidRequest(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit} "
            f"(the gateway's {setting}), but got an array with length {length} instead.",
            param=param,
            code="array_above_max_length",
        )


def missing(param: str) -> NoReturn:
    raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def required(obj: dict[str, Any], key: str, path: str) -> Any:
    value = obj.get(key)
    if value is None:
        missing(f"{path}.{key}")
    return value


def required_type(obj: dict[str, Any], key: str, path: str, kind: type, expected: str) -> Any:
    value = required(obj, key, path)
    if not isinstance(value, kind):
        invalid_type(f"{path}.{key}", expected, value)
    return value


def required_string(obj: dict[str, Any], key: str, path: str) -> str:
    """A required, non-empty string (ids and names)."""
    value = required_type(obj, key, path, str, "a string")
    if not value:
        invalid_value(f"{path}.{key}", "expected a non-empty string.")
    result: str = value
    return result


def requested_model(body: Any) -> str:
    """The `model` a request body names: the body must be a JSON object and the model a non-empty
    string of at most `MAX_MODEL_NAME_LENGTH` characters. Shared by the chat translator and the
    native passthrough, so that no route lets an unbounded name into metrics labels or logs."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    requested = body.get("model")
    if requested is None:
        missing("model")
    if not isinstance(requested, str):
        invalid_type("model", "a string", requested)
    if not requested:
        invalid_value("model", "expected a non-empty string.")
    if len(requested) > MAX_MODEL_NAME_LENGTH:
        # Not echoed back: the name is the very thing too long to repeat.
        raise InvalidRequest(
            f"Invalid 'model': string too long. Expected a string with maximum length "
            f"{MAX_MODEL_NAME_LENGTH}, but got a string with length {len(requested)} instead.",
            param="model",
            code="string_above_max_length",
        )
    return requested
