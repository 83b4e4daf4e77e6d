"""Anthropic stream events → OpenAI `chat.completion.chunk` SSE bytes (design §4).

`StreamTranslator` is a pure state machine: the caller feeds it each upstream event (name and raw
data) as it arrives and writes whatever bytes come back straight to the client. Chunks are built
from a prefix serialised once at `message_start` plus a small per-event part, so the hot path is
one `orjson.dumps` of a string and a few concatenations.

Ending: `end()` after upstream ended normally emits the usage chunk (when asked for) and
``data: [DONE]``; `fail()` (or an upstream `error` event) emits ``data: {"error": {...}}`` and
then nothing. The openai SDK raises `APIError` on any chunk with an ``error`` key, and leaving out
``[DONE]`` makes clients that wait for it see an abnormal end too; a failed stream never ends
looking like a clean ``finish_reason: "stop"``. `finish()` on a stream that never reached
`message_delta` (upstream body cut short) fails it the same way.

Beyond design §4: a thinking block, once its `signature_delta` and `content_block_stop` have come,
is sent whole in ``delta.thinking_blocks`` (a redacted one as soon as it starts), so a client can
echo it back with its tool calls (README, "Thinking round trip"); a text block's web search
citations become ``delta.annotations`` (`url_citation`, indexed in the streamed content) when it
stops; a `refusal` stop sends ``delta.refusal`` (Claude's explanation, as the non-streaming message's
`refusal`) just before the finish chunk. `ChoiceStreams` interleaves n upstream streams (`n` > 1) as
one client stream.

Odd upstream data (a usage count that is a string or negative, a field missing or of the wrong
type) is malformed upstream data: the stream ends with an error event, never a TypeError escaping
into the relay. `proxy.usage.checked_usage` is that rule for usage, shared with the non-streaming route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proxy.errors import ProxyError, UpstreamError, stream_ended_early
from proxy.translate.chat.response import (
    completion_id,
    finish_reason,
    merge_usage,
    thinking_block,
    to_openai_usage,
    url_citation,
)
from proxy.translate.claude.refusals import refusal_text
from proxy.translate.errors import from_error_event
from proxy.usage import Usage, checked_usage, malformed

__all__ = ["ChoiceStreams", "StreamTranslator"]

_DONE = b"data: [DONE]\n\n"
_PING = b": ping\n\n"
_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'
_FIRST_DELTA = b'{"role":"assistant","content":""}'

_Handler = Callable[["StreamTranslator", dict[str, Any]], bytes]


def _text(value: Any, name: str) -> str:
    """A string field of an event; any other type is malformed upstream data."""
    if not isinstance(value, str):
        raise malformed(name, value)
    return value


class StreamTranslator:
    """One upstream stream → chunks for one choice.

    `choice_index` tags every chunk's choice (n > 1); `completion_id` replaces the id derived from
    the upstream message, so that n streams share one; `terminal=False` leaves the usage chunk and
    ``[DONE]`` to the caller (`ChoiceStreams`), so that they come once for all choices.
    """

    __slots__ = (
        "_base",
        "_block_start",
        "_chars",
        "_choice_index",
        "_citations",
        "_complete",
        "_completion_id",
        "_created",
        "_done",
        "_failed",
        "_finish_reason",
        "_head",
        "_include_usage",
        "_initial_args",
        "_model",
        "_terminal",
        "_thinking",
        "_tool_index",
        "_usage",
    )

    def __init__(
        self,
        *,
        created: int,
        include_usage: bool,
        model: str,
        choice_index: int = 0,
        completion_id: str | None = None,
        terminal: bool = True,
    ) -> None:
        self._created = created
        self._include_usage = include_usage
        self._model = model
        self._choice_index = choice_index
        self._completion_id = completion_id
        self._terminal = terminal
        self._base = b""  # b'{"id":…,"object":…,"created":…,"model":…,' once message_start is seen
        self._head = b""  # b"data: " + _base + b'"choices":[{"index":<choice_index>,"delta":'
        self._usage: dict[str, Any] | None = None  # Anthropic usage: message_start's, then message_delta's
        self._tool_index: dict[int, int] = {}  # content block index → OpenAI tool call index
        self._initial_args: dict[int, Any] = {}  # tool block index → its start `input`, until a delta comes
        self._thinking: dict[int, dict[str, Any]] = {}  # thinking block index → the block so far
        self._block_start: dict[int, int] = {}  # text block index → content characters before it
        self._citations: dict[int, list[dict[str, Any]]] = {}  # text block index → its citations
        self._chars = 0  # characters of content streamed so far
        self._finish_reason: str | None = None
        self._complete = False  # message_delta seen: everything but message_stop has arrived
        self._done = False
        self._failed = False

    @property
    def done(self) -> bool:
        """The stream's last bytes (``[DONE]`` or an error) have been produced."""
        return self._done

    @property
    def started(self) -> bool:
        """`message_start` has been seen (and the first chunk produced)."""
        return bool(self._head)

    @property
    def failed(self) -> bool:
        """The stream ended with an error event."""
        return self._failed

    @property
    def complete(self) -> bool:
        """`message_delta` has been seen: the choice is whole."""
        return self._complete

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def anthropic_usage(self) -> dict[str, Any] | None:
        """The upstream usage so far, as Anthropic reports it; None before `message_start`."""
        return self._usage

    @property
    def tokens(self) -> Usage | None:
        """The tokens used so far, as the gateway meters them; None before `message_start`."""
        return None if self._usage is None else Usage.from_anthropic(self._usage)

    @property
    def usage(self) -> dict[str, Any] | None:
        """The OpenAI usage so far (the client's rendering of `tokens`); None before `message_start`."""
        tokens = self.tokens
        return None if tokens is None else to_openai_usage(tokens)

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
        """The upstream stream has closed: the closing chunks, or the one "ended too early" error
        when it closed before its message was complete (never passed off as a clean stop)."""
        if self._done:
            return b""
        if not self._complete:
            return self.fail(stream_ended_early())
        self._done = True
        if not self._terminal:
            return b""
        if self._include_usage and (usage := self.usage) is not None:
            return self.usage_chunk(usage) + _DONE
        return _DONE

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        """The final chunk of `stream_options.include_usage`: no choices, the given OpenAI usage."""
        return b"data: " + self._base + b'"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n"

    def fail(self, error: ProxyError) -> bytes:
        if self._done:
            return b""
        self._done = True
        self._failed = True
        return b"data: " + error.to_json() + b"\n\n"

    def _message_start(self, payload: dict[str, Any]) -> bytes:
        if self._head:
            return b""
        message = payload["message"]
        usage = checked_usage(message.get("usage"))
        if message.get("model"):
            self._model = _text(message["model"], "message.model")
        fixed = {
            "id": self._completion_id or completion_id(_text(message.get("id"), "message.id")),
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
        self._base = orjson.dumps(fixed)[:-1] + b","
        self._head = b"data: " + self._base + b'"choices":[{"index":' + str(self._choice_index).encode() + b',"delta":'
        self._usage = dict(usage)
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
            function = {"name": _text(block.get("name"), "content_block.name"), "arguments": ""}
            call = {
                "index": index,
                "id": _text(block.get("id"), "content_block.id"),
                "type": "function",
                "function": function,
            }
            return self._head + orjson.dumps({"tool_calls": [call]}) + _TAIL
        # Text and thinking blocks start empty; should one ever carry text, it is not lost.
        if kind == "text":
            self._block_start[payload["index"]] = self._chars
            for citation in block.get("citations") or ():
                self._citations.setdefault(payload["index"], []).append(citation)
            return self._content(block.get("text") or "")
        if kind == "thinking":
            self._thinking[payload["index"]] = dict(block)
            text = block.get("thinking")
            return self._head + b'{"reasoning_content":' + orjson.dumps(text) + b"}" + _TAIL if text else b""
        if kind == "redacted_thinking":
            return self._thinking_blocks(block)
        return b""

    def _content_block_delta(self, payload: dict[str, Any]) -> bytes:
        if not self._head:
            return b""
        delta = payload["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            return self._content(_text(delta.get("text"), "delta.text"))
        if kind == "thinking_delta":
            text = _text(delta.get("thinking"), "delta.thinking")
            thinking = self._thinking.get(payload["index"])
            if thinking is not None:
                thinking["thinking"] = thinking.get("thinking", "") + text
            return self._head + b'{"reasoning_content":' + orjson.dumps(text) + b"}" + _TAIL if text else b""
        if kind == "signature_delta":
            thinking = self._thinking.get(payload["index"])
            if thinking is not None:
                thinking["signature"] = thinking.get("signature", "") + _text(delta.get("signature"), "delta.signature")
            return b""
        if kind == "citations_delta":
            self._citations.setdefault(payload["index"], []).append(delta["citation"])
            return b""
        if kind == "input_json_delta":
            # Only client tool calls are forwarded; server tools (web search …) run upstream.
            index = self._tool_index.get(payload["index"])
            fragment = _text(delta.get("partial_json"), "delta.partial_json")
            if index is None or not fragment:
                return b""
            self._initial_args.pop(payload["index"], None)
            return self._arguments(index, fragment)
        # Future delta types have no OpenAI equivalent.
        return b""

    def _content_block_stop(self, payload: dict[str, Any]) -> bytes:
        block_index = payload["index"]
        thinking = self._thinking.pop(block_index, None)
        if thinking is not None:
            return self._thinking_blocks(thinking)
        start = self._block_start.pop(block_index, None)
        citations = self._citations.pop(block_index, None)
        if start is not None and citations:
            found = (url_citation(citation, start, self._chars) for citation in citations)
            annotations = [annotation for annotation in found if annotation is not None]
            return self._head + orjson.dumps({"annotations": annotations}) + _TAIL if annotations else b""
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
        delta = payload.get("delta") or {}
        reason = finish_reason(delta.get("stop_reason"))
        self._finish_reason = reason
        self._complete = True
        # message_delta's counts are cumulative: they replace message_start's, and an absent
        # (null) one leaves the earlier value standing.
        usage = checked_usage(payload.get("usage"))
        if self._usage is not None:
            self._usage.update((key, value) for key, value in usage.items() if value is not None)
        out = b""
        if delta.get("stop_reason") == "refusal":
            # The refusal delta, as OpenAI streams a refusal: Claude's explanation (stop_details).
            out = self._head + orjson.dumps({"refusal": refusal_text(delta.get("stop_details"))}) + _TAIL
        return out + self._head + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]}\n\n"

    def _message_stop(self, payload: dict[str, Any]) -> bytes:
        return b""

    def _ping(self, payload: dict[str, Any]) -> bytes:
        return _PING

    def _error(self, payload: dict[str, Any]) -> bytes:
        return self.fail(from_error_event(payload))

    def _content(self, text: str) -> bytes:
        if not text:
            return b""
        self._chars += len(text)
        return self._head + b'{"content":' + orjson.dumps(text) + b"}" + _TAIL

    def _thinking_blocks(self, block: dict[str, Any]) -> bytes:
        return self._head + orjson.dumps({"thinking_blocks": [thinking_block(block)]}) + _TAIL

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


class ChoiceStreams:
    """n upstream streams, one per choice (`n` > 1), as one client stream.

    Every chunk carries the shared `completion_id` and its choice's index; each choice starts with
    its own role chunk, as OpenAI's do. The caller reads the n upstream streams concurrently and
    hands over each event with `feed(choice, …)` and each stream's end with `end(choice)`; the
    usage chunk (the choices' usage summed, when asked for) and ``[DONE]`` follow the last end.
    An error in any choice ends the whole stream with the error event: the caller then closes the
    other upstream streams.
    """

    __slots__ = ("_done", "_ended", "_include_usage", "_translators")

    def __init__(self, n: int, *, created: int, include_usage: bool, model: str, completion_id: str) -> None:
        self._include_usage = include_usage
        self._translators = [
            StreamTranslator(
                created=created,
                include_usage=False,
                model=model,
                choice_index=k,
                completion_id=completion_id,
                terminal=False,
            )
            for k in range(n)
        ]
        self._ended = [False] * n
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def translators(self) -> list[StreamTranslator]:
        return self._translators

    @property
    def tokens(self) -> Usage | None:
        """The tokens every choice used so far; None before any `message_start`."""
        usages = [tokens for t in self._translators if (tokens := t.tokens) is not None]
        return sum(usages, Usage()) if usages else None

    def feed(self, choice: int, event: str, data: bytes) -> bytes:
        if self._done:
            return b""
        translator = self._translators[choice]
        out = translator.feed(event, data)
        if translator.failed:
            self._done = True
        return out

    def end(self, choice: int) -> bytes:
        """Upstream stream `choice` has ended (its body is exhausted)."""
        if self._done or self._ended[choice]:
            return b""
        self._ended[choice] = True
        out = self._translators[choice].end()
        if self._translators[choice].failed:
            self._done = True
            return out
        if not all(self._ended):
            return out
        self._done = True
        if self._include_usage:
            usages = [t.usage for t in self._translators]
            out += self._translators[0].usage_chunk(merge_usage([u for u in usages if u is not None]))
        return out + _DONE

    def fail(self, error: ProxyError) -> bytes:
        if self._done:
            return b""
        self._done = True
        return b"data: " + error.to_json() + b"\n\n"
