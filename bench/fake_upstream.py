"""A fake Anthropic Messages API, as fast as this machine allows: the ceiling of every benchmark.

Run as its own process: ``python -m bench.fake_upstream --port P [--event-delay S]``.

It is a bare ``asyncio.Protocol`` on uvloop that answers from precomputed bytes:

* ``POST …/v1/messages`` → a fixed ~40-word ``Message`` (id, model, one text block, ``end_turn``,
  usage); with ``"stream": true`` in the body, the real SSE sequence instead: ``message_start``,
  ``content_block_start``, 20 ``text_delta`` ``content_block_delta`` events, ``content_block_stop``,
  ``message_delta`` (stop_reason + usage) and ``message_stop``, chunked-encoded. Without a delay the
  whole stream is one write; with ``event_delay`` > 0 the first event goes out with the headers and
  each later one ``event_delay`` seconds after the previous one (a slow model).
* ``GET /healthz`` → 200; ``GET /v1/models`` → a one-model list.
* ``POST /_bench/config`` with ``{"event_delay": S}`` → changes the delay at run time, so the
  benchmark can switch scenarios without restarting the gateways in front; ``"pings": N`` (default
  0) adds N ``ping`` events after ``content_block_start`` (the real API sends them too), which
  make a slow stream longer without changing its text.

The parser understands what the three clients send (HTTP/1.1 keep-alive, ``Content-Length``
bodies, requests one after another on a connection); a chunked request body gets a 501.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import socket
from collections.abc import Callable
from typing import Any, cast

REPLY_TEXT = (
    "Hello! I am a fake Claude answering from a benchmark stub. Every reply is the same forty words, "
    "so the gateways in front are measured, not a model. Streams carry them as twenty text deltas "
    "of two words each, done."
)
REPLY_WORDS = REPLY_TEXT.split()
DELTAS = [" ".join(REPLY_WORDS[i : i + 2]) + (" " if i + 2 < len(REPLY_WORDS) else "") for i in range(0, 40, 2)]
MESSAGE_ID = "msg_01BenchFakeUpstreamReply"
DEFAULT_MODEL = "claude-sonnet-5-5"  # a current model: the gateway refuses retired ones
INPUT_TOKENS = 12
OUTPUT_TOKENS = 52

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_MODEL_RE = re.compile(rb'"model"\s*:\s*"([A-Za-z0-9._:@/-]{1,100})"')
_CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE_RE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_MAX_HEAD = 64 * 1024
_MAX_MODELS = 16  # precomputed replies kept per model name; others get the default model's

assert len(DELTAS) == 20 and len(REPLY_WORDS) == 40


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def message_body(model: str) -> bytes:
    """The non-streaming ``Message`` JSON."""
    return _dumps(
        {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": REPLY_TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
        }
    )


def sse_events(model: str) -> list[bytes]:
    """The streaming reply, one ``event: X\\ndata: {json}\\n\\n`` item per event."""
    start = {
        "type": "message_start",
        "message": {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
        },
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", start),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for text in DELTAS:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        events.append(("content_block_delta", delta))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": OUTPUT_TOKENS},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n" for name, data in events]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: str, content_type: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type + b"\r\nrequest-id: req_bench_fake\r\n"
        b"anthropic-organization-id: bench\r\n" + extra
    )


def _fixed(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return _head(status, content_type, b"content-length: %d\r\n\r\n" % len(body)) + body


class Replies:
    """Precomputed bytes of every reply for one model name."""

    __slots__ = ("_with_pings", "message", "stream_all", "stream_first", "stream_rest")

    def __init__(self, model: str) -> None:
        self.message = _fixed("200 OK", message_body(model))
        chunks = [_chunk(event) for event in sse_events(model)]
        chunks[-1] += b"0\r\n\r\n"  # the chunked terminator travels with the last event
        head = _head(
            "200 OK",
            b"text/event-stream; charset=utf-8",
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        self.stream_first = head + chunks[0]
        self.stream_rest = chunks[1:]
        self.stream_all = self.stream_first + b"".join(self.stream_rest)
        self._with_pings: dict[int, list[bytes]] = {0: self.stream_rest}

    def rest(self, pings: int) -> list[bytes]:
        """The events after the first, with ``pings`` ping events after content_block_start."""
        found = self._with_pings.get(pings)
        if found is None:
            found = self._with_pings[pings] = self.stream_rest[:1] + [PING] * pings + self.stream_rest[1:]
        return found


PING = _chunk(b'event: ping\ndata: {"type":"ping"}\n\n')
_HEALTH = _fixed("200 OK", b'{"status":"ok"}')
_MODELS = _fixed(
    "200 OK",
    _dumps(
        {
            "data": [
                {
                    "type": "model",
                    "id": DEFAULT_MODEL,
                    "display_name": "Fake",
                    "created_at": "2025-09-29T00:00:00Z",
                }
            ],
            "has_more": False,
            "first_id": DEFAULT_MODEL,
            "last_id": DEFAULT_MODEL,
        }
    ),
)
_NOT_FOUND = _fixed("404 Not Found", b'{"type":"error","error":{"type":"not_found_error","message":"no such route"}}')
_BAD_REQUEST = _fixed("400 Bad Request", b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}')
_NOT_IMPLEMENTED = _fixed(
    "501 Not Implemented", b'{"type":"error","error":{"type":"api_error","message":"chunked bodies unsupported"}}'
)


class Server:
    """Shared state: the current per-event delay and the precomputed replies per model."""

    def __init__(self, event_delay: float) -> None:
        self.event_delay = event_delay
        self.pings = 0
        self._replies: dict[bytes, Replies] = {}
        self._default = Replies(DEFAULT_MODEL)

    def replies(self, body: bytes) -> Replies:
        found = _MODEL_RE.search(body)
        if found is None:
            return self._default
        name = found.group(1)
        cached = self._replies.get(name)
        if cached is None:
            if len(self._replies) >= _MAX_MODELS:
                return self._default
            cached = self._replies[name] = Replies(name.decode())
        return cached

    def configure(self, body: bytes) -> bytes:
        try:
            settings = json.loads(body)
            delay = float(settings["event_delay"])
            pings = int(settings.get("pings", 0))
        except (ValueError, KeyError, TypeError):
            return _BAD_REQUEST
        if not 0 <= delay <= 10 or not 0 <= pings <= 1000:
            return _BAD_REQUEST
        self.event_delay = delay
        self.pings = pings
        return _fixed("200 OK", _dumps({"event_delay": delay, "pings": pings}))


class Connection(asyncio.Protocol):
    """One client connection: parses requests one after another and answers each from bytes."""

    __slots__ = ("_buffer", "_busy", "_close_after", "_loop", "_server", "_timer", "_transport")

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a delayed stream is still being written
        self._close_after = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        buffer = self._buffer
        while not self._busy and self._transport is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    self._transport.close()
                return
            head = bytes(buffer[:end])
            if _CHUNKED_RE.search(head):
                self._transport.write(_NOT_IMPLEMENTED)
                self._transport.close()
                return
            found = _CONTENT_LENGTH_RE.search(head)
            length = int(found.group(1)) if found else 0
            total = end + 4 + length
            if len(buffer) < total:
                return
            body = bytes(buffer[end + 4 : total])
            del buffer[:total]
            self._close_after = _CLOSE_RE.search(head) is not None
            self._respond(head, body)
            if self._close_after and not self._busy and self._transport is not None:
                self._transport.close()

    def _respond(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        line_end = head.find(b"\r\n")
        method, _, rest = (head if line_end < 0 else head[:line_end]).partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method == b"POST" and path.endswith(b"/v1/messages"):
            replies = self._server.replies(body)
            if _STREAM_RE.search(body) is None:
                transport.write(replies.message)
            elif self._server.event_delay <= 0:
                transport.write(replies.stream_all)
            else:
                transport.write(replies.stream_first)
                self._busy = True
                self._schedule(replies.rest(self._server.pings), 0, self._server.event_delay)
        elif path == b"/healthz":
            transport.write(_HEALTH)
        elif method == b"GET" and path.endswith(b"/v1/models"):
            transport.write(_MODELS)
        elif method == b"POST" and path == b"/_bench/config":
            transport.write(self._server.configure(body))
        else:
            transport.write(_NOT_FOUND)

    def _schedule(self, rest: list[bytes], index: int, delay: float) -> None:
        self._timer = self._loop.call_later(delay, self._send_event, rest, index, delay)

    def _send_event(self, rest: list[bytes], index: int, delay: float) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(rest[index])
        if index + 1 < len(rest):
            self._schedule(rest, index + 1, delay)
            return
        self._busy = False
        if self._close_after:
            transport.close()
        elif self._buffer:
            self._process()


async def serve(host: str, port: int, event_delay: float, ready: Callable[[int], None] | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = Server(event_delay)
    listener = await loop.create_server(
        lambda: Connection(server, loop), host, port, backlog=4096, reuse_address=True, family=socket.AF_INET
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(listener.sockets[0].getsockname()[1])
    async with listener:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake Anthropic Messages API for the benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--event-delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the fake upstream listens on loopback only")
    try:
        import uvloop
    except ImportError:  # still correct, only slower
        asyncio.run(serve(args.host, args.port, args.event_delay))
    else:
        uvloop.run(serve(args.host, args.port, args.event_delay))


if __name__ == "__main__":
    main()
