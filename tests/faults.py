"""Shared helpers for the fault, fuzz, misbehaviour, soak and security tests.

* `RawUpstream`: a Messages API on a real loopback TCP port whose replies are scripts of raw bytes,
  so that a test can produce what only a socket can (a reset, a stall, a truncated chunked body);
* `EchoUpstream`: an ASGI Messages API that answers with the last user text, byte for byte, as a
  message or as a stream split at awkward byte offsets, and checks every request it sees;
* `serve_gateway` (async) and `ThreadedGateway` (sync, for hypothesis and the soak): the real
  gateway on a real uvicorn server (httptools, as in production) on a free loopback port;
* builders for Anthropic messages, SSE events and raw HTTP responses, and resource counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import socket
import struct
import termios
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from proxy.app import create_app
from proxy.config import Settings
from proxy.server import uvicorn_config as server_config
from proxy.simulator.transport import InProcessTransport
from tests.anthropic_schema import assert_valid_messages_request
from tests.polling import eventually_async
from tests.servers import free_port

UPSTREAM_KEY = "sk-ant-upstream-secret-4f9a2c7e81"
CLIENT_KEY = "sk-client-secret-7d3b91aa55"
MODEL = "claude-haiku-4-5"
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
# Small bounds so that every timeout and retry of the fault matrix takes a fraction of a second.
FAST_UPSTREAM: dict[str, Any] = {"first_byte_timeout": 0.2, "idle_timeout": 0.2, "max_attempts": 2, "max_backoff": 0.01}


# --- Anthropic payloads ------------------------------------------------------------------------


def message(
    text: str = "Hello there.",
    *,
    stop_reason: str = "end_turn",
    input_tokens: int = 7,
    output_tokens: int = 3,
    extra_blocks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": "msg_01Fault",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}, *(extra_blocks or [])],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def sse(name: str, data: dict[str, Any] | bytes) -> bytes:
    raw = data if isinstance(data, bytes) else orjson.dumps({"type": name, **data})
    return b"event: " + name.encode() + b"\ndata: " + raw + b"\n\n"


def message_start(input_tokens: int = 7, output_tokens: int = 1) -> bytes:
    start = message(input_tokens=input_tokens, output_tokens=output_tokens)
    start.update(content=[], stop_reason=None)
    return sse("message_start", {"message": start})


BLOCK_START = sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
BLOCK_STOP = sse("content_block_stop", {"index": 0})
MESSAGE_STOP = sse("message_stop", {})


def text_delta(text: str) -> bytes:
    return sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})


def message_delta(stop_reason: str = "end_turn", output_tokens: int = 3) -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return sse("message_delta", {"delta": delta, "usage": {"output_tokens": output_tokens}})


def stream_events(
    pieces: list[str], *, stop_reason: str = "end_turn", input_tokens: int = 7, output_tokens: int = 3
) -> list[bytes]:
    """A whole, well-formed Messages stream whose text deltas are `pieces`."""
    return [
        message_start(input_tokens),
        BLOCK_START,
        *(text_delta(piece) for piece in pieces),
        BLOCK_STOP,
        message_delta(stop_reason, output_tokens),
        MESSAGE_STOP,
    ]


def error_body(kind: str = "overloaded_error", text: str = "Overloaded") -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": text}})


# --- raw HTTP ----------------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests", 502: "Bad Gateway"}


def http_head(status: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_response(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> bytes:
    fields = {"content-type": content_type, "content-length": str(len(body)), "request-id": "req_fault"}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    return http_head(status, fields) + body


SSE_HEAD = http_head(
    200, {"content-type": "text/event-stream", "transfer-encoding": "chunked", "request-id": "req_fault"}
)
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# --- a scripted upstream on a real socket --------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Conn:
    """One upstream connection, handed to a scenario to reply on."""

    def __init__(self, upstream: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.upstream = upstream
        self.reader = reader
        self.writer = writer
        self.request: Seen | None = None
        self.closed = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()
        self.upstream.bytes_sent += len(data)

    async def send_events(self, events: list[bytes], delay: float = 0.0) -> None:
        for event in events:
            await self.send(chunk(event))
            if delay:
                await asyncio.sleep(delay)

    async def delivered(self, within: float = 10.0) -> None:
        """Wait until everything sent has reached the peer: nothing left in the transport's buffer,
        and nothing in the kernel's send queue that the peer has not acknowledged (SIOCOUTQ). A
        reset sent after this cannot overtake the bytes, which are in the peer's receive queue."""
        sock = self.writer.get_extra_info("socket")

        def unacknowledged() -> int:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
            return int(struct.unpack("i", queued)[0])

        await eventually_async(
            lambda: self.writer.transport.get_write_buffer_size() == 0 and unacknowledged() == 0,
            within=within,
            every=0.002,
            what="the bytes sent were acknowledged by the gateway",
        )

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.closed = True

    def close(self) -> None:
        """A clean close (FIN) whatever was promised by the headers."""
        self.writer.close()
        self.closed = True

    async def hold(self, seconds: float = 10.0) -> None:
        """Send nothing more until the peer closes the connection (counted) or `seconds` pass. A
        peer that closes while bytes it never read are waiting resets the connection: closed too."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                try:
                    while await self.reader.read(65536):
                        pass
                except ConnectionError:
                    pass
                self.upstream.closed_by_peer += 1
        self.close()


Scenario = Callable[[Conn], Awaitable[None]]


async def reply_ok(conn: Conn) -> None:
    """A healthy upstream: a message, or a stream when the request asks for one."""
    assert conn.request is not None
    if conn.request.json().get("stream"):
        await conn.send(SSE_HEAD)
        await conn.send_events(stream_events(["Hello", " there."]))
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, orjson.dumps(message())))


class RawUpstream:
    """A Messages API on a real loopback port; `scenario` answers each request with raw bytes.

    Connections are kept alive between requests unless the scenario closes them. Every request is
    kept in `seen`; `closed_by_peer` counts replies cut short by the gateway closing the connection
    (while the scenario held it open or was still sending), `bytes_sent` everything written.
    """

    def __init__(self, scenario: Scenario = reply_ok) -> None:
        self.scenario = scenario
        self.seen: list[Seen] = []
        self.closed_by_peer = 0
        self.bytes_sent = 0
        self.connections = 0
        self.open_connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def drop_connections(self) -> None:
        """Reset every open connection (ends a test quickly whatever the gateway still waits for)."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.open_connections += 1
        conn = Conn(self, reader, writer)
        try:
            while not conn.closed:
                request = await read_request(reader)
                if request is None:
                    break
                self.seen.append(request)
                conn.request = request
                await self.scenario(conn)
        except ConnectionError:
            self.closed_by_peer += 1  # the gateway went away while the scenario was still sending
        except asyncio.IncompleteReadError:
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()


async def read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    return Seen(method, path, headers, body)


# --- an echoing upstream (ASGI, in-process) ------------------------------------------------------


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user turn's last text block, as the gateway sent it."""
    for turn in reversed(body["messages"]):
        if turn["role"] != "user":
            continue
        content = turn["content"]
        if isinstance(content, str):
            return content
        texts = [block["text"] for block in content if block.get("type") == "text"]
        if texts:
            return str(texts[-1])
    return ""


def split_utf8(data: bytes, pieces: int) -> list[bytes]:
    """`data` cut into `pieces` parts at evenly spaced byte offsets, even inside a character."""
    if pieces <= 1 or len(data) < pieces:
        return [data]
    step = len(data) // pieces
    cuts = [i * step + 1 for i in range(pieces)]
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if data[a:b]]


def code_point_pieces(text: str, pieces: int) -> list[str]:
    if pieces <= 1 or len(text) < 2:
        return [text]
    step = max(1, len(text) // pieces)
    return [text[i : i + step] for i in range(0, len(text), step)]


@dataclass
class EchoUpstream:
    """An ASGI Messages API that answers with the last user text verbatim.

    Non-streaming: one text block. Streaming: the text in several deltas, each event written in
    several ASGI messages cut at arbitrary byte offsets (inside multi-byte characters too).
    Every request is checked: the body against the SDK's request types, the headers for the
    gateway's own key only (never a client credential). Problems are collected in `problems`
    rather than raised, so that a test sees all of them however the gateway reacts.
    """

    upstream_key: str = UPSTREAM_KEY
    forbidden: tuple[str, ...] = (CLIENT_KEY,)
    requests: int = 0
    problems: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    keep_bodies: bool = False  # keep every request's headers and body
    event_delay: float = 0.0  # seconds between stream events

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            event = await receive()
            raw += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.requests += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.keep_bodies:
            self.headers.append(headers)
        self._check_headers(headers, raw)
        if scope["path"] == "/v1/models":
            models = {"data": [{"id": MODEL, "type": "model", "created_at": "2025-09-29T00:00:00Z"}]}
            await _send_json(send, 200, orjson.dumps(models))
            return
        if scope["path"] == "/v1/messages/count_tokens":
            await _send_json(send, 200, b'{"input_tokens":3}')
            return
        if scope["path"] != "/v1/messages":
            await _send_json(send, 404, orjson.dumps({"type": "error", "error": {"type": "not_found_error"}}))
            return
        body = orjson.loads(raw)
        if self.keep_bodies:
            self.bodies.append(body)
        try:
            assert_valid_messages_request(body)
        except Exception as exc:  # collected, reported by the test
            self.problems.append(f"invalid upstream body: {exc!r}: {raw[:2000]!r}")
        text = last_user_text(body) or "(no text)"
        if body.get("stream"):
            await self._stream(send, text)
        else:
            await _send_json(send, 200, orjson.dumps(message(text, input_tokens=11, output_tokens=5)))

    def _check_headers(self, headers: dict[str, str], raw: bytes) -> None:
        if headers.get("x-api-key") != self.upstream_key:
            self.problems.append(f"upstream got x-api-key {headers.get('x-api-key')!r}")
        if "authorization" in headers:
            self.problems.append(f"client authorization forwarded: {headers['authorization']!r}")
        for secret in self.forbidden:
            if any(secret in value for value in headers.values()) or secret.encode() in raw:
                self.problems.append("a client secret reached the upstream")

    async def _stream(self, send: Any, text: str) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        events = stream_events(code_point_pieces(text, 3), input_tokens=11, output_tokens=5)
        for event in events:
            for piece in split_utf8(event, 3):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            if self.event_delay:
                await asyncio.sleep(self.event_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_json(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"request-id", b"req_echo")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- the gateway on a real server ------------------------------------------------------------------


def gateway_settings(upstream_url: str = "http://upstream.invalid", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": UPSTREAM_KEY,
        "anthropic_base_url": upstream_url,
        "api_keys": CLIENT_KEY,
    }
    values.update(overrides)
    return Settings(**values)


# What `proxy.server` configures for the HTTP server itself (protocol, limits, keep-alive) is kept;
# the app, the address, logging and the event loop are the test's.
_SERVED_AS_IN_PRODUCTION = (
    "http",
    "h11_max_incomplete_event_size",
    "limit_concurrency",
    "timeout_keep_alive",
    "headers",
    "server_header",
    "date_header",
)


def uvicorn_config(app: Any, port: int, settings: Settings | None = None) -> uvicorn.Config:
    production = server_config(settings or gateway_settings())
    options = {name: getattr(production, name) for name in _SERVED_AS_IN_PRODUCTION}
    options["headers"] = [tuple(pair) for pair in options["headers"]]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on", **options
    )
    # Anything `proxy.server` hangs on its config for its own protocol classes comes along too.
    plain = vars(uvicorn.Config(app))
    for name, value in vars(production).items():
        if name not in plain:
            setattr(config, name, value)
    return config


@dataclass
class Served:
    url: str
    server: uvicorn.Server

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").partition(":")
        return host, int(port)


@contextlib.asynccontextmanager
async def serve_gateway(
    upstream_url: str = "http://upstream.invalid", *, transport: Any = None, **overrides: Any
) -> AsyncIterator[Served]:
    """The gateway on uvicorn in this event loop. Without `transport` it talks real HTTP to
    `upstream_url` through its production connection pool."""
    settings = gateway_settings(upstream_url, **overrides)
    app = create_app(settings, transport=transport)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, port, settings))
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        if task.done():
            task.result()  # it failed to start: raise why
        return bool(server.started)

    await eventually_async(started, within=30.0, every=0.005, what="the gateway started")
    try:
        yield Served(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        await task


class ThreadedGateway:
    """The gateway on uvicorn in a background thread with its own event loop, for synchronous
    tests (hypothesis drives examples synchronously). The upstream is an ASGI app in that loop."""

    def __init__(self, upstream: Any, **overrides: Any) -> None:
        settings = gateway_settings(**overrides)
        self.app = create_app(settings, transport=InProcessTransport(upstream))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(self.app, self.port, settings))
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway thread died while starting")
            self._thread.join(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        assert not self._thread.is_alive(), "the gateway thread did not stop"


# --- resources -----------------------------------------------------------------------------------


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Resources:
    tasks: int
    fds: int

    @classmethod
    def now(cls) -> Resources:
        return cls(len(asyncio.all_tasks()), open_fds())


async def settled(baseline: Resources, *, fd_slack: int = 2, task_slack: int = 0, wait: float = 15.0) -> Resources:
    """Wait for closes in flight to land (polling, up to ``wait`` seconds: a loaded machine may take
    a while to run the last callbacks), then the current counts; asserts nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    current = Resources.now()
    while loop.time() < deadline:
        current = Resources.now()
        if current.tasks <= baseline.tasks + task_slack and current.fds <= baseline.fds + fd_slack:
            break
        await asyncio.sleep(0.02)
    return current


async def assert_settled(baseline: Resources, *, fd_slack: int = 2, within: float = 15.0) -> None:
    """Tasks back at ``baseline`` and descriptors within ``fd_slack`` of it, polled until ``within``
    seconds have passed; only a count still above its baseline then is a leak."""
    after = await settled(baseline, fd_slack=fd_slack, wait=within)
    assert after.tasks <= baseline.tasks, f"asyncio tasks leaked: {baseline.tasks} -> {after.tasks}"
    assert after.fds <= baseline.fds + fd_slack, f"file descriptors leaked: {baseline.fds} -> {after.fds}"


def data_lines(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


def stream_payloads(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of an OpenAI SSE body, without the final ``[DONE]``."""
    return [orjson.loads(line) for line in data_lines(raw) if line != b"[DONE]"]


def streamed_text(raw: bytes) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for payload in stream_payloads(raw)
        for choice in payload.get("choices", [])
    )


def assert_openai_error_body(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    return dict(error)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` in a Prometheus exposition whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


# --- raw HTTP/1.1 client side ----------------------------------------------------------------------


def chat_request(
    body: dict[str, Any] | bytes, *, headers: dict[str, str] | None = None, path: str = "/v1/chat/completions"
) -> bytes:
    """One HTTP/1.1 request as bytes, authenticated with the client key unless `headers` say otherwise."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    fields = {
        "host": "gateway",
        "authorization": f"Bearer {CLIENT_KEY}",
        "content-type": "application/json",
        "content-length": str(len(raw)),
    }
    fields.update(headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return (head + "\r\n").encode("latin-1") + raw


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One HTTP/1.1 response (content-length or chunked) from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)
