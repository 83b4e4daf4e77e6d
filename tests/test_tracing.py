"""OpenTelemetry traces (proxy/tracing): the span tree and its GenAI attributes for every dialect,
retries, failures and a client that leaves, checked on an in-memory exporter; the W3C context in and
out; the log lines that lead to their trace; and nothing at all when tracing is off."""

from __future__ import annotations

import gzip
import http.server
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from proxy import tracing
from proxy.config import Settings
from proxy.logs import JSONFormatter
from proxy.simulator.transport import InProcessTransport
from tests.faults import CLIENT_KEY as SERVED_CLIENT_KEY
from tests.faults import serve_gateway
from tests.polling import eventually_async
from tests.test_app import CLIENT_KEY, UPSTREAM, UPSTREAM_KEY, app_client
from tests.test_streaming import ScriptedUpstream

pytestmark = pytest.mark.anyio

MODEL = "claude-sonnet-5-5"
UPSTREAM_MODEL = "claude-sonnet-5-5-20261001"
KEY_LABEL = "…" + UPSTREAM_KEY[-4:]
MESSAGE = {
    "id": "msg_01TraceMe",
    "type": "message",
    "role": "assistant",
    "model": UPSTREAM_MODEL,
    "content": [{"type": "text", "text": "Hello there."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 4, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3},
}
CHAT = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
NATIVE = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
RESPONSES = {"model": MODEL, "input": "Hi"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps({"type": event, **data}) + b"\n\n"


STREAM = b"".join(
    [
        sse("message_start", {"message": {**MESSAGE, "content": [], "stop_reason": None}}),
        sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello "}}),
        sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "there."}}),
        sse("content_block_stop", {"index": 0}),
        sse("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        sse("message_stop", {}),
    ]
)

# (path, body): every dialect and path the pipeline serves.
PATHS = {
    "chat": ("/v1/chat/completions", CHAT),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "chat-n2": ("/v1/chat/completions", {**CHAT, "n": 2}),
    "chat-n2-stream": ("/v1/chat/completions", {**CHAT, "n": 2, "stream": True}),
    "responses": ("/v1/responses", RESPONSES),
    "responses-stream": ("/v1/responses", {**RESPONSES, "stream": True}),
    "native": ("/v1/messages", NATIVE),
    "native-stream": ("/v1/messages", {**NATIVE, "stream": True}),
}


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": UPSTREAM_KEY,
        "anthropic_base_url": UPSTREAM,
        "api_keys": CLIENT_KEY,
        "upstream": {"max_backoff": 0.001, "max_attempts": 3},
        "tracing": True,
    }
    values.update(overrides)
    return Settings(**values)


def reply_for(request: httpx.Request) -> httpx.Response:
    if orjson.loads(request.content).get("stream"):
        return httpx.Response(
            200, content=STREAM, headers={"content-type": "text/event-stream", "request-id": "req_up"}
        )
    return httpx.Response(200, json=MESSAGE, headers={"request-id": "req_up"})


class Upstream:
    """The Messages API on respx, recording the headers of every call."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.headers: list[httpx.Headers] = []
        self.replies: list[httpx.Response] = []  # answered in turn before the usual reply
        router.post("/v1/messages").mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return self.replies.pop(0) if self.replies else reply_for(request)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)  # the defaults, whatever the machine has set
    exporter = InMemorySpanExporter()
    tracing.install(exporter, batch=False)
    yield exporter
    tracing.uninstall()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
def upstream(mock: respx.MockRouter) -> Upstream:
    return Upstream(mock)


@pytest.fixture
async def client(mock: respx.MockRouter, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings(), mock) as c:
        yield c


class Tree:
    """The finished spans of one request: its SERVER span and its CLIENT spans, checked to hang
    together (one trace, each CLIENT span a child of the SERVER span)."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        finished = exporter.get_finished_spans()
        servers = [s for s in finished if s.kind == SpanKind.SERVER]
        assert len(servers) == 1, [s.name for s in finished]
        self.server = servers[0]
        self.clients = sorted(
            (s for s in finished if s.kind == SpanKind.CLIENT),
            key=lambda s: s.attributes["claude_proxy.upstream.attempt"],
        )
        assert len(finished) == 1 + len(self.clients)
        for span in self.clients:
            assert span.parent is not None and span.parent.span_id == self.server.context.span_id
            assert span.context.trace_id == self.server.context.trace_id

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.server.attributes or {})


async def finished_tree(exporter: InMemorySpanExporter) -> Tree:
    # A stream's spans end when its response has ended, which may be just after the client has read it.
    await eventually_async(
        lambda: any(s.kind == SpanKind.SERVER for s in exporter.get_finished_spans()), what="the server span ended"
    )
    return Tree(exporter)


def every_value(spans: list[ReadableSpan]) -> str:
    return repr([(dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events]) for s in spans])


# --- the span tree, every dialect ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(PATHS))
async def test_every_dialect_gets_a_server_span_with_the_genai_attributes_and_a_client_span_per_call(
    name: str, client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    path, body = PATHS[name]
    reply = await client.post(path, json=body)
    assert reply.status_code == 200
    tree = await finished_tree(spans)
    n = body.get("n", 1)
    attributes = tree.attributes
    assert tree.server.name == f"chat {MODEL}"
    assert tree.server.status.status_code == StatusCode.UNSET
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": UPSTREAM_MODEL,
        "gen_ai.response.id": "msg_01TraceMe",
        "gen_ai.response.finish_reasons": ("end_turn",) * n,
        "gen_ai.usage.input_tokens": (12 + 3 + 2) * n,  # the whole prompt: cache reads and writes included
        "gen_ai.usage.output_tokens": 4 * n,
        "gen_ai.usage.cache_read.input_tokens": 3 * n,
        "gen_ai.usage.cache_creation.input_tokens": 2 * n,
        "http.request.method": "POST",
        "http.route": path,
        "http.response.status_code": 200,
        "claude_proxy.upstream.attempts": 1,
    }.items() <= attributes.items()
    assert isinstance(attributes["gen_ai.request.max_tokens"], int)
    assert attributes["claude_proxy.client_key.name"]
    assert attributes.get("gen_ai.request.stream", False) is bool(body.get("stream"))
    assert attributes.get("gen_ai.request.choice.count", 1) == n
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system")) for key in attributes)

    assert len(tree.clients) == n  # one upstream call per choice, each one attempt
    for span in tree.clients:
        assert span.name == "POST /v1/messages"
        assert {
            "http.request.method": "POST",
            "http.response.status_code": 200,
            "server.address": "upstream.test",
            "server.port": 443,
            "claude_proxy.upstream.attempt": 1,
            "claude_proxy.upstream.key": KEY_LABEL,
            "claude_proxy.upstream.request_id": "req_up",
        }.items() <= dict(span.attributes or {}).items()
        assert span.status.status_code == StatusCode.UNSET
        assert span.end_time is not None and tree.server.end_time is not None
        assert span.end_time <= tree.server.end_time  # a stream's call ends with the stream, inside the request

    if body.get("stream"):
        (event,) = [e for e in tree.server.events if e.name == "first_token"]
        assert tree.server.start_time is not None and tree.server.start_time < event.timestamp
        assert 0 < attributes["gen_ai.response.time_to_first_chunk"] < 10
    assert UPSTREAM_KEY not in every_value([tree.server, *tree.clients])
    assert CLIENT_KEY not in every_value([tree.server, *tree.clients])


async def test_the_native_count_tokens_route_is_traced_as_its_own_operation(
    client: httpx.AsyncClient, mock: respx.MockRouter, spans: InMemorySpanExporter
) -> None:
    mock.post("/v1/messages/count_tokens").mock(return_value=httpx.Response(200, json={"input_tokens": 7}))
    reply = await client.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": CHAT["messages"]})
    assert reply.status_code == 200
    tree = await finished_tree(spans)
    assert tree.server.name == f"count_tokens {MODEL}"
    assert tree.attributes["gen_ai.operation.name"] == "count_tokens"
    assert [span.name for span in tree.clients] == ["POST /v1/messages/count_tokens"]


# --- the W3C context in and out -------------------------------------------------------------------

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def test_a_clients_traceparent_continues_its_trace_and_the_upstream_gets_only_ours(
    client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    reply = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"traceparent": traceparent, "tracestate": "vendor=1"}
    )
    assert reply.status_code == 200
    tree = await finished_tree(spans)
    assert format(tree.server.context.trace_id, "032x") == CLIENT_TRACE
    assert tree.server.parent is not None and format(tree.server.parent.span_id, "016x") == CLIENT_SPAN
    (sent,) = upstream.headers
    (call,) = tree.clients
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{call.context.span_id:016x}-01"
    assert "tracestate" not in sent and "baggage" not in sent
    assert "authorization" not in sent and sent["x-api-key"] == UPSTREAM_KEY


async def test_without_a_traceparent_the_request_starts_a_trace(
    client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    await client.post("/v1/chat/completions", json=CHAT)
    tree = await finished_tree(spans)
    assert tree.server.parent is None
    (sent,) = upstream.headers
    assert sent["traceparent"].split("-")[1] == format(tree.server.context.trace_id, "032x")


# --- retries, failures, a client that leaves -------------------------------------------------------


def overloaded() -> httpx.Response:
    return httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_retried_request_shows_each_attempt_numbered_with_its_status(
    stream: bool, client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    upstream.replies = [overloaded()]
    reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert reply.status_code == 200
    tree = await finished_tree(spans)
    first, second = tree.clients
    assert {
        "claude_proxy.upstream.attempt": 1,
        "http.response.status_code": 529,
        "error.type": "529",
    }.items() <= dict(first.attributes or {}).items()
    assert first.status.status_code == StatusCode.ERROR
    assert "http.request.resend_count" not in (first.attributes or {})
    second_attributes = dict(second.attributes or {})
    assert second_attributes["claude_proxy.upstream.attempt"] == 2
    assert second_attributes["http.request.resend_count"] == 1
    assert second_attributes["http.response.status_code"] == 200
    assert second.status.status_code == StatusCode.UNSET
    assert tree.attributes["claude_proxy.upstream.attempts"] == 2
    assert tree.server.status.status_code == StatusCode.UNSET
    # Each attempt carried its own span's context.
    assert [h["traceparent"].split("-")[2] for h in upstream.headers] == [
        format(span.context.span_id, "016x") for span in tree.clients
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_failed_request_is_an_error_span_naming_the_error_type(
    stream: bool, client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    upstream.replies = [overloaded(), overloaded(), overloaded()]
    reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert reply.status_code >= 500
    tree = await finished_tree(spans)
    assert len(tree.clients) == 3
    assert all(span.status.status_code == StatusCode.ERROR for span in tree.clients)
    assert tree.server.status.status_code == StatusCode.ERROR
    assert tree.attributes["error.type"] == reply.json()["error"]["type"]
    assert tree.attributes["http.response.status_code"] == reply.status_code


async def test_a_client_error_names_its_type_without_marking_the_server_span_failed(
    client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    reply = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": "not a list"})
    assert reply.status_code == 400
    tree = await finished_tree(spans)
    assert tree.clients == [] and upstream.headers == []
    assert tree.attributes["error.type"] == reply.json()["error"]["type"]
    assert tree.attributes["http.response.status_code"] == 400
    assert tree.server.status.status_code == StatusCode.UNSET  # the client's fault, as HTTP server spans say


async def test_a_stream_that_fails_after_it_started_is_an_error(
    client: httpx.AsyncClient, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    cut = STREAM[: STREAM.index(b"event: message_delta")]  # the upstream closed before the end
    upstream.replies = [httpx.Response(200, content=cut, headers={"content-type": "text/event-stream"})]
    reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 200
    tree = await finished_tree(spans)
    assert tree.server.status.status_code == StatusCode.ERROR
    assert tree.attributes["error.type"] == "server_error"  # what the client's stream ended with


# --- content, only with log_payloads ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_log_payloads_adds_the_prompt_and_the_answer_as_the_conventions_content_attributes(
    stream: bool, mock: respx.MockRouter, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    body = {**CHAT, "stream": stream, "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
    async with app_client(settings(log_payloads=True), mock) as client:
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    attributes = (await finished_tree(spans)).attributes
    assert orjson.loads(attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert orjson.loads(attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]}
    ]
    assert orjson.loads(attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello there."}], "finish_reason": "end_turn"}
    ]


async def test_content_is_cut_to_the_attribute_length_limit(
    mock: respx.MockRouter, upstream: Upstream, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "20")
    spans = InMemorySpanExporter()
    tracing.install(spans, batch=False)  # the limit is read as tracing is made
    async with app_client(settings(log_payloads=True), mock) as client:
        await client.post("/v1/chat/completions", json=CHAT)
    attributes = (await finished_tree(spans)).attributes
    assert len(attributes["gen_ai.input.messages"]) == 20 and len(attributes["gen_ai.output.messages"]) == 20
    assert attributes["gen_ai.request.model"] == MODEL  # the rest is whole


# --- logs lead to their trace ------------------------------------------------------------------------


class Lines(logging.Handler):
    """Formats each record as it is logged (where the request's context is), as the real handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JSONFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("proxy")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_the_access_line_and_error_logs_carry_the_trace_and_span_ids(
    mock: respx.MockRouter, upstream: Upstream, spans: InMemorySpanExporter, lines: Lines
) -> None:
    # An event over the bound fails the stream, which the pipeline logs while serving it.
    huge = sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "x" * 2048}})
    stream = STREAM.replace(b"event: content_block_stop", huge + b"event: content_block_stop")
    upstream.replies = [httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})]
    async with app_client(settings(upstream={"max_event_bytes": 1024}), mock) as client:
        await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    tree = await finished_tree(spans)
    ids = {
        "trace_id": format(tree.server.context.trace_id, "032x"),
        "span_id": format(tree.server.context.span_id, "016x"),
    }
    await eventually_async(lambda: any(line["logger"] == "proxy.access" for line in lines.lines))
    access = [line for line in lines.lines if line["logger"] == "proxy.access"]
    assert access and ids.items() <= access[-1].items()
    warnings = [line for line in lines.lines if line["level"] in ("warning", "error")]
    assert warnings and all(ids.items() <= line.items() for line in warnings)


async def test_tracing_off_makes_no_span_and_no_ids_in_the_logs(
    mock: respx.MockRouter, upstream: Upstream, spans: InMemorySpanExporter, lines: Lines
) -> None:
    async with app_client(settings(tracing=False), mock) as client:
        reply = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
        )
    assert reply.status_code == 200
    assert spans.get_finished_spans() == ()
    assert "traceparent" not in upstream.headers[0]
    access = [line for line in lines.lines if line["logger"] == "proxy.access"]
    assert access and "trace_id" not in access[-1] and "span_id" not in access[-1]


async def test_a_sampled_out_request_records_nothing_but_still_passes_its_context_on(
    mock: respx.MockRouter, upstream: Upstream, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    spans = InMemorySpanExporter()
    tracing.install(spans, batch=False)  # the sampler is read as tracing is made
    async with app_client(settings(), mock) as client:
        reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 200
    assert spans.get_finished_spans() == ()
    version, trace_id, span_id, flags = upstream.headers[0]["traceparent"].split("-")
    assert version == "00" and int(trace_id, 16) and int(span_id, 16)
    assert int(flags, 16) & 1 == 0  # not sampled


# --- off means not even imported; on without the extra is a start-up error -----------------------------

_OFF = """
    import sys
    import httpx, asyncio
    from proxy.app import create_app
    from proxy.config import load_settings
    import proxy.__main__, proxy.logs

    async def main():
        app = create_app(load_settings(simulate=True, api_keys=["sk-client-123456789"]))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                reply = await client.post(
                    "/v1/chat/completions",
                    json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]},
                    headers={"authorization": "Bearer sk-client-123456789", "traceparent": "00-TRACE-SPAN-01"},
                )
                assert reply.status_code == 200, reply.text
    asyncio.run(main())
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
""".replace("TRACE", CLIENT_TRACE).replace("SPAN", CLIENT_SPAN)


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_with_tracing_off_serving_a_request_never_imports_opentelemetry() -> None:
    done = run_python(_OFF, {"PROXY_TRACING": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


_WITHOUT_THE_EXTRA = """
    import sys

    class NoOpenTelemetry:  # as if the tracing extra were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
    from proxy.config import ConfigError, load_settings
    try:
        load_settings()
    except ConfigError as error:
        print(error)
    else:
        print("started")
"""


def test_tracing_on_without_the_extra_is_a_start_up_error_naming_it() -> None:
    done = run_python(_WITHOUT_THE_EXTRA, {"PROXY_TRACING": "1"})
    assert done.returncode == 0, done.stderr
    assert "pip install 'claude-proxy[tracing]'" in done.stdout
    assert "tracing" in done.stdout


def test_proxy_tracing_1_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_TRACING", "1")
    assert Settings().tracing is True
    monkeypatch.delenv("PROXY_TRACING")
    assert Settings().tracing is False


# --- a client that leaves mid-stream -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2])
async def test_a_stream_the_client_leaves_ends_its_spans_saying_so(n: int, spans: InMemorySpanExporter) -> None:
    head = STREAM[: STREAM.index(b"event: content_block_stop")]  # "Hello there." sent, then nothing more
    upstream = ScriptedUpstream([head], hang_after=True)
    async with (
        serve_gateway("http://upstream", transport=InProcessTransport(upstream), tracing=True) as gateway,
        httpx.AsyncClient(base_url=gateway.url, headers={"authorization": f"Bearer {SERVED_CLIENT_KEY}"}) as client,
    ):
        body = {**CHAT, "stream": True, "n": n}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if "Hello" in line:
                    break
        tree = await finished_tree(spans)
    assert tree.server.status.status_code == StatusCode.ERROR
    assert tree.attributes["error.type"] == "client_disconnected"
    assert "client disconnected" in (tree.server.status.description or "")
    assert tree.attributes["gen_ai.usage.input_tokens"] == 17 * n  # what was used until then
    assert [e.name for e in tree.server.events] == ["first_token"]
    assert len(tree.clients) == n
    for span in tree.clients:
        assert span.status.status_code == StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "client_disconnected"


# --- export over OTLP/HTTP -------------------------------------------------------------------------------


class Collector:
    """A small OTLP/HTTP receiver: keeps the body of every POST to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    collector.bodies.append(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        received = []
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    received += [(resource, span) for span in scope_spans.spans]
        return received


def otlp_attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        kind = value.WhichOneof("value")
        values[attribute.key] = (
            [v.string_value for v in value.array_value.values] if kind == "array_value" else getattr(value, kind)
        )
    return values


async def test_spans_are_exported_over_otlp_http_as_the_otel_variables_say(
    mock: respx.MockRouter, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        tracing.install()  # what the first traced request would make: OTLP/HTTP, batched
        try:
            async with app_client(settings(), mock) as client:
                reply = await client.post("/v1/chat/completions", json=CHAT)
                assert reply.status_code == 200
        finally:
            tracing.uninstall()  # flushes the batch
        received = collector.spans()
    assert {resource["service.name"] for resource, _ in received} == {"gateway-under-test"}
    by_kind = {span.kind: span for _, span in received}
    assert len(received) == 2
    server = by_kind[SpanProto.SpanKind.SPAN_KIND_SERVER]
    call = by_kind[SpanProto.SpanKind.SPAN_KIND_CLIENT]
    assert server.name == f"chat {MODEL}" and call.name == "POST /v1/messages"
    assert call.parent_span_id == server.span_id and call.trace_id == server.trace_id
    attributes = otlp_attributes(server)
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.id": "msg_01TraceMe",
        "gen_ai.response.finish_reasons": ["end_turn"],
        "gen_ai.usage.input_tokens": 17,
        "gen_ai.usage.output_tokens": 4,
    }.items() <= attributes.items()
    assert otlp_attributes(call)["claude_proxy.upstream.key"] == KEY_LABEL


async def test_many_requests_batched_on_the_loop_all_reach_the_collector_each_under_its_own_server_span(
    mock: respx.MockRouter, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 150  # past two slices of records encoded on the loop, and a remainder left to the thread
    with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        tracing.install()
        try:
            async with app_client(settings(), mock) as client:
                for _ in range(requests):
                    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        finally:
            tracing.uninstall()
        received = [span for _, span in collector.spans()]
    servers = {span.span_id: span for span in received if span.kind == SpanProto.SpanKind.SPAN_KIND_SERVER}
    calls = [span for span in received if span.kind == SpanProto.SpanKind.SPAN_KIND_CLIENT]
    assert len(servers) == len(calls) == requests
    assert sorted(call.parent_span_id for call in calls) == sorted(servers)  # one call under each request
    assert len({otlp_attributes(s)["claude_proxy.request_id"] for s in servers.values()}) == requests


def test_an_ended_request_trace_is_freed_at_once_not_left_to_the_garbage_collector() -> None:
    """The request's record and its trace refer to each other until the trace ends: a cycle left
    behind would keep both (and what they hold) until a collection, at every traced request."""
    import gc
    from types import SimpleNamespace

    from proxy.exchange import Exchange
    from proxy.tracing.spans import AttemptTrace, RequestTrace

    tracing.install(InMemorySpanExporter(), batch=False)
    gc.collect()
    gc.disable()
    try:
        exchange = Exchange(request_id="req_1")
        request = SimpleNamespace(scope={"method": "POST", "headers": []})
        where = SimpleNamespace(path="/v1/chat/completions", options={})
        trace = tracing.start(request, where, exchange, payloads=False)  # type: ignore[arg-type]
        attempt = trace.attempt(1, "…abcd", "POST", "https://api.anthropic.com", "/v1/messages")
        attempt.replied(200, "req_up")
        attempt.end()
        trace.exit(None, None, None)
        tracing.CURRENT.set(None)
        del exchange, trace, attempt
        left = [o for o in gc.get_objects() if isinstance(o, RequestTrace | AttemptTrace | Exchange)]
        assert left == []
    finally:
        gc.enable()
        tracing.uninstall()


async def test_the_service_is_named_claude_proxy_unless_otel_service_name_says(
    client: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    await client.post("/v1/chat/completions", json=CHAT)
    tree = await finished_tree(spans)
    assert tree.server.resource.attributes["service.name"] == "claude-proxy"


def test_the_otlp_encoding_decodes_with_the_official_protobufs_for_every_value_kind() -> None:
    from proxy.tracing import otlp
    from proxy.tracing.record import CLIENT, SpanRecord

    long_text = "ü" * 300  # past one-byte lengths, and not ASCII
    attributes = {
        "s": "short",
        "long": long_text,
        "i": 7,
        "negative": -3,
        "big": 1 << 40,
        "f": 0.25,
        "t": True,
        "no": False,
        "reasons": ("end_turn", "max_tokens"),
    }
    span = SpanRecord("POST /v1/messages", CLIENT, (1 << 127) + 5, 0x1234, dict(attributes), remote=True)
    span.event("first_token", {"n": 1})
    span.fail("529", "the upstream answered 529")
    span.end_ns = span.start_ns + 1000
    twice = [otlp.encode_span(span), otlp.encode_span(span)]  # the second from the attribute cache
    request = ExportTraceServiceRequest()
    request.ParseFromString(otlp.encode_request(twice, otlp.encode_resource(Resource({"service.name": "x"}))))
    (resource_spans,) = request.resource_spans
    assert resource_spans.resource.attributes[0].value.string_value == "x"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "claude-proxy"
    for decoded in scope_spans.spans:
        assert decoded.name == "POST /v1/messages" and decoded.kind == SpanProto.SpanKind.SPAN_KIND_CLIENT
        assert int.from_bytes(decoded.trace_id, "big") == (1 << 127) + 5
        assert int.from_bytes(decoded.span_id, "big") == span.span_id
        assert int.from_bytes(decoded.parent_span_id, "big") == 0x1234
        assert (decoded.start_time_unix_nano, decoded.end_time_unix_nano) == (span.start_ns, span.end_ns)
        assert otlp_attributes(decoded) == {
            **{k: v for k, v in attributes.items() if k != "reasons"},
            "reasons": ["end_turn", "max_tokens"],
            "error.type": "529",
        }
        assert decoded.status.code == 2 and decoded.status.message == "the upstream answered 529"
        assert [(e.name, e.attributes[0].value.int_value) for e in decoded.events] == [("first_token", 1)]
        assert decoded.flags == 0x01 | 0x100 | 0x200  # sampled; the parent is remote, and that is known


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{'0' * 32}-{CLIENT_SPAN}-01",  # an all-zero trace id
        f"00-{CLIENT_TRACE}-{'0' * 16}-01",  # an all-zero span id
        f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",  # the forbidden version
        f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra",  # version 00 has nothing after the flags
        f"00-{CLIENT_TRACE[:-1]}-{CLIENT_SPAN}-01",
    ],
)
def test_a_malformed_traceparent_starts_a_trace_of_its_own(header: str) -> None:
    from proxy.tracing.record import parse_traceparent

    assert parse_traceparent(header) is None


def test_a_traceparent_of_a_later_version_is_read_for_what_version_00_defines() -> None:
    from proxy.tracing.record import parse_traceparent

    parent = parse_traceparent(f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-00-more")
    assert parent is not None and parent.trace_id == int(CLIENT_TRACE, 16) and not parent.sampled


@pytest.mark.parametrize(
    ("sampler", "argument", "root", "sampled_parent", "unsampled_parent"),
    [
        ("parentbased_always_on", None, True, True, False),
        ("parentbased_always_off", None, False, True, False),
        ("always_on", None, True, True, True),
        ("always_off", None, False, False, False),
        ("traceidratio", "0", False, False, False),
        ("parentbased_traceidratio", "1", True, True, False),
    ],
)
def test_the_otel_traces_sampler_decides_as_the_sdk_does(
    sampler: str, argument: str | None, root: bool, sampled_parent: bool, unsampled_parent: bool
) -> None:
    from proxy.tracing.record import Parent, sampler_from_environment

    environ = {"OTEL_TRACES_SAMPLER": sampler, **({"OTEL_TRACES_SAMPLER_ARG": argument} if argument else {})}
    decide = sampler_from_environment(environ)
    trace_id = int(CLIENT_TRACE, 16)
    assert decide(None, trace_id) is root
    assert decide(Parent(trace_id, 1, True), trace_id) is sampled_parent
    assert decide(Parent(trace_id, 1, False), trace_id) is unsampled_parent


_AT_EXIT = """
    import asyncio, os
    import httpx
    from proxy.app import create_app
    from proxy.config import load_settings

    async def main():
        app = create_app(load_settings(simulate=True, api_keys=["sk-client-123456789"], tracing=True))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                reply = await client.post(
                    "/v1/chat/completions",
                    json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]},
                    headers={"authorization": "Bearer sk-client-123456789"},
                )
                assert reply.status_code == 200, reply.text
    asyncio.run(main())
"""


def test_spans_still_queued_at_exit_are_sent_before_the_process_ends() -> None:
    with Collector() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
        done = run_python(_AT_EXIT, env)
        assert done.returncode == 0, done.stderr
        assert len(collector.spans()) == 2  # the request's, and its upstream call's
