"""Anthropic stream events → OpenAI `chat.completion.chunk` SSE bytes (design §4).

`StreamTranslator` is a pure state machine: the caller feeds it each upstream event (name and raw
data) as it arrives and writes whatever bytes come back straight to the client. Chunks are built
from a prefix serialised once at `message_start` plus a small per-event part, so the hot path is
one `orjson.dumps` of a string and a few concatenations.

Ending: `finish()` after upstream ended normally emits the usage chunk (when asked for) and
``data: [DONE]``; `fail()` (or an upstream `error` event) emits ``data: {"error": {...}}`` and
then nothing. The openai SDK raises `APIError` on any chunk with an ``error`` key, and leaving out
``[DONE]`` makes clients that wait for it see an abnormal end too; a failed stream never ends
looking like a clean ``finish_reason: "stop"``. `finish()` on a stream that never reached
`message_delta` (upstream body cut short) fails it the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proxy.errors import ProxyError, UpstreamError
from proxy.translate.errors import from_error_event
from proxy.translate.response import completion_id, finish_reason, to_openai_usage

__all__ = ["StreamTranslator"]

_DONE = b"data: [DONE]\n\n"
_PING = b": ping\n\n"
_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'
_FIRST_DELTA = b'{"role":"assistant","content":""}'

_Handler = Callable[["StreamTranslator", dict[str, Any]], bytes]


class StreamTranslator:
    __slots__ = (
        "_base",
        "_complete",
        "_created",
        "_done",
        "_finish_reason",
        "_head",
        "_include_usage",
        "_initial_args",
        "_model",
        "_tool_index",
        "_usage",
    )

    def __init__(self, *, created: int, include_usage: bool, model: str) -> None:
        self._created = created
        self._include_usage = include_usage
        self._model = model
        self._base = b""  # b'{"id":…,"object":…,"created":…,"model":…,' once message_start is seen
        self._head = b""  # b"data: " + _base + b'"choices":[{"index":0,"delta":'
        self._usage: dict[str, Any] | None = None  # Anthropic usage: message_start's, then message_delta's
        self._tool_index: dict[int, int] = {}  # content block index → OpenAI tool call index
        self._initial_args: dict[int, Any] = {}  # tool block index → its start `input`, until a delta comes
        self._finish_reason: str | None = None
        self._complete = False  # message_delta seen: everything but message_stop has arrived
        self._done = False

    @property
    def done(self) -> bool:
        """The stream's last bytes (``[DONE]`` or an error) have been produced."""
        return self._done

    @property
    def started(self) -> bool:
        """`message_start` has been seen (and the first chunk produced)."""
        return bool(self._head)

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def usage(self) -> dict[str, Any] | None:
        """The OpenAI usage so far; None before `message_start`."""
        return None if self._usage is None else to_openai_usage(self._usage)

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
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return self.fail(UpstreamError(f"Upstream sent a malformed {event!r} stream event."))

    def finish(self) -> bytes:
        if self._done:
            return b""
        if not self._complete:
            return self.fail(UpstreamError("Upstream stream ended before the response was complete."))
        self._done = True
        if self._include_usage and self._usage is not None:
            usage = orjson.dumps(to_openai_usage(self._usage))
            return b"data: " + self._base + b'"choices":[],"usage":' + usage + b"}\n\n" + _DONE
        return _DONE

    def fail(self, error: ProxyError) -> bytes:
        if self._done:
            return b""
        self._done = True
        return b"data: " + error.to_json() + b"\n\n"

    def _message_start(self, payload: dict[str, Any]) -> bytes:
        if self._head:
            return b""
        message = payload["message"]
        self._model = message.get("model") or self._model
        fixed = {
            "id": completion_id(message["id"]),
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
        self._base = orjson.dumps(fixed)[:-1] + b","
        self._head = b"data: " + self._base + b'"choices":[{"index":0,"delta":'
        self._usage = dict(message.get("usage") or {})
        return self._head + _FIRST_DELTA + _TAIL

    def _content_block_start(self, payload: dict[str, Any]) -> bytes:
        if not self._head:
            return b""
        block = payload["content_block"]
        kind = block.get("type")
        if kind == "tool_use":
            index = len(self._tool_index)
            self._tool_index[payload["index"]] = index
            self._initial_args[payload["index"]] = block.get("input")
            function = {"name": block["name"], "arguments": ""}
            call = {"index": index, "id": block["id"], "type": "function", "function": function}
            return self._head + orjson.dumps({"tool_calls": [call]}) + _TAIL
        # Text and thinking blocks start empty; should one ever carry text, it is not lost.
        if kind == "text" and block.get("text"):
            return self._head + b'{"content":' + orjson.dumps(block["text"]) + b"}" + _TAIL
        if kind == "thinking" and block.get("thinking"):
            return self._head + b'{"reasoning_content":' + orjson.dumps(block["thinking"]) + b"}" + _TAIL
        return b""

    def _content_block_delta(self, payload: dict[str, Any]) -> bytes:
        if not self._head:
            return b""
        delta = payload["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            text = delta["text"]
            return self._head + b'{"content":' + orjson.dumps(text) + b"}" + _TAIL if text else b""
        if kind == "thinking_delta":
            text = delta["thinking"]
            return self._head + b'{"reasoning_content":' + orjson.dumps(text) + b"}" + _TAIL if text else b""
        if kind == "input_json_delta":
            # Only client tool calls are forwarded; server tools (web search …) run upstream.
            index = self._tool_index.get(payload["index"])
            fragment = delta["partial_json"]
            if index is None or not fragment:
                return b""
            self._initial_args.pop(payload["index"], None)
            return self._arguments(index, fragment)
        # signature_delta, citations_delta and future delta types have no OpenAI equivalent.
        return b""

    def _content_block_stop(self, payload: dict[str, Any]) -> bytes:
        block_index = payload["index"]
        if block_index not in self._initial_args:
            return b""
        # A tool call whose input streamed no fragment (no arguments): send its start input,
        # "{}" for a tool without parameters, as the non-streaming response would.
        initial = self._initial_args.pop(block_index)
        arguments = orjson.dumps(initial if initial is not None else {}).decode()
        return self._arguments(self._tool_index[block_index], arguments)

    def _message_delta(self, payload: dict[str, Any]) -> bytes:
        if not self._head:
            return b""
        reason = finish_reason((payload.get("delta") or {}).get("stop_reason"))
        self._finish_reason = reason
        self._complete = True
        # message_delta's counts are cumulative: they replace message_start's, and an absent
        # (null) one leaves the earlier value standing.
        usage = payload.get("usage")
        if usage and self._usage is not None:
            self._usage.update((key, value) for key, value in usage.items() if value is not None)
        return self._head + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]}\n\n"

    def _message_stop(self, payload: dict[str, Any]) -> bytes:
        return b""

    def _ping(self, payload: dict[str, Any]) -> bytes:
        return _PING

    def _error(self, payload: dict[str, Any]) -> bytes:
        return self.fail(from_error_event(payload))

    def _arguments(self, index: int, fragment: str) -> bytes:
        return (
            self._head
            + b'{"tool_calls":[{"index":'
            + str(index).encode()
            + b',"function":{"arguments":'
            + orjson.dumps(fragment)
            + b"}}]}"
            + _TAIL
        )


_HANDLERS: dict[str, _Handler] = {
    "message_start": StreamTranslator._message_start,
    "content_block_start": StreamTranslator._content_block_start,
    "content_block_delta": StreamTranslator._content_block_delta,
    "content_block_stop": StreamTranslator._content_block_stop,
    "message_delta": StreamTranslator._message_delta,
    "message_stop": StreamTranslator._message_stop,
    "error": StreamTranslator._error,
    "ping": StreamTranslator._ping,
}
