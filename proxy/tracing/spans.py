"""The spans of a traced request (loaded only when tracing is on).

``RequestTrace`` is one request's SERVER span: the pipeline notes on it what it learns (the call it
makes, the replies, the first token, the status) and the request's owner ends it last, after the
upstream responses are closed and the usage is settled (``exit``, pushed first on the owner), so
the span holds the final usage and error, and a stream's span lasts to its last byte.

``AttemptTrace`` is one upstream attempt's CLIENT span, made by ``proxy.upstream`` per attempt; a
streamed attempt that succeeds is ended when its stream is closed.

Status: a 5xx, a stream that failed after it started, and a client that left before the end are
errors; a 4xx (the client's fault) carries ``error.type`` with the status left unset, as the HTTP
conventions say for server spans. ``error.type`` is the error type the client was given (the
access line's ``error``), ``client_disconnected`` for a client that left.

A request the sampler leaves out records nothing, but its context still goes on upstream (the
``traceparent`` flags say "not sampled"), so a trace sampled further down stays whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

import orjson
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from proxy.errors import stream_ended_early
from proxy.tracing import genai, otlp
from proxy.tracing.record import (
    CLIENT,
    SERVER,
    Parent,
    Sampler,
    SpanRecord,
    new_trace_id,
    parse_traceparent,
    sampler_from_environment,
)

if TYPE_CHECKING:
    from starlette.requests import Request

    from proxy.errors import ProxyError
    from proxy.translators import ChoiceTranslator, StreamTranslator
    from proxy.usage import Usage

CLIENT_GONE: Final = "client_disconnected"


# What the spans read of the pipeline's objects, by shape: this module imports none of them, so
# that they (the request's record, the upstream client) can name its types without a cycle.


class Route(Protocol):  # proxy.dialects.base.Endpoint
    @property
    def path(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...


class Record(Protocol):  # proxy.exchange.Exchange
    request_id: str
    key_name: str | None
    usage: Usage | None
    attempts: int | None
    error: str | None
    answered_by_server: tuple[int, str] | None
    trace: RequestTrace | None


class Call(Protocol):  # proxy.dialects.base.Outbound
    @property
    def model(self) -> str: ...
    @property
    def body(self) -> Mapping[str, Any]: ...
    @property
    def stream(self) -> bool: ...
    @property
    def n(self) -> int: ...


class Reply(Protocol):  # proxy.upstream.UpstreamReply
    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...


class Tracing:
    """The process's tracing: the resource it reports as, its sampler and its exporter."""

    def __init__(self, exporter: SpanExporter | None = None, *, batch: bool = True) -> None:
        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "claude-proxy"}))
        self.resource = resource
        self.sampler: Sampler = sampler_from_environment()
        self.content_limit = _length_limit()
        if exporter is None and os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
            exporter = ConsoleSpanExporter()
        send = otlp.otlp_http_sender(resource) if exporter is None else otlp.sdk_sender(exporter, resource)
        self.export = otlp.BatchExport(send, synchronous=not batch)

    def request(self, request: Request, where: Route, exchange: Record, payloads: bool) -> RequestTrace:
        return RequestTrace(self, request, where, exchange, payloads)

    def shutdown(self) -> None:
        """Send what is queued; the exporter is closed."""
        self.export.shutdown()


def _length_limit() -> int | None:
    for name in ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


class RequestTrace:
    """One request's SERVER span."""

    def __init__(self, tracing: Tracing, request: Request, where: Route, exchange: Record, payloads: bool) -> None:
        self._tracing = tracing
        self._exchange = exchange
        self._payloads = payloads
        self._started = time.perf_counter()
        self._status: int | None = None
        self._operation = "count_tokens" if where.options.get("count_tokens") else "chat"
        self._streamed: list[genai.StreamedMessage] = []
        self._watching: _Watch | None = None
        scope = request.scope
        parent: Parent | None = parse_traceparent(_traceparent(scope["headers"]))
        trace_id = parent.trace_id if parent is not None else new_trace_id()
        method = scope["method"]
        self.span = SpanRecord(
            f"{method} {where.path}",  # renamed "chat {model}" once the model is known
            SERVER,
            trace_id,
            parent.span_id if parent is not None else 0,
            {"http.request.method": method, "http.route": where.path, "claude_proxy.request_id": exchange.request_id},
            remote=parent is not None,
        )
        # Sampled out: nothing is recorded, but the context still goes on upstream.
        self.recording = tracing.sampler(parent, trace_id)
        if not self.recording:
            self.span.flags = 0
        self.trace_id = f"{trace_id:032x}"
        self.span_id = f"{self.span.span_id:016x}"

    # --- what the pipeline notes -------------------------------------------------------

    def request(self, outbound: Call) -> None:
        """The upstream call the request became."""
        if not self.recording:
            return
        self.span.name = f"{self._operation} {outbound.model}"
        attributes = self.span.attributes
        attributes.update(
            genai.request_attributes(self._operation, outbound.model, outbound.body, outbound.stream, outbound.n)
        )
        if self._payloads:
            attributes.update(self._clipped(genai.input_attributes(outbound.body)))

    def replies(self, replies: Sequence[Reply]) -> None:
        """The upstream's complete answers (one per choice)."""
        if not self.recording:
            return
        messages = [m for m in map(_message, replies) if m is not None]
        self._answered_by(messages)

    def watch(self, translator: StreamTranslator) -> StreamTranslator:
        """``translator``, watched: the stream's Message (id, model, stop reason; the content with
        payloads) and whether the stream reached its end."""
        if not self.recording:
            return translator
        self._streamed = [genai.StreamedMessage(self._payloads)]
        watched = _WatchedTranslator(translator, self._streamed[0])
        self._watching = watched
        return watched

    def watch_choices(self, choices: ChoiceTranslator, n: int) -> ChoiceTranslator:
        if not self.recording:
            return choices
        self._streamed = [genai.StreamedMessage(self._payloads) for _ in range(n)]
        watched = _WatchedChoices(choices, self._streamed)
        self._watching = watched
        return watched

    def first_token(self) -> None:
        if not self.recording:
            return
        elapsed = time.perf_counter() - self._started
        self.span.event("first_token", {})
        self.span.attributes["gen_ai.response.time_to_first_chunk"] = elapsed

    def answered(self, status: int) -> None:
        self._status = status

    def attempt(self, number: int, key: str, method: str, base_url: str, path: str) -> AttemptTrace:
        """The CLIENT span of one upstream attempt, a child of this request's span."""
        return AttemptTrace(self, number, key, method, base_url, path)

    @property
    def cut_short(self) -> bool:
        """A stream that was left before its end (the client went away)."""
        return self._watching is not None and not self._watching.finished and self._exchange.error is None

    def finished(self, span: SpanRecord) -> None:
        if self.recording:
            span.end_ns = time.time_ns()
            self._tracing.export.add(span)

    # --- the end -----------------------------------------------------------------------

    def exit(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """End the span, from what the request's record says (an exit callback of its owner)."""
        if not self.recording:
            return
        exchange = self._exchange
        span = self.span
        attributes = span.attributes
        if self._streamed:
            self._answered_by([s.message for s in self._streamed if s.message])
        if exchange.key_name is not None:
            attributes["claude_proxy.client_key.name"] = exchange.key_name  # the name, never the secret
        if exchange.usage is not None:
            attributes.update(genai.usage_attributes(exchange.usage))
        if exchange.attempts is not None:
            attributes["claude_proxy.upstream.attempts"] = exchange.attempts
        status = self._status
        if exchange.answered_by_server is not None:
            status = exchange.answered_by_server[0]
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:  # nothing answered: the request was cancelled, or a bug
            span.fail(type(error).__qualname__ if isinstance(error, Exception) else "cancelled", repr(error))
        elif self.cut_short or exchange.error == CLIENT_GONE:
            span.fail(CLIENT_GONE, "the client disconnected before the answer was complete")
        elif (failure := exchange.error or (self._watching.failure if self._watching else None)) is not None:
            attributes["error.type"] = failure
            if status is None or status >= 500 or status < 400:  # < 400: a stream that failed after it started
                span.fail(failure, failure)
        self.finished(span)

    def _answered_by(self, messages: Sequence[Any]) -> None:
        self.span.attributes.update(genai.response_attributes(messages))
        if self._payloads and messages:
            self.span.attributes.update(self._clipped(genai.output_attributes(messages)))

    def _clipped(self, content: genai.Attributes) -> genai.Attributes:
        """Content attributes cut to ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, as the SDK cuts strings."""
        limit = self._tracing.content_limit
        if limit is None:
            return content
        return {key: value[:limit] if isinstance(value, str) else value for key, value in content.items()}


def _traceparent(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``traceparent``, read off the raw headers (cheaper than a headers object)."""
    for name, value in headers:
        if name == b"traceparent":
            return value.decode("latin-1")
    return None


def _message(reply: Reply) -> dict[str, Any] | None:
    if reply.status != 200:
        return None
    try:
        parsed = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


# --- streams -----------------------------------------------------------------------------


class _Watch:
    """What both watchers pass through unchanged, noting only that the stream has finished."""

    finished = False  # the stream reached its end (closing bytes, the early-end failure, or a failure)
    failure: str | None = None  # the error type of an upstream stream that closed before its message ended

    def __init__(self, inner: StreamTranslator | ChoiceTranslator) -> None:
        self._inner = inner

    @property
    def done(self) -> bool:
        done = self._inner.done
        if done:
            self.finished = True
        return done

    @property
    def tokens(self) -> Usage | None:
        return self._inner.tokens

    def fail(self, error: ProxyError) -> bytes:
        self.finished = True
        return self._inner.fail(error)

    def _ended(self, streamed: genai.StreamedMessage) -> None:
        if not streamed.message.get("stop_reason"):  # what the translator's end answers with an error
            self.failure = stream_ended_early().type


class _WatchedTranslator(_Watch):
    """A `StreamTranslator` that also feeds the trace's `StreamedMessage`."""

    _inner: StreamTranslator

    def __init__(self, inner: StreamTranslator, streamed: genai.StreamedMessage) -> None:
        super().__init__(inner)
        self._streamed = streamed

    def feed(self, event: str, data: bytes) -> bytes:
        if self._streamed.wants(event):
            self._streamed.feed(event, data)
        return self._inner.feed(event, data)

    def end(self) -> bytes:
        self.finished = True
        self._ended(self._streamed)
        return self._inner.end()


class _WatchedChoices(_Watch):
    """A `ChoiceTranslator` that also feeds each choice's `StreamedMessage`."""

    _inner: ChoiceTranslator

    def __init__(self, inner: ChoiceTranslator, streamed: list[genai.StreamedMessage]) -> None:
        super().__init__(inner)
        self._streamed = streamed

    def feed(self, choice: int, event: str, data: bytes) -> bytes:
        streamed = self._streamed[choice]
        if streamed.wants(event):
            streamed.feed(event, data)
        return self._inner.feed(choice, event, data)

    def end(self, choice: int) -> bytes:
        self._ended(self._streamed[choice])
        return self._inner.end(choice)


# --- upstream attempts -------------------------------------------------------------------

_SERVERS: dict[str, tuple[str, int]] = {}  # base URL → (server.address, server.port), parsed once


def _server(base_url: str) -> tuple[str, int]:
    server = _SERVERS.get(base_url)
    if server is None:
        parts = urlsplit(base_url)
        server = _SERVERS[base_url] = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    return server


class AttemptTrace:
    """One upstream attempt's CLIENT span; ``traceparent`` is the header its request carries."""

    def __init__(self, request: RequestTrace, number: int, key: str, method: str, base_url: str, path: str) -> None:
        self._request = request
        address, port = _server(base_url)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": base_url.rstrip("/") + path,
            "server.address": address,
            "server.port": port,
            "claude_proxy.upstream.attempt": number,
            "claude_proxy.upstream.key": key,  # its last four characters (`keypool.label`), never the secret
        }
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        parent = request.span
        self.span = SpanRecord(
            f"{method} {path.partition('?')[0]}", CLIENT, parent.trace_id, parent.span_id, attributes
        )
        self.span.flags = parent.flags
        self.traceparent: str | None = self.span.traceparent()

    def replied(self, status: int, request_id: str | None) -> None:
        self.span.attributes["http.response.status_code"] = status
        if request_id is not None:
            self.span.attributes["claude_proxy.upstream.request_id"] = request_id
        if status >= 400:
            self.span.fail(str(status), f"the upstream answered {status}")

    def failed(self, kind: str, description: str) -> None:
        self.span.fail(kind, description)

    def end(self) -> None:
        if self._request.cut_short:
            self.span.fail(CLIENT_GONE, "the client disconnected; the upstream call was closed")
        self._request.finished(self.span)
