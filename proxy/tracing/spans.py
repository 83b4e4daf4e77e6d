"""The spans of a traced request (loaded only when tracing is on).

``RequestTrace`` is one request's SERVER span: the pipeline notes on it what it learns (the call it
makes, the replies, the first token, the status) and the request's owner ends it last, after the
upstream responses are closed and the usage is settled (``exit``, pushed first on the owner), so
the span holds the final usage and error, and a stream's span lasts to its last byte.

``AttemptTrace`` is one upstream attempt's CLIENT span, made by ``proxy.upstream`` per attempt; a
streamed attempt that succeeds is ended when its stream is closed.

Both are records: on the event loop they only take a few values from what the pipeline already
has (no attribute dict, no span object). The ended request's record goes to the export queue with
its attempts, and `RequestTrace.spans` makes the `SpanRecord`s from it when its batch is encoded
(``proxy.tracing.otlp``). The attributes every request on a route and model shares, and every
attempt at an upstream URL, are one `SharedAttributes` each, encoded once.

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
    SAMPLED,
    SERVER,
    Parent,
    Sampler,
    SharedAttributes,
    SpanRecord,
    new_span_id,
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
    def json(self) -> Any: ...


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
    """One request's SERVER span, as a flat record of what the request learnt: its spans (this one
    and one per upstream attempt) are made from it on the export thread (`spans`), once it ends.

    The event loop only copies a few values per request onto this slotted object; the attribute
    dicts, the span records and their encoding are the export thread's, a batch at a time. What
    waits for that thread is this small record, not the dicts: retained spans make every later
    allocation on the loop miss the CPU's caches, which cost more than building them."""

    __slots__ = (
        "_attempts",
        "_exchange",
        "_payloads",
        "_streamed",
        "_tracing",
        "_watching",
        "attempts",
        "content",
        "end_ns",
        "error",
        "exported",
        "first_token_ns",
        "key_name",
        "method",
        "model",
        "n",
        "operation",
        "parameters",
        "parent_id",
        "recording",
        "remote",
        "replied",
        "request_id",
        "route",
        "span_flags",
        "span_id",
        "span_number",
        "start_ns",
        "status",
        "stream",
        "trace_id",
        "trace_number",
        "usage",
    )

    def __init__(self, tracing: Tracing, request: Request, where: Route, exchange: Record, payloads: bool) -> None:
        scope = request.scope
        parent: Parent | None = parse_traceparent(_traceparent(scope["headers"]))
        trace_number = parent.trace_id if parent is not None else new_trace_id()
        self._tracing = tracing
        self._exchange: Record | None = exchange  # until `exit`
        self._payloads = payloads
        self._streamed: list[genai.StreamedMessage] = []
        self._watching: _Watch | None = None
        self._attempts: list[AttemptTrace] = []
        self.trace_number = trace_number
        self.span_number = new_span_id()
        self.parent_id = parent.span_id if parent is not None else 0
        self.remote = parent is not None
        self.start_ns = time.time_ns()
        self.end_ns = 0
        # Sampled out: nothing is recorded, but the context still goes on upstream.
        self.recording = tracing.sampler(parent, trace_number)
        self.span_flags = SAMPLED if self.recording else 0
        self.trace_id = f"{trace_number:032x}"  # for log lines
        self.span_id = f"{self.span_number:016x}"
        self.method: str = scope["method"]
        self.route = where.path
        self.request_id = exchange.request_id
        self.operation = "count_tokens" if where.options.get("count_tokens") else "chat"
        self.model: str | None = None
        self.parameters: genai.Parameters | None = None
        self.stream = False
        self.n = 1
        self.content: genai.Attributes | None = None  # the opt-in prompt and answer, with payloads
        self.replied: list[genai.Replied] = []
        self.first_token_ns = 0
        self.key_name: str | None = None
        self.usage: Usage | None = None
        self.attempts: int | None = None
        self.status: int | None = None
        self.error: tuple[str, str, bool] | None = None  # (error.type, description, the span failed)
        self.exported = False

    # --- what the pipeline notes -------------------------------------------------------

    def request(self, outbound: Call) -> None:
        """The upstream call the request became."""
        if not self.recording:
            return
        self.model = outbound.model
        self.parameters = genai.parameters(outbound.body)
        self.stream, self.n = outbound.stream, outbound.n
        if self._payloads:
            self._add_content(genai.input_attributes(outbound.body))

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
        if self.recording and not self.first_token_ns:
            self.first_token_ns = time.time_ns()

    def answered(self, status: int) -> None:
        self.status = status

    def attempt(self, number: int, key: str, method: str, base_url: str, path: str) -> AttemptTrace:
        """The CLIENT span of one upstream attempt, a child of this request's span."""
        return AttemptTrace(self, number, key, method, base_url, path)

    @property
    def cut_short(self) -> bool:
        """A stream that was left before its end (the client went away)."""
        return self._exchange is not None and self._left_early(self._exchange)

    def _left_early(self, exchange: Record) -> bool:
        return self._watching is not None and not self._watching.finished and exchange.error is None

    def attempt_ended(self, attempt: AttemptTrace) -> None:
        if not self.recording:
            return
        if self.exported:  # ended after the request did (it never should): sent on its own
            self._tracing.export.add(_Late(attempt, self.trace_number, self.span_number))
        else:
            self._attempts.append(attempt)

    # --- the end -----------------------------------------------------------------------

    def exit(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """End the span, from what the request's record says (an exit callback of its owner)."""
        # The record refers to this trace (`trace`) for the access line still to come: letting go of
        # it here leaves no cycle, so both are freed as the request ends rather than by the
        # collector.
        exchange, self._exchange = self._exchange, None
        if self.recording and exchange is not None:  # exchange: None once ended
            self._end(exchange, error)
            self.exported = True
            self._tracing.export.add(self)

    def _end(self, exchange: Record, error: BaseException | None) -> None:
        self.end_ns = time.time_ns()
        if self._streamed:
            self._answered_by([s.message for s in self._streamed if s.message])
            self._streamed = []
        self.key_name = exchange.key_name  # the name, never the secret
        self.usage = exchange.usage
        self.attempts = exchange.attempts
        if exchange.answered_by_server is not None:  # what the client got, when the server answered it
            self.status = exchange.answered_by_server[0]
        status = self.status
        if error is not None:  # nothing answered: the request was cancelled, or a bug
            kind = type(error).__qualname__ if isinstance(error, Exception) else "cancelled"
            self.error = (kind, repr(error), True)
        elif self._left_early(exchange) or exchange.error == CLIENT_GONE:
            self.error = (CLIENT_GONE, "the client disconnected before the answer was complete", True)
        elif (failure := exchange.error or (self._watching.failure if self._watching else None)) is not None:
            # < 400: a stream that failed after it started; a 4xx is the client's fault, the span's status unset
            self.error = (failure, failure, status is None or status >= 500 or status < 400)
        self._watching = None

    def _answered_by(self, messages: Sequence[Mapping[str, Any]]) -> None:
        self.replied = [genai.replied(m) for m in messages]
        if self._payloads and messages:
            self._add_content(genai.output_attributes(messages))

    def _add_content(self, content: genai.Attributes) -> None:
        """Content attributes cut to ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, as the SDK cuts strings."""
        limit = self._tracing.content_limit
        if limit is not None:
            content = {key: value[:limit] if isinstance(value, str) else value for key, value in content.items()}
        self.content = {**self.content, **content} if self.content else content

    # --- on the export thread ----------------------------------------------------------

    def spans(self) -> list[SpanRecord]:
        """The request's SERVER span and its attempts' CLIENT spans, from the record."""
        name, shared = _served(self.method, self.route, self.operation, self.model)
        attributes: dict[str, Any] = {"claude_proxy.request_id": self.request_id}
        if self.model is not None:
            attributes.update(genai.request_attributes(self.parameters, self.stream, self.n))
        if self.replied:
            attributes.update(genai.response_attributes(self.replied))
        if self.content:
            attributes.update(self.content)
        if self.first_token_ns:
            attributes["gen_ai.response.time_to_first_chunk"] = (self.first_token_ns - self.start_ns) / 1e9
        if self.key_name is not None:
            attributes["claude_proxy.client_key.name"] = self.key_name
        if self.usage is not None:
            attributes.update(genai.usage_attributes(self.usage))
        if self.attempts is not None:
            attributes["claude_proxy.upstream.attempts"] = self.attempts
        if self.status is not None:
            attributes["http.response.status_code"] = self.status
        span = SpanRecord(
            name,
            SERVER,
            self.trace_number,
            self.parent_id,
            attributes,
            remote=self.remote,
            span_id=self.span_number,
            start_ns=self.start_ns,
            shared=shared,
        )
        span.end_ns = self.end_ns
        if self.first_token_ns:
            span.events.append(("first_token", self.first_token_ns, {}))
        if self.error is not None:
            kind, description, failed = self.error
            attributes["error.type"] = kind
            if failed:
                span.fail(kind, description)
        return [span, *(attempt.span(self.trace_number, self.span_number) for attempt in self._attempts)]


# (method, route, operation, model) → the SERVER span's name and the attributes it shares with every
# request alike, made once (on the export thread)
_SERVED: dict[tuple[str, str, str, str | None], tuple[str, SharedAttributes]] = {}


def _served(method: str, route: str, operation: str, model: str | None) -> tuple[str, SharedAttributes]:
    served = _SERVED.get((method, route, operation, model))
    if served is None:
        attributes: dict[str, Any] = {"http.request.method": method, "http.route": route}
        name = f"{method} {route}"  # a request that failed before its model was known
        if model is not None:
            name = f"{operation} {model}"
            attributes.update(genai.model_attributes(operation, model))
        if len(_SERVED) >= 1024:  # models come from clients (an unknown one is refused, but named)
            _SERVED.clear()
        served = _SERVED[(method, route, operation, model)] = (name, SharedAttributes(attributes))
    return served


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
        parsed = reply.json()  # parsed once, for the dialect's answer too
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

# (method, base URL, path) → the span name and the attributes every attempt at it shares, made once
_TARGETS: dict[tuple[str, str, str], tuple[str, SharedAttributes]] = {}


def _target(method: str, base_url: str, path: str) -> tuple[str, SharedAttributes]:
    target = _TARGETS.get((method, base_url, path))
    if target is None:
        parts = urlsplit(base_url)
        shared = {
            "http.request.method": method,
            "url.full": base_url.rstrip("/") + path,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        }
        if len(_TARGETS) >= 256:  # paths carry no ids today; should one ever, this stays bounded
            _TARGETS.clear()
        target = _TARGETS[(method, base_url, path)] = (f"{method} {path.partition('?')[0]}", SharedAttributes(shared))
    return target


class AttemptTrace:
    """One upstream attempt's CLIENT span, as a record (its span is made on the export thread);
    ``traceparent`` is the header its request carries."""

    __slots__ = (
        "_request",
        "end_ns",
        "error",
        "key",
        "number",
        "span_id",
        "start_ns",
        "status",
        "target",
        "traceparent",
        "upstream_request_id",
    )

    def __init__(self, request: RequestTrace, number: int, key: str, method: str, base_url: str, path: str) -> None:
        self._request: RequestTrace | None = request  # until `end`
        self.target = _target(method, base_url, path)
        self.number = number
        self.key = key  # its last four characters (`keypool.label`), never the secret
        self.span_id = new_span_id()
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.status: int | None = None
        self.upstream_request_id: str | None = None
        self.error: tuple[str, str] | None = None
        self.traceparent: str | None = f"00-{request.trace_id}-{self.span_id:016x}-{request.span_flags:02x}"

    def replied(self, status: int, request_id: str | None) -> None:
        self.status = status
        self.upstream_request_id = request_id
        if status >= 400:
            self.error = (str(status), f"the upstream answered {status}")

    def failed(self, kind: str, description: str) -> None:
        self.error = (kind, description)

    def end(self) -> None:
        request, self._request = self._request, None  # the request holds its attempts: no cycle
        if request is None:
            return  # ended already
        if request.cut_short:
            self.error = (CLIENT_GONE, "the client disconnected; the upstream call was closed")
        self.end_ns = time.time_ns()
        request.attempt_ended(self)

    def span(self, trace_id: int, parent_id: int) -> SpanRecord:
        """The attempt's CLIENT span (on the export thread)."""
        name, shared = self.target
        attributes: dict[str, Any] = {
            "claude_proxy.upstream.attempt": self.number,
            "claude_proxy.upstream.key": self.key,
        }
        if self.number > 1:
            attributes["http.request.resend_count"] = self.number - 1
        if self.status is not None:
            attributes["http.response.status_code"] = self.status
        if self.upstream_request_id is not None:
            attributes["claude_proxy.upstream.request_id"] = self.upstream_request_id
        span = SpanRecord(
            name,
            CLIENT,
            trace_id,
            parent_id,
            attributes,
            span_id=self.span_id,
            start_ns=self.start_ns,
            shared=shared,
        )
        span.end_ns = self.end_ns
        if self.error is not None:
            span.fail(*self.error)
        return span


class _Late:
    """An attempt that ended after its request was exported, sent on its own."""

    __slots__ = ("_attempt", "_parent_id", "_trace_id")

    def __init__(self, attempt: AttemptTrace, trace_id: int, parent_id: int) -> None:
        self._attempt, self._trace_id, self._parent_id = attempt, trace_id, parent_id

    def spans(self) -> list[SpanRecord]:
        return [self._attempt.span(self._trace_id, self._parent_id)]
