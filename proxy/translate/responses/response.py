"""A Messages API `Message` → an OpenAI Responses `Response` object (issue 15).

Pure functions over plain dicts, as parsed from the upstream JSON: no pydantic, no I/O, no clock.
The item builders and the status rules are shared with the stream translator (`stream.py`), so
that a streamed response ends with the very object `to_response` builds for the same message.

Output items follow Claude's blocks in order, one item per run:

- a run of `text` blocks → one `message` item with one `output_text` part (the texts joined; each
  block's web search citations become `url_citation` annotations over that block's characters);
- a run of `thinking` / `redacted_thinking` blocks → one `reasoning` item: a `summary_text` part
  per thinking block that has text and, when the client includes `reasoning.encrypted_content`,
  the run's blocks sealed for the next turn (`common.seal_reasoning`);
- a `tool_use` block → a `function_call` item, or a `custom_tool_call` item for a custom tool,
  named and namespaced as the client defined it (`ToolNames`), its call id as the client knows it;
- a `server_tool_use` web search and its `web_search_tool_result` → one `web_search_call` item.

Any other block (a server tool this gateway never asks for, a future type) ends the current run
and adds nothing. `stop_reason`: `max_tokens` and `model_context_window_exceeded` → status
`incomplete` with `incomplete_details.reason: "max_output_tokens"`, the last item then
`incomplete` too; `refusal` → a `refusal` part (in the last message, or a message of its own),
status `completed`, as OpenAI reports a model's refusal; `pause_turn` → `completed`, as the chat
translator does; anything else → `completed`. A message of the wrong shape is an
`UpstreamError` (502), never another exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from proxy.errors import UpstreamError
from proxy.translate.claude.refusals import refusal_text
from proxy.translate.responses.common import (
    CUSTOM_TOOL_INPUT,
    ResponsesRequest,
    ToolName,
    client_call_id,
    item_id,
    seal_reasoning,
)
from proxy.translate.responses.tools import WEB_SEARCH_NAME as WEB_SEARCH_TOOL
from proxy.usage import Usage, malformed

__all__ = [
    "WEB_SEARCH_TOOL",
    "call_item",
    "custom_input",
    "incomplete_reason",
    "message_item",
    "output_text_part",
    "reasoning_item",
    "refusal_part",
    "response_object",
    "responses_usage",
    "to_response",
    "url_annotation",
    "web_search_item",
    "web_search_status",
]

THINKING_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})

# Stop reasons that cut the output short; OpenAI's one reason for that is the output limit.
_INCOMPLETE: Final[dict[str, str]] = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
}


def responses_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's `ResponseUsage` for the gateway's `Usage`: every field, always (the SDK requires
    them). Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI's
    `input_tokens` includes them, the reads reported again as `cached_tokens`."""
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total,
    }


def incomplete_reason(stop_reason: Any) -> str | None:
    """`incomplete_details.reason` for a stop reason that cut the output short, else None."""
    return _INCOMPLETE.get(stop_reason) if isinstance(stop_reason, str) else None


# Output items ------------------------------------------------------------------------------------


def url_annotation(citation: Any, start: int, end: int) -> dict[str, Any] | None:
    """The `url_citation` annotation for a web search citation of the text at [start, end); None
    for citations without a URL (document citations)."""
    if not isinstance(citation, dict) or citation.get("type") != "web_search_result_location":
        return None
    url = citation.get("url")
    if not isinstance(url, str):
        raise malformed("citation.url", url)
    title = citation.get("title")
    return {
        "type": "url_citation",
        "start_index": start,
        "end_index": end,
        "title": title if isinstance(title, str) else "",
        "url": url,
    }


def output_text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


def refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def message_item(item: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item, "type": "message", "status": status, "role": "assistant", "content": content}


def reasoning_item(item: str, blocks: Sequence[Mapping[str, Any]], *, sealed: bool) -> dict[str, Any]:
    """A reasoning item for a run of thinking / redacted_thinking blocks (whole: signed)."""
    summary = [
        {"type": "summary_text", "text": block["thinking"]}
        for block in blocks
        if block["type"] == "thinking" and block["thinking"]
    ]
    reasoning: dict[str, Any] = {"id": item, "type": "reasoning", "summary": summary}
    if sealed:
        reasoning["encrypted_content"] = seal_reasoning(blocks)
    return reasoning


def call_item(item: str, claude_id: str, tool: ToolName, *, status: str | None) -> dict[str, Any]:
    """A function_call (with `status`) or custom_tool_call (its type has none) item, without its
    `arguments` / `input`."""
    call: dict[str, Any] = {"id": item, "type": "function_call" if tool.kind == "function" else "custom_tool_call"}
    if tool.kind == "function" and status is not None:
        call["status"] = status
    call["call_id"] = client_call_id(claude_id)
    call["name"] = tool.name
    if tool.namespace is not None:
        call["namespace"] = tool.namespace
    return call


def custom_input(tool_input: Any) -> str:
    """A custom tool's text from the input Claude gave its one-string tool. Input of another shape
    (the model may stray from the schema) is passed on as its JSON, for the client to judge."""
    if isinstance(tool_input, dict):
        text = tool_input.get(CUSTOM_TOOL_INPUT)
        if isinstance(text, str) and len(tool_input) == 1:
            return text
    return orjson.dumps(tool_input).decode()


def web_search_item(item: str, tool_input: Any, status: str) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "search"}
    query = tool_input.get("query") if isinstance(tool_input, dict) else None
    if isinstance(query, str):
        action["query"] = query
    return {"id": item, "type": "web_search_call", "status": status, "action": action}


def web_search_status(result: Mapping[str, Any]) -> str:
    """A web_search_tool_result block's outcome: its content is the results, or an error object."""
    content = result.get("content")
    return "failed" if isinstance(content, dict) else "completed"


def response_object(
    request: ResponsesRequest,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """The `Response` object: its own fields, then every field it repeats from the request."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": request.requested_model,
        "output": output,
        "usage": usage,
        "error": error,
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        **request.echo,
    }


def _status(stop_reason: Any) -> tuple[str, str | None]:
    reason = incomplete_reason(stop_reason)
    return ("incomplete" if reason else "completed"), reason


# The message ------------------------------------------------------------------------------------


def to_response(
    message: dict[str, Any],
    request: ResponsesRequest,
    *,
    response_id: str,
    created_at: int,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """The Response object for a Message. `usage`: the message's, when the caller has read it
    already (the route does, to meter it), so that it is read once."""
    try:
        if usage is None:
            usage = Usage.from_anthropic(message.get("usage"))
        output = _Output(request, response_id).build(message)
    except UpstreamError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError("The upstream API sent a malformed message.") from exc
    status, reason = _status(message.get("stop_reason"))
    return response_object(
        request,
        response_id=response_id,
        created_at=created_at,
        status=status,
        output=output,
        usage=responses_usage(usage),
        incomplete=reason,
    )


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise malformed(name, value)
    return value


class _Output:
    """The output items of one message, run by run (the module docstring has the rules)."""

    __slots__ = (
        "_annotations",
        "_chars",
        "_items",
        "_open",
        "_reasoning",
        "_request",
        "_response_id",
        "_search",
        "_texts",
    )

    def __init__(self, request: ResponsesRequest, response_id: str) -> None:
        self._request = request
        self._response_id = response_id
        self._items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item of the current run
        self._texts: list[str] = []  # the open message's text, block by block
        self._chars = 0
        self._annotations: list[dict[str, Any]] = []
        self._reasoning: list[dict[str, Any]] = []  # the open reasoning run's blocks
        self._search = ""  # the Claude id of the open web search

    def build(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        content = message.get("content")
        if not isinstance(content, list):
            raise malformed("content", content)
        for block in content:
            kind = block["type"]
            if kind == "text":
                self._text(block)
            elif kind in THINKING_BLOCKS:
                self._thinking(block)
            elif kind == "tool_use":
                self._close()
                self._add(self._call(block))
            elif kind == "server_tool_use" and block.get("name") == WEB_SEARCH_TOOL:
                self._close()
                self._search = _string(block["id"], "content.id")
                # No result yet: should none follow (the output was cut short), it is incomplete.
                self._add(web_search_item(self._id("ws"), block.get("input"), "incomplete"))
            elif kind == "web_search_tool_result":
                self._search_result(block)
            else:
                self._close()  # no Responses equivalent; it ends the run
        stop_reason = message.get("stop_reason")
        if stop_reason == "refusal":
            self._refusal(refusal_text(message.get("stop_details")))
        self._close(cut=incomplete_reason(stop_reason) is not None)
        return self._items

    def _id(self, prefix: str) -> str:
        return item_id(prefix, self._response_id, len(self._items))

    def _add(self, item: dict[str, Any]) -> dict[str, Any]:
        self._items.append(item)
        self._open = item
        return item

    def _text(self, block: dict[str, Any]) -> None:
        if self._open is None or self._open["type"] != "message":
            self._close()
            self._add(message_item(self._id("msg"), [], "completed"))
        text = _string(block["text"], "content.text")
        start = self._chars
        self._texts.append(text)
        self._chars += len(text)
        for citation in block.get("citations") or ():
            annotation = url_annotation(citation, start, self._chars)
            if annotation is not None:
                self._annotations.append(annotation)

    def _thinking(self, block: dict[str, Any]) -> None:
        if self._open is None or self._open["type"] != "reasoning":
            self._close()
            self._add(reasoning_item(self._id("rs"), (), sealed=False))
        self._reasoning.append(_sealable(block))

    def _call(self, block: dict[str, Any]) -> dict[str, Any]:
        tool = self._request.tool_names.client(_string(block["name"], "content.name"))
        prefix = "fc" if tool.kind == "function" else "ctc"
        call = call_item(self._id(prefix), _string(block["id"], "content.id"), tool, status="completed")
        tool_input = block.get("input")
        if tool.kind == "function":
            call["arguments"] = orjson.dumps(tool_input if tool_input is not None else {}).decode()
        else:
            call["input"] = custom_input(tool_input)
        return call

    def _search_result(self, block: dict[str, Any]) -> None:
        search = self._open
        if search is not None and search["type"] == "web_search_call" and block.get("tool_use_id") == self._search:
            search["status"] = web_search_status(block)
            self._open = None
        self._close()

    def _refusal(self, text: str) -> None:
        """A refusal part ends the open message, or a message of its own."""
        if self._open is None or self._open["type"] != "message":
            self._close()
            self._add(message_item(self._id("msg"), [], "completed"))
        self._close_text(self._open)
        self._open["content"].append(refusal_part(text))  # type: ignore[index]

    def _close_text(self, message: dict[str, Any] | None) -> None:
        """Finish the open message's text part (a message has one, unless it is only a refusal)."""
        if message is not None and self._texts:
            message["content"].append(output_text_part("".join(self._texts), self._annotations))
        self._texts, self._chars, self._annotations = [], 0, []

    def _close(self, *, cut: bool = False) -> None:
        """End the current run. `cut`: the output was cut short in it, so its item is incomplete."""
        item = self._open
        if item is None:
            return
        self._open = None
        kind = item["type"]
        if kind == "message":
            self._close_text(item)
        elif kind == "reasoning":
            item.update(reasoning_item(item["id"], self._reasoning, sealed=self._request.include_encrypted_reasoning))
            self._reasoning = []
        if cut and kind in ("message", "function_call"):
            item["status"] = "incomplete"


def _sealable(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking block as sealed: exactly the fields Claude needs back."""
    if block["type"] == "redacted_thinking":
        return {"type": "redacted_thinking", "data": _string(block["data"], "content.data")}
    return {
        "type": "thinking",
        "thinking": _string(block.get("thinking", ""), "content.thinking"),
        "signature": _string(block.get("signature", ""), "content.signature"),
    }
