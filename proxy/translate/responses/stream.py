"""Anthropic stream events → OpenAI Responses stream events (issue 15, design §9).

`ResponsesStream` is a pure state machine with the interface every dialect's stream has: the
pipeline feeds it each upstream event (name and raw data) as it arrives and writes whatever bytes
come back straight to the client; `end()` when upstream closed; `fail()` when the pipeline gives
up. Events are named SSE events (``event: response.output_text.delta``), each `data` carrying a
strictly increasing `sequence_number`; there is no ``[DONE]``. A stream ends with exactly one of
`response.completed`, `response.incomplete` or `response.failed`, sent at `message_delta` (which
carries the stop reason and the final usage) or at the failure.

Items are the ones `response.to_response` builds, built with the same helpers: an output item is
opened (`response.output_item.added`) when the upstream block that starts it starts, and closed
(`response.output_item.done`) when a block of another run starts, or at `message_delta`: only
then is it known whether a run of text blocks goes on, and whether the item was cut short. Text,
reasoning summaries, function arguments and custom tool input are forwarded delta by delta as
they arrive; a custom tool's text is decoded from the JSON string Claude streams it in
(`_StreamedString`). What is kept is only what the final `Response` object needs.

Odd upstream data (a field missing or of the wrong type, usage counts that are not counts) is
malformed upstream data: the stream ends with `response.failed`, never an exception escaping
into the relay.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from proxy.errors import ProxyError, UpstreamError, stream_ended_early
from proxy.translate.claude.refusals import refusal_text
from proxy.translate.errors import from_error_event
from proxy.translate.responses.common import CUSTOM_TOOL_INPUT, ResponsesRequest, ToolName, item_id
from proxy.translate.responses.response import (
    THINKING_BLOCKS,
    WEB_SEARCH_TOOL,
    call_item,
    custom_input,
    incomplete_reason,
    message_item,
    output_text_part,
    reasoning_item,
    refusal_part,
    response_object,
    responses_usage,
    url_annotation,
    web_search_item,
    web_search_status,
)
from proxy.usage import Usage, checked_usage, malformed

__all__ = ["ResponsesStream"]

_PING: Final = b": ping\n\n"
# The `ResponseError.code` values a gateway failure can carry; any other → "server_error".
_ERROR_CODES: Final = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
_TEXT_DELTA: Final = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'

_Handler = Callable[["ResponsesStream", dict[str, Any]], bytes]


def _text(value: Any, name: str) -> str:
    """A string field of an event; any other type is malformed upstream data."""
    if not isinstance(value, str):
        raise malformed(name, value)
    return value


def _parsed(fragments: list[str], initial: Any) -> Any:
    """A tool's input from its streamed JSON (its start `input` when none streamed); None if the
    JSON does not parse."""
    if not fragments:
        return initial if initial is not None else {}
    try:
        return orjson.loads("".join(fragments))
    except orjson.JSONDecodeError:
        return None


class ResponsesStream:
    """One upstream stream → the Responses events of one response."""

    __slots__ = (
        "_annotations",
        "_arguments",
        "_block",
        "_block_index",
        "_call_done",
        "_chars",
        "_citations",
        "_claude_id",
        "_created_at",
        "_custom",
        "_done",
        "_fragments",
        "_initial",
        "_item",
        "_keep_sealed",
        "_output",
        "_part_open",
        "_reasoning",
        "_request",
        "_response",
        "_response_id",
        "_seq",
        "_signature",
        "_started",
        "_summaries",
        "_summary_open",
        "_text_start",
        "_text_suffix",
        "_texts",
        "_thinking",
        "_tool",
        "_usage",
    )

    def __init__(
        self, request: ResponsesRequest, *, response_id: str, created_at: int, keep_sealed: bool = False
    ) -> None:
        """`keep_sealed`: `response` (what the gateway stores) keeps Claude's thinking sealed in its
        reasoning items even when the client did not ask for `reasoning.encrypted_content`; the
        events the client reads carry it only when it asked."""
        self._request = request
        self._keep_sealed = keep_sealed and not request.include_encrypted_reasoning
        self._response_id = response_id
        self._created_at = created_at
        self._seq = 0
        self._started = False  # response.created sent
        self._done = False  # the terminal event sent
        self._response: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None  # Anthropic usage: message_start's, then message_delta's
        self._output: list[dict[str, Any]] = []  # the closed items, in order
        self._item: dict[str, Any] | None = None  # the open item (its output_index is len(_output))
        # The upstream block being streamed: its index and type ("text", "thinking", "tool_use", …).
        self._block_index: int | None = None
        self._block = ""
        # The open message: its text so far, block by block, and annotations.
        self._texts: list[str] = []
        self._chars = 0
        self._annotations: list[dict[str, Any]] = []
        self._part_open = False
        self._text_suffix = b""  # the bytes after `sequence_number` in its text deltas
        self._text_start = 0  # characters of the part before the current text block
        self._citations: list[Any] = []  # the current text block's citations
        # The open reasoning run: its whole blocks, and the current thinking block's parts.
        self._reasoning: list[dict[str, Any]] = []
        self._thinking: list[str] = []
        self._signature: list[str] = []
        self._summaries = 0
        self._summary_open = False
        # The open call or web search: its streamed JSON input.
        self._tool: ToolName | None = None
        self._fragments: list[str] = []
        self._initial: Any = None
        self._custom: _StreamedString | None = None
        self._arguments: str | None = None  # the call's final arguments / input, once its block stopped
        self._call_done = False
        self._claude_id = ""  # the open call's or web search's id, as Claude made it

    # The interface -------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """The terminal event (completed, incomplete or failed) has been produced."""
        return self._done

    @property
    def tokens(self) -> Usage | None:
        """The tokens used so far, as the gateway meters them; None before `message_start`."""
        return None if self._usage is None else Usage.from_anthropic(self._usage)

    @property
    def response(self) -> dict[str, Any] | None:
        """The final Response object once the response completed (or is incomplete); else None."""
        return self._response

    def feed(self, event: str, data: bytes) -> bytes:
        if self._done:
            return b""
        if event == "ping":
            return _PING
        handler = _HANDLERS.get(event)
        if handler is None and event != "message":
            return b""
        try:
            payload = orjson.loads(data)
            if handler is None:
                # An event without an `event:` line: route it by the payload's own type.
                handler = _HANDLERS.get(payload.get("type"))
                if handler is None:
                    return b""
            return handler(self, payload)
        except UpstreamError as exc:  # a field the handler checked, named
            return self.fail(exc)
        except (ValueError, KeyError, TypeError, AttributeError):  # orjson's JSONDecodeError is a ValueError
            return self.fail(UpstreamError(f"Upstream sent a malformed {event!r} stream event."))

    def end(self) -> bytes:
        """Upstream closed: nothing more if the response ended, else it failed."""
        return b"" if self._done else self.fail(stream_ended_early())

    def fail(self, error: ProxyError) -> bytes:
        """`response.failed` carrying `error`; nothing if the response already ended."""
        if self._done:
            return b""
        out = self._start()
        code = error.code if error.code in _ERROR_CODES else "server_error"
        tokens = self.tokens
        failed = self._response_object(
            "failed",
            self._output,
            None if tokens is None else responses_usage(tokens),
            error={"code": code, "message": error.message},
        )
        self._done = True
        return out + self._event("response.failed", {"response": failed})

    # Events ------------------------------------------------------------------------------

    def _event(self, kind: str, body: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **body}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _item_event(self, kind: str, **fields: Any) -> bytes:
        """An event about the open item: its id and output_index, then `fields`."""
        assert self._item is not None
        return self._event(kind, {"item_id": self._item["id"], "output_index": len(self._output), **fields})

    def _response_object(self, status: str, output: list[dict[str, Any]], usage: Any, **more: Any) -> dict[str, Any]:
        return response_object(
            self._request,
            response_id=self._response_id,
            created_at=self._created_at,
            status=status,
            output=output,
            usage=usage,
            **more,
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        created = self._response_object("in_progress", [], None)
        return self._event("response.created", {"response": created}) + self._event(
            "response.in_progress", {"response": created}
        )

    # Upstream handlers ---------------------------------------------------------------------

    def _message_start(self, payload: dict[str, Any]) -> bytes:
        if self._usage is not None:
            return b""
        message = payload["message"]
        self._usage = dict(checked_usage(message.get("usage")))
        return self._start()

    def _content_block_start(self, payload: dict[str, Any]) -> bytes:
        if self._usage is None:
            return b""
        index = payload["index"]
        block = payload["content_block"]
        kind = block["type"]
        out = self._stop_block()
        if kind == "text":
            out += self._start_text(block)
        elif kind in THINKING_BLOCKS:
            out += self._start_thinking(block)
        elif kind == "tool_use":
            out += self._close() + self._start_call(block)
        elif kind == "server_tool_use" and block.get("name") == WEB_SEARCH_TOOL:
            out += self._close() + self._start_search(block)
        elif kind == "web_search_tool_result":
            out += self._search_result(block)
        else:
            out += self._close()  # a block with no Responses equivalent ends the run
            kind = ""
        self._block_index = index
        self._block = kind
        return out

    def _content_block_delta(self, payload: dict[str, Any]) -> bytes:
        if payload["index"] != self._block_index:
            return b""
        delta = payload["delta"]
        kind = delta["type"]
        if kind == "text_delta" and self._block == "text":
            return self._text_delta(_text(delta.get("text"), "delta.text"))
        if kind == "citations_delta" and self._block == "text":
            self._citations.append(delta["citation"])
        elif kind == "thinking_delta" and self._block == "thinking":
            return self._thinking_delta(_text(delta.get("thinking"), "delta.thinking"))
        elif kind == "signature_delta" and self._block == "thinking":
            self._signature.append(_text(delta.get("signature"), "delta.signature"))
        elif kind == "input_json_delta" and self._block in ("tool_use", "server_tool_use"):
            return self._input_delta(_text(delta.get("partial_json"), "delta.partial_json"))
        # Future delta types have no Responses equivalent.
        return b""

    def _content_block_stop(self, payload: dict[str, Any]) -> bytes:
        if payload["index"] != self._block_index:
            return b""
        return self._stop_block()

    def _message_delta(self, payload: dict[str, Any]) -> bytes:
        if self._usage is None:
            return b""
        delta = payload.get("delta") or {}
        # message_delta's counts are cumulative: they replace message_start's, and an absent
        # (null) one leaves the earlier value standing.
        usage = checked_usage(payload.get("usage"))
        self._usage.update((key, value) for key, value in usage.items() if value is not None)
        stop_reason = delta.get("stop_reason")
        out = self._stop_block()
        if stop_reason == "refusal":
            out += self._refusal(refusal_text(delta.get("stop_details")))
        reason = incomplete_reason(stop_reason)
        out += self._close(cut=reason is not None)
        status = "incomplete" if reason else "completed"
        tokens = self.tokens
        assert tokens is not None
        self._response = self._response_object(status, self._output, responses_usage(tokens), incomplete=reason)
        self._done = True
        shown = self._response
        if self._keep_sealed:
            shown = {**shown, "output": [_unsealed(item) for item in self._output]}
        return out + self._event(f"response.{status}", {"response": shown})

    def _message_stop(self, payload: dict[str, Any]) -> bytes:
        return b""

    def _error(self, payload: dict[str, Any]) -> bytes:
        return self.fail(from_error_event(payload))

    # Opening items -------------------------------------------------------------------------

    def _open(self, item: dict[str, Any]) -> bytes:
        self._item = item
        return self._event("response.output_item.added", {"output_index": len(self._output), "item": item})

    def _open_message(self) -> bytes:
        return self._open(message_item(self._id("msg"), [], "in_progress"))

    def _id(self, prefix: str) -> str:
        return item_id(prefix, self._response_id, len(self._output))

    def _start_text(self, block: dict[str, Any]) -> bytes:
        out = b""
        if self._item is None or self._item["type"] != "message":
            out += self._close() + self._open_message()
            self._part_open = True
            self._text_suffix = (
                b',"item_id":'
                + orjson.dumps(self._item["id"])  # type: ignore[index]
                + b',"output_index":'
                + str(len(self._output)).encode()
                + b',"content_index":0,"logprobs":[],"delta":'
            )
            out += self._item_event("response.content_part.added", content_index=0, part=output_text_part("", []))
        self._text_start = self._chars
        self._citations = list(block.get("citations") or ())
        # Text blocks start empty; should one ever carry text, it is not lost.
        return out + self._text_delta(_text(block.get("text", ""), "content_block.text"))

    def _text_delta(self, text: str) -> bytes:
        if not text:
            return b""
        self._texts.append(text)
        self._chars += len(text)
        seq = self._seq
        self._seq += 1
        return _TEXT_DELTA + str(seq).encode() + self._text_suffix + orjson.dumps(text) + b"}\n\n"

    def _start_thinking(self, block: dict[str, Any]) -> bytes:
        out = b""
        if self._item is None or self._item["type"] != "reasoning":
            out += self._close() + self._open(reasoning_item(self._id("rs"), (), sealed=False))
        if block["type"] == "redacted_thinking":
            self._reasoning.append(
                {"type": "redacted_thinking", "data": _text(block.get("data"), "content_block.data")}
            )
            return out
        self._thinking = []
        self._signature = [_text(block.get("signature", ""), "content_block.signature")]
        self._summary_open = False
        return out + self._thinking_delta(_text(block.get("thinking", ""), "content_block.thinking"))

    def _thinking_delta(self, text: str) -> bytes:
        if not text:
            return b""
        self._thinking.append(text)
        out = b""
        if not self._summary_open:
            self._summary_open = True
            part = {"type": "summary_text", "text": ""}
            out += self._item_event("response.reasoning_summary_part.added", summary_index=self._summaries, part=part)
        return out + self._item_event(
            "response.reasoning_summary_text.delta", summary_index=self._summaries, delta=text
        )

    def _start_call(self, block: dict[str, Any]) -> bytes:
        self._tool = self._request.tool_names.client(_text(block.get("name"), "content_block.name"))
        self._claude_id = _text(block.get("id"), "content_block.id")
        custom = self._tool.kind == "custom"
        call = call_item(self._id("ctc" if custom else "fc"), self._claude_id, self._tool, status="in_progress")
        call["input" if custom else "arguments"] = ""
        self._fragments = []
        self._initial = block.get("input")
        self._custom = _StreamedString() if custom else None
        self._arguments = None
        return self._open(call)

    def _start_search(self, block: dict[str, Any]) -> bytes:
        self._claude_id = _text(block.get("id"), "content_block.id")
        self._fragments = []
        self._initial = block.get("input")
        search = web_search_item(self._id("ws"), None, "in_progress")
        return self._open(search) + self._item_event("response.web_search_call.in_progress")

    def _input_delta(self, fragment: str) -> bytes:
        if not fragment:
            return b""
        self._fragments.append(fragment)
        if self._block != "tool_use":
            return b""  # a web search's query is shown when the search is done
        if self._custom is None:
            return self._item_event("response.function_call_arguments.delta", delta=fragment)
        text = self._custom.feed(fragment)
        return self._item_event("response.custom_tool_call_input.delta", delta=text) if text else b""

    # Ending blocks and items ---------------------------------------------------------------

    def _stop_block(self) -> bytes:
        """The current upstream block has ended (its stop, or the next event that implies it)."""
        kind = self._block
        self._block_index = None
        self._block = ""
        if kind == "text":
            return self._text_stop()
        if kind == "thinking":
            return self._thinking_stop()
        if kind == "tool_use":
            return self._call_stop()
        if kind == "server_tool_use":
            return self._item_event("response.web_search_call.searching")
        return b""

    def _text_stop(self) -> bytes:
        out = b""
        for citation in self._citations:
            annotation = url_annotation(citation, self._text_start, self._chars)
            if annotation is not None:
                out += self._item_event(
                    "response.output_text.annotation.added",
                    content_index=0,
                    annotation_index=len(self._annotations),
                    annotation=annotation,
                )
                self._annotations.append(annotation)
        self._citations = []
        return out

    def _thinking_stop(self) -> bytes:
        text = "".join(self._thinking)
        self._reasoning.append({"type": "thinking", "thinking": text, "signature": "".join(self._signature)})
        if not self._summary_open:
            return b""
        self._summary_open = False
        index = self._summaries
        self._summaries += 1
        part = {"type": "summary_text", "text": text}
        return self._item_event(
            "response.reasoning_summary_text.done", summary_index=index, text=text
        ) + self._item_event("response.reasoning_summary_part.done", summary_index=index, part=part)

    def _call_stop(self) -> bytes:
        """The call's input is whole: its last delta (if the stream held any back) and `.done`."""
        if self._custom is None:
            if self._fragments:
                self._arguments = "".join(self._fragments)
                return self._item_event("response.function_call_arguments.done", arguments=self._arguments)
            # No fragment streamed (a tool without parameters): its start input, "{}", as the
            # non-streaming response has it.
            self._arguments = orjson.dumps(self._initial if self._initial is not None else {}).decode()
            return self._item_event("response.function_call_arguments.delta", delta=self._arguments) + self._item_event(
                "response.function_call_arguments.done", arguments=self._arguments
            )
        parsed = _parsed(self._fragments, self._initial)
        text = custom_input(parsed) if parsed is not None else "".join(self._fragments)
        self._arguments = text
        sent = self._custom.sent
        out = b""
        if text.startswith(sent) and len(text) > len(sent):
            out += self._item_event("response.custom_tool_call_input.delta", delta=text[len(sent) :])
        return out + self._item_event("response.custom_tool_call_input.done", input=text)

    def _search_result(self, block: dict[str, Any]) -> bytes:
        item = self._item
        if item is None or item["type"] != "web_search_call" or block.get("tool_use_id") != self._claude_id:
            return self._close()
        status = web_search_status(block)
        out = self._item_event("response.web_search_call.completed") if status == "completed" else b""
        return out + self._done_item(web_search_item(item["id"], _parsed(self._fragments, self._initial), status))

    def _refusal(self, text: str) -> bytes:
        """A refusal part ends the open message, or a message of its own."""
        if self._item is not None and self._item["type"] == "message":
            out = self._text_done()
        else:
            out = self._close() + self._open_message()
        index = 1 if self._part_open else 0
        self._item["content"].append(refusal_part(text))  # type: ignore[index]
        return (
            out
            + self._item_event("response.content_part.added", content_index=index, part=refusal_part(""))
            + self._item_event("response.refusal.delta", content_index=index, delta=text)
            + self._item_event("response.refusal.done", content_index=index, refusal=text)
            + self._item_event("response.content_part.done", content_index=index, part=refusal_part(text))
        )

    def _text_done(self) -> bytes:
        """Finish the open message's text part (once)."""
        item = self._item
        if item is None or not self._part_open or item["content"]:
            return b""
        text = "".join(self._texts)
        part = output_text_part(text, self._annotations)
        item["content"].append(part)
        self._texts = []
        return self._item_event(
            "response.output_text.done", content_index=0, text=text, logprobs=[]
        ) + self._item_event("response.content_part.done", content_index=0, part=part)

    def _close(self, *, cut: bool = False) -> bytes:
        """Close the open item; `cut`: the output was cut short, so the item is incomplete."""
        item = self._item
        if item is None:
            return b""
        kind = item["type"]
        status = "incomplete" if cut else "completed"
        if kind == "message":
            out = self._text_done()
            return out + self._done_item(message_item(item["id"], item["content"], status))
        if kind == "reasoning":
            sealed = self._request.include_encrypted_reasoning or self._keep_sealed
            kept = reasoning_item(item["id"], self._reasoning, sealed=sealed)
            return self._done_item(_unsealed(kept) if self._keep_sealed else kept, kept)
        if kind == "web_search_call":  # no result came: the search was cut short
            return self._done_item(web_search_item(item["id"], _parsed(self._fragments, self._initial), "incomplete"))
        assert self._tool is not None
        out = b"" if self._arguments is not None else self._call_stop()
        call = call_item(item["id"], self._claude_id, self._tool, status=status)
        call["input" if self._tool.kind == "custom" else "arguments"] = self._arguments
        return out + self._done_item(call)

    def _done_item(self, item: dict[str, Any], kept: dict[str, Any] | None = None) -> bytes:
        """Close the open item: `item` as the client sees it, `kept` (default: the same) in `response`."""
        out = self._event("response.output_item.done", {"output_index": len(self._output), "item": item})
        self._output.append(item if kept is None else kept)
        self._item = None
        self._texts, self._chars, self._annotations, self._part_open = [], 0, [], False
        self._reasoning, self._summaries = [], 0
        return out


def _unsealed(item: dict[str, Any]) -> dict[str, Any]:
    if "encrypted_content" not in item:
        return item
    return {name: value for name, value in item.items() if name != "encrypted_content"}


_HANDLERS: dict[str, _Handler] = {
    "message_start": ResponsesStream._message_start,
    "content_block_start": ResponsesStream._content_block_start,
    "content_block_delta": ResponsesStream._content_block_delta,
    "content_block_stop": ResponsesStream._content_block_stop,
    "message_delta": ResponsesStream._message_delta,
    "message_stop": ResponsesStream._message_stop,
    "error": ResponsesStream._error,
}


# A custom tool's streamed input ---------------------------------------------------------------

# Claude streams a custom tool's text as the JSON of its one-string input: {"input": "…"}
# (`CUSTOM_TOOL_INPUT` names the field).
_KEY: Final = orjson.dumps(CUSTOM_TOOL_INPUT).decode()
_VALUE_START: Final = re.compile(r"\s*\{\s*" + re.escape(_KEY) + r'\s*:\s*"')
_OPENING: Final = "{" + _KEY + ':"'  # what _VALUE_START matches, without the whitespace
_WHITESPACE: Final = re.compile(r"\s+")
# One piece of a JSON string's body: plain characters, a surrogate pair, or one other escape.
_PIECE: Final = re.compile(
    r'[^"\\]+|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u(?![dD][89abAB])[0-9a-fA-F]{4}|\\["\\/bfnrt]'
)
_LONGEST_ESCAPE: Final = 12  # a surrogate pair
_LONGEST_OPENING: Final = 256  # whitespace allowed before the value begins


class _StreamedString:
    """Decodes the string value of ``{"input": "…"}`` as its JSON arrives in fragments, so that a
    custom tool's text reaches the client as it is written. Anything else (another shape, a bad
    escape) stops the decoding: the rest then comes whole when the block stops."""

    __slots__ = ("_pending", "_state", "sent")

    def __init__(self) -> None:
        self._pending = ""  # JSON not decoded yet
        self._state = "opening"  # then "value", then "ended" (the closing quote, or given up)
        self.sent = ""  # the text decoded (and forwarded) so far

    def feed(self, fragment: str) -> str:
        """The text that `fragment` completes (possibly none)."""
        if self._state == "ended":
            return ""
        self._pending += fragment
        if self._state == "opening":
            start = _VALUE_START.match(self._pending)
            if start is None:
                compact = _WHITESPACE.sub("", self._pending)
                if len(self._pending) > _LONGEST_OPENING or not _OPENING.startswith(compact):
                    self._state = "ended"
                return ""
            self._pending = self._pending[start.end() :]
            self._state = "value"
        return self._decode()

    def _decode(self) -> str:
        pending = self._pending
        position = 0
        while (piece := _PIECE.match(pending, position)) is not None:
            position = piece.end()
        rest = pending[position:]
        if rest.startswith('"') or (rest and (rest[0] != "\\" or len(rest) >= _LONGEST_ESCAPE)):
            self._state = "ended"  # the value's end, or JSON this decoder does not follow
        try:
            text: str = orjson.loads('"' + pending[:position] + '"')
        except orjson.JSONDecodeError:  # a lone low surrogate
            self._state = "ended"
            return ""
        self._pending = rest
        self.sent += text
        return text
