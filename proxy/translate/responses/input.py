"""Responses `input` items (after the stored items of a previous response) → Claude turns.

One small function per item type, driving the core's `Conversation`, which owns the Claude-side
rules (turns alternate; tool results lead a user turn and thinking an assistant turn; system text
is hoisted in order; the prefill check). So consecutive `function_call` items become one assistant
turn of `tool_use` blocks, and the `function_call_output` items after them one user turn of
`tool_result` blocks ahead of any text that follows.

Every item may carry an `id` and a `status` (clients replay output items as they got them); both
are accepted and have no Claude equivalent. Paths in errors are the client's: ``input[3].content[0]``
for this request's items, ``previous_response_id[3]…`` for a stored item; so are the paths given to
`drop` (`ClaudeContext.drop`) for what a part asks that Claude cannot do as asked (an image `detail`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

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
    tool_result_block,
    tool_use_block,
)
from proxy.translate.claude.turns import Conversation
from proxy.translate.params import Drop
from proxy.translate.responses.common import CUSTOM_TOOL_INPUT, claude_call_id, open_reasoning
from proxy.translate.responses.tools import ToolSet

__all__ = ["HISTORY_PATH", "Input", "convert_input"]

HISTORY_PATH: Final = "previous_response_id"  # how errors name the items of a stored response

_SYSTEM_PARTS: Final = {"input_text": "text"}
# What an assistant message replayed by a client may hold: Responses output parts, and the
# input_text parts some clients write for every role. A replayed refusal is what the model said.
_ASSISTANT_PARTS: Final = {"output_text": "text", "input_text": "text", "refusal": "refusal"}
_TEXT_ONLY: Final = {"input_text": "text"}


@dataclass(slots=True)
class Input:
    """The conversation so far, for the item handlers."""

    conversation: Conversation
    tools: ToolSet
    stored: Mapping[str, dict[str, Any]]  # the items item_reference may name, by id
    drop: Drop  # records the fields not sent as the client sent them


def convert_input(
    value: Any,
    *,
    instructions: list[Block],
    history: Sequence[dict[str, Any]],
    references: Mapping[str, dict[str, Any]],
    tools: ToolSet,
    model: str,
    prefill: bool,
    max_messages: int,
    max_content_blocks: int,
    drop: Drop | None = None,
) -> tuple[list[Block], list[dict[str, Any]], list[dict[str, Any]]]:
    """The `system` blocks, the `messages` turns and this request's own items (a string input as
    one user message item, item references replaced by what they name) for the client's `input`.

    `instructions` lead the system prompt; `history` (the stored input and output items of the
    previous response) comes before the input; `references` are the client key's stored items that
    the input's item references name (the pipeline looks them up), beside the history's own items;
    `tools` names the tools replayed calls refer to; `drop` records the fields not sent as sent.
    `max_messages` bounds the items, history included; `max_content_blocks` their content.
    """
    text: str | None = None
    if value is None:
        items: list[Any] = []
    elif isinstance(value, str):
        # The commonest request: one user turn, converted directly (it is still stored as an item).
        text, items = value, [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    elif isinstance(value, list):
        items = value
    else:
        invalid_type("input", "a string or an array of input items", value)
    check_length("input", len(history) + len(items), max_messages, "max_messages")
    conversation = Conversation(max_content_blocks, field="input")
    conversation.system(instructions)
    stored = dict(references)
    stored.update(
        (item["id"], item)
        for item in history
        if isinstance(item, dict) and isinstance(item.get("id"), str) and _kind(item, "") != "item_reference"
    )
    # What the stored items dropped was reported (or refused) with the request that sent them.
    state = Input(conversation, tools, stored, _unrecorded)
    for k, item in enumerate(history):
        _item(item, f"{HISTORY_PATH}[{k}]", state)
    state.drop = drop if drop is not None else _unrecorded
    if text is not None:
        _text_input(text, conversation)
        own = items
    else:
        own = [_item(item, f"input[{k}]", state) for k, item in enumerate(items)]
    system, messages = conversation.finish(model=model, prefill=prefill)
    return system, messages, own


def _text_input(text: str, conversation: Conversation) -> None:
    """A string `input`: what its one input_text part would give, without building and walking it."""
    conversation.count(text, "input[0].content")
    blocks = plain_text(text)
    if not blocks:
        invalid_value("input[0].content", "a user message must contain non-empty text, an image or a file.")
    conversation.user(blocks, "input[0]")


def _unrecorded(path: str, why: str) -> None:
    """The `drop` of a caller that does not ask what was dropped."""


def _item(item: Any, path: str, state: Input) -> dict[str, Any]:
    """Add one item to the conversation; the item as it is to be stored."""
    if not isinstance(item, dict):
        invalid_type(path, "an object", item)
    kind = _kind(item, path)
    if kind == "item_reference":
        return _item_reference(item, path, state)
    handler = _ITEMS.get(kind)
    if handler is None:
        unsupported_value(
            f"{path}.type",
            f"{kind!r} items are not supported: they belong to tools that run on OpenAI's servers. Supported: "
            "'message', 'function_call', 'function_call_output', 'custom_tool_call', "
            "'custom_tool_call_output', 'reasoning', 'web_search_call' and 'item_reference'.",
        )
    handler(item, path, state)
    return item


def _kind(item: dict[str, Any], path: str) -> str:
    kind = item.get("type")
    if kind is None:
        # `type` is optional on a message (EasyInputMessage) and on an item reference.
        if "role" in item:
            return "message"
        if "id" in item:
            return "item_reference"
        missing(f"{path}.type")
    if not isinstance(kind, str):
        invalid_type(f"{path}.type", "a string", kind)
    return kind


def _item_reference(item: dict[str, Any], path: str, state: Input) -> dict[str, Any]:
    # The items of the client key's stored responses can be named (looked up by the pipeline).
    item_id = required_string(item, "id", path)
    referenced = state.stored.get(item_id)
    if referenced is None or _kind(referenced, path) == "item_reference":
        invalid_value(f"{path}.id", f"no stored item with id {item_id!r} (it may have expired or been deleted).")
    return _item(referenced, path, state)


# Messages ----------------------------------------------------------------------------------------


def _message(item: dict[str, Any], path: str, state: Input) -> None:
    role = required_type(item, "role", path, str, "a string")
    content = required(item, "content", path)
    content_path = f"{path}.content"
    conversation = state.conversation
    conversation.count(content, content_path)
    if role in ("system", "developer"):
        conversation.system(text_blocks(content, content_path, _SYSTEM_PARTS, state.drop))
    elif role == "user":
        conversation.user(_user_content(content, content_path, state.drop), path)
    elif role == "assistant":
        # Annotations (citations) and logprobs on replayed output text have no Claude equivalent.
        conversation.assistant(text_blocks(content, content_path, _ASSISTANT_PARTS, state.drop), path)
    else:
        invalid_value(f"{path}.role", f"{role!r}. Supported values are: 'user', 'assistant', 'system' and 'developer'.")


def _user_content(content: Any, path: str, drop: Drop) -> list[Block]:
    if isinstance(content, str):
        blocks = plain_text(content)
    elif isinstance(content, list):
        blocks = []
        for j, part in enumerate(content):
            block = _input_part(part, f"{path}[{j}]", drop)
            if block is not None:
                blocks.append(block)
    else:
        invalid_type(path, "a string or an array of content parts", content)
    if not blocks:
        invalid_value(path, "a user message must contain non-empty text, an image or a file.")
    return blocks


def _input_part(part: Any, path: str, drop: Drop) -> Block | None:
    """An input_text, input_image or input_file part → a block (None for blank text)."""
    kind = part_type(part, path)
    convert = _INPUT_PARTS.get(kind)
    if convert is None:
        unsupported_value(
            f"{path}.type", f"unknown content part type {kind!r}; supported: 'input_text', 'input_image', 'input_file'."
        )
    if kind == "input_image":
        detail_dropped(part.get("detail"), f"{path}.detail", drop)
    block = convert(part, path)
    return None if block is None else cached(block, part, path, drop)


def _input_text(part: dict[str, Any], path: str) -> Block | None:
    blocks = plain_text(required_type(part, "text", path, str, "a string"))
    return blocks[0] if blocks else None


def _input_image(part: dict[str, Any], path: str) -> Block:
    url = part.get("image_url")
    if url is None:
        if part.get("file_id") is not None:
            unsupported_value(f"{path}.file_id", "uploaded file ids are not supported; send the image as image_url.")
        missing(f"{path}.image_url")
    if not isinstance(url, str):
        invalid_type(f"{path}.image_url", "a string", url)
    return image_block(url, f"{path}.image_url")


def _input_file(part: dict[str, Any], path: str) -> Block:
    filename = part.get("filename")
    if filename is not None and not isinstance(filename, str):
        invalid_type(f"{path}.filename", "a string", filename)
    data = part.get("file_data")
    if data is not None:
        if not isinstance(data, str):
            invalid_type(f"{path}.file_data", "a string", data)
        return document_block(data, f"{path}.file_data", title=filename)
    url = part.get("file_url")
    if url is not None:
        return _document_url(url, f"{path}.file_url", filename)
    if part.get("file_id") is not None:
        unsupported_value(
            f"{path}.file_id", "uploaded file ids are not supported; send the file inline as file_data or file_url."
        )
    missing(f"{path}.file_data")


def _document_url(url: Any, path: str, title: str | None) -> Block:
    """A PDF Claude fetches itself (a URL document source). Belongs beside `document_block` in
    the core once another dialect needs it."""
    if not isinstance(url, str):
        invalid_type(path, "a string", url)
    if not url[:8].lower().startswith(("http://", "https://")):
        unsupported_value(path, "a file URL must be an http(s) URL; send other files inline as file_data.")
    block: Block = {"type": "document", "source": {"type": "url", "url": url}}
    if title:
        block["title"] = title
    return block


_INPUT_PARTS: Final[dict[str, Callable[[dict[str, Any], str], Block | None]]] = {
    "input_text": _input_text,
    "input_image": _input_image,
    "input_file": _input_file,
}


# Tool calls and their outputs --------------------------------------------------------------------


def _namespace(item: dict[str, Any], path: str) -> str | None:
    namespace = item.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        invalid_type(f"{path}.namespace", "a string", namespace)
    return namespace or None


def _function_call(item: dict[str, Any], path: str, state: Input) -> None:
    call_id = required_string(item, "call_id", path)
    name = required_string(item, "name", path)
    arguments = required_type(item, "arguments", path, str, "a string")
    claude_name = state.tools.claude_name(name, _namespace(item, path))
    state.conversation.count(item, path)
    block = tool_use_block(claude_call_id(call_id), claude_name, arguments, f"{path}.arguments")
    state.conversation.assistant([block], path)


def _custom_tool_call(item: dict[str, Any], path: str, state: Input) -> None:
    call_id = required_string(item, "call_id", path)
    name = required_string(item, "name", path)
    text = required_type(item, "input", path, str, "a string")
    claude_name = state.tools.claude_name(name, _namespace(item, path))
    state.conversation.count(item, path)
    block = {"type": "tool_use", "id": claude_call_id(call_id), "name": claude_name, "input": {CUSTOM_TOOL_INPUT: text}}
    state.conversation.assistant([block], path)


def _tool_output(item: dict[str, Any], path: str, state: Input) -> None:
    """function_call_output and custom_tool_call_output: a string, or input_text, input_image and
    input_file parts (Claude's tool results hold text, images and documents alike)."""
    call_id = required_string(item, "call_id", path)
    output = required(item, "output", path)
    output_path = f"{path}.output"
    state.conversation.count(output, output_path)
    tool_use_id = claude_call_id(call_id)
    if isinstance(output, list):
        blocks = []
        for j, part in enumerate(output):
            block = _input_part(part, f"{output_path}[{j}]", state.drop)
            if block is not None:
                blocks.append(block)
        result: Block = {"type": "tool_result", "tool_use_id": tool_use_id}
        if blocks:
            result["content"] = blocks
    elif isinstance(output, str):
        result = tool_result_block(tool_use_id, output, output_path, _TEXT_ONLY, state.drop)
    else:
        invalid_type(output_path, "a string or an array of content parts", output)
    state.conversation.tool_results([result], path)


def _reasoning(item: dict[str, Any], path: str, state: Input) -> None:
    encrypted = item.get("encrypted_content")
    if encrypted is None:
        # Claude takes back only its own signed thinking, which travels in encrypted_content. A
        # reasoning item without it (its summary alone, or one OpenAI made) cannot be given to
        # Claude as thinking, and as text it would put words in the model's mouth: it is dropped.
        return
    blocks = open_reasoning(encrypted, f"{path}.encrypted_content")
    state.conversation.count(blocks, path)
    state.conversation.assistant(blocks, path)


def _web_search_call(item: dict[str, Any], path: str, state: Input) -> None:
    # Dropped. Replaying a search to Claude takes its server_tool_use block and the
    # web_search_tool_result block with each result's encrypted content, which a web_search_call
    # item does not carry (it has the action and at most the source URLs). What the search found
    # lives on in the assistant text that cited it, which is replayed.
    return


_Handler = Callable[[dict[str, Any], str, Input], None]
_ITEMS: Final[dict[str, _Handler]] = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _tool_output,
    "custom_tool_call": _custom_tool_call,
    "custom_tool_call_output": _tool_output,
    "reasoning": _reasoning,
    "web_search_call": _web_search_call,
}
