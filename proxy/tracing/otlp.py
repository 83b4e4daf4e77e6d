"""Finished spans out of the process: batched in a background thread, encoded to OTLP protobuf and
sent by the OpenTelemetry OTLP/HTTP exporter's client (endpoint, headers, timeout, compression,
retries: all as its ``OTEL_EXPORTER_OTLP_*`` variables say), or handed to any SDK ``SpanExporter``
as SDK spans (the console exporter; tests' in-memory one).

The encoder writes the protobuf wire format directly: the SDK's encoder builds a message object
per attribute and costs more than the request it describes. An attribute that recurs (a model, a
route, a key label, a status) is encoded once and its bytes reused, and so is a span's block of
`SharedAttributes`. Batching follows the SDK's
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE`` and ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (with
larger defaults: 16384 and 4096); a request whose spans find the queue full is dropped and counted,
never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from proxy.tracing.record import CLIENT, ERROR, SpanRecord

log = logging.getLogger("proxy.tracing")

SCOPE: Final = "claude-proxy"
Send = Callable[[list[Any]], None]  # a batch of what `Sender.prepare` made of each finished span


# --- the protobuf wire format --------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or a message."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An ``AnyValue``: string 1, bool 2, int 3, double 4, array 5."""
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, list | tuple):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    return _field(1, str(value).encode("utf-8", "replace"))


_KEY_VALUES: dict[str, dict[Any, bytes]] = {}  # key → value → the encoded attribute
_MAX_CACHED: Final = 1024  # values per key; a key with more (ids, counts) is encoded afresh each time
_UNCACHED: Final[dict[Any, bytes]] = {}  # the cache of such a key


_KEYS: dict[str, bytes] = {}  # a KeyValue's key field, per key (a span's keys are a small fixed set)


def _key_value(number: int, key: str, value: Any) -> bytes:
    """A ``KeyValue`` as field ``number`` of its message."""
    encoded_key = _KEYS.get(key)
    if encoded_key is None:
        encoded_key = _KEYS[key] = _field(1, key.encode())
    if type(value) is str and len(value) < 0x80:  # the usual value, inline: AnyValue{string_value}
        text = value.encode("utf-8", "replace")
        if len(text) < 0x7E:
            any_value = b"\x0a" + bytes((len(text),)) + text
            return _field(number, encoded_key + b"\x12" + bytes((len(any_value),)) + any_value)
    return _field(number, encoded_key + _field(2, _any_value(value)))


def _span_attributes(attributes: Mapping[str, Any]) -> bytes:
    """A span's attributes (its field 9), each string or integer from the cache when it recurs."""
    cache = _KEY_VALUES
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is not str and kind is not int and kind is not tuple:  # bool, float: 1 == 1.0 == True
            parts.append(_key_value(9, key, value))
            continue
        by_value = cache.get(key)
        if by_value is None:
            by_value = cache[key] = {}
        elif by_value is _UNCACHED:
            parts.append(_key_value(9, key, value))
            continue
        encoded = by_value.get(value)
        if encoded is None:
            encoded = by_value[value] = _key_value(9, key, value)
            if len(by_value) >= _MAX_CACHED:  # its values do not recur: caching them costs, and grows
                cache[key] = _UNCACHED
        parts.append(encoded)
    return b"".join(parts)


_TIMES = struct.Struct("<BQBQ")  # start (7) and end (8), fixed64
_FLAGS = struct.Struct("<BBI")  # flags (16), fixed32: a two-byte tag


def encode_span(span: SpanRecord) -> bytes:
    """An OTLP ``Span`` message, framed as field 2 of ``ScopeSpans`` (what the export joins)."""
    parts = [b"\x0a\x10", span.trace_id.to_bytes(16, "big"), b"\x12\x08", span.span_id.to_bytes(8, "big")]
    if span.parent_id:
        parts += (b"\x22\x08", span.parent_id.to_bytes(8, "big"))
    parts += (
        _field(5, span.name.encode("utf-8", "replace")),
        b"\x30" + _varint(span.kind),
        _TIMES.pack(0x39, span.start_ns, 0x41, span.end_ns),
    )
    shared = span.shared
    if shared is not None:
        if shared.encoded is None:
            shared.encoded = _span_attributes(shared.attributes)
        parts.append(shared.encoded)
    parts.append(_span_attributes(span.attributes))
    for name, at, attributes in span.events:  # Event: time 1, name 2, attributes 3
        event = b"\x09" + struct.pack("<Q", at) + _field(2, name.encode())
        parts.append(_field(11, event + b"".join(_key_value(3, k, v) for k, v in attributes.items())))
    if span.status:  # Status: message 2, code 3
        message = _field(2, span.description.encode("utf-8", "replace")) if span.description else b""
        parts.append(_field(15, message + b"\x18" + _varint(span.status)))
    # Flags: the W3C flags, and whether the parent is remote (bit 9), which bit 8 says is known.
    parts.append(_FLAGS.pack(0x85, 0x01, span.flags | 0x100 | (0x200 if span.parent_remote else 0)))
    body = b"".join(parts)
    return _varint((2 << 3) | 2) + _varint(len(body)) + body


def encode_request(spans: Sequence[bytes], resource: bytes) -> bytes:
    """An ``ExportTraceServiceRequest``: one resource, one scope, the spans (each from
    `encode_span`). ``resource`` is the encoded ``Resource`` message (made once). The spans are
    copied once, behind a header whose lengths are summed up front."""
    scope = _field(1, _field(1, SCOPE.encode()))
    scope_spans_length = len(scope) + sum(map(len, spans))
    resource_field = _field(1, resource)
    scope_spans_head = b"\x12" + _varint(scope_spans_length) + scope
    resource_spans_length = len(resource_field) + len(scope_spans_head) - len(scope) + scope_spans_length
    head = b"\x0a" + _varint(resource_spans_length) + resource_field + scope_spans_head
    return b"".join([head, *spans])


def encode_resource(resource: Resource) -> bytes:
    return b"".join(_key_value(1, key, value) for key, value in resource.attributes.items())


# --- senders --------------------------------------------------------------------------------


class Finished(Protocol):
    """A request's record, once it has ended (`proxy.tracing.spans.RequestTrace`)."""

    def spans(self) -> list[SpanRecord]: ...


class Sender:
    """What becomes of a finished request: ``prepare`` turns its spans into what ``send`` takes a
    batch of; both run on the export thread."""

    def __init__(self, prepare: Callable[[Finished], list[Any]], send: Send, close: Callable[[], None]) -> None:
        self.prepare = prepare
        self.send = send
        self.close = close


def otlp_http_sender(resource: Resource) -> Sender:
    """Spans to the OTLP/HTTP endpoint the ``OTEL_EXPORTER_OTLP_*`` variables name, through the
    OpenTelemetry exporter's own HTTP client (its retries and backoff). Encoded spans wait for
    their batch as bytes, which the garbage collector never scans."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter()
    encoded = encode_resource(resource)

    def send(batch: list[bytes]) -> None:
        exporter._client.export(encode_request(batch, encoded))  # logs its own failures

    return Sender(lambda finished: [encode_span(span) for span in finished.spans()], send, exporter.shutdown)


def sdk_sender(exporter: SpanExporter, resource: Resource) -> Sender:
    """Spans to an SDK exporter, as the SDK's own spans."""

    def send(batch: list[SpanRecord]) -> None:
        exporter.export([as_sdk_span(span, resource) for span in batch])

    return Sender(lambda finished: finished.spans(), send, exporter.shutdown)


_SCOPE = InstrumentationScope(SCOPE)


def as_sdk_span(span: SpanRecord, resource: Resource) -> ReadableSpan:
    context = SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=TraceFlags(span.flags))
    parent = None
    if span.parent_id:
        parent = SpanContext(span.trace_id, span.parent_id, is_remote=span.parent_remote, trace_flags=TraceFlags(1))
    status = Status(StatusCode.ERROR, span.description or None) if span.status == ERROR else Status(StatusCode.UNSET)
    return ReadableSpan(
        name=span.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=span.all_attributes(),
        events=[Event(name, attributes, timestamp=at) for name, at, attributes in span.events],
        kind=SpanKind.CLIENT if span.kind == CLIENT else SpanKind.SERVER,
        status=status,
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=_SCOPE,
    )


# --- batching -------------------------------------------------------------------------------


def _setting(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        log.warning("%s is not a number; using %d", name, default)
        return default


_SLICE: Final = 64  # finished records made into spans and encoded at a time, on the event loop


class BatchExport:
    """Finished requests' spans, sent in batches by a daemon thread; ``synchronous``: sent as each
    request ends (tests).

    A finished request's record is queued as it ends; once a slice of them is queued, the loop
    makes their spans and encodes them in one callback, and the thread only sends the bytes, in
    batches. Measured under load (c32, ``python -m bench``), this beat both alternatives: encoding
    each span as its request ends (the encoder's code and caches are cold every time) and
    encoding on the thread (it contends with the loop for the GIL some twenty times per slice). A
    record is small: what waits for its slice is not the span dicts, whose retention made every
    later allocation on the loop miss the CPU's caches. The thread also prepares what is left
    when its timer fires (a quiet gateway) and at shutdown."""

    def __init__(self, sender: Sender, *, synchronous: bool = False) -> None:
        self._prepare = sender.prepare
        self._send = sender.send
        self._close = sender.close
        self._synchronous = synchronous
        self._delay = _setting("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        # Larger than the SDK's defaults (2048 and 512): each POST costs the event loop far more than
        # its spans' share (the export thread takes the GIL back after every read and write), so
        # fewer, larger batches; a prepared span is about 400 bytes.
        self._max_queue = _setting("OTEL_BSP_MAX_QUEUE_SIZE", 16384)
        self._max_batch = min(_setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 4096), self._max_queue)
        self._finished: deque[Finished] = deque()  # records waiting for their slice
        self._prepared: deque[Any] = deque()  # encoded spans waiting for their batch
        self._wake = threading.Event()
        self._stopping = False
        self.dropped = 0
        self._thread: threading.Thread | None = None
        if not synchronous:
            self._thread = threading.Thread(target=self._run, name="claude-proxy-span-export", daemon=True)
            self._thread.start()

    def add(self, finished: Finished) -> None:
        if self._synchronous:
            self._export(self._prepare(finished))
            return
        queue = self._finished
        if len(queue) + len(self._prepared) >= self._max_queue:  # a record holds a span or more
            self.dropped += 1
            return
        queue.append(finished)
        if len(queue) == _SLICE:
            try:
                asyncio.get_running_loop().call_soon(self._prepare_slice)
            except RuntimeError:  # ended off the event loop
                self._prepare_slice()

    def _prepare_slice(self) -> None:
        self._prepare_finished()
        if len(self._prepared) >= self._max_batch:
            self._wake.set()

    def _run(self) -> None:
        send_at = time.monotonic() + self._delay
        while not self._stopping:
            self._wake.wait(max(0.0, send_at - time.monotonic()))
            self._wake.clear()
            self._prepare_finished()
            now = time.monotonic()
            if now >= send_at or len(self._prepared) >= self._max_batch:
                self._send_prepared()
                send_at = now + self._delay
        self._prepare_finished()
        self._send_prepared()

    def _prepare_finished(self) -> None:
        """Every queued record's spans, encoded (on the loop, or on the thread: each takes its own)."""
        finished, prepared = self._finished, self._prepared
        while True:
            try:
                record = finished.popleft()
            except IndexError:
                return
            try:
                prepared.extend(self._prepare(record))
            except Exception:  # a request whose spans cannot be made is lost, never the gateway
                log.exception("preparing a request's spans for export failed")

    def _send_prepared(self) -> None:
        prepared = self._prepared
        while prepared:
            self._export([prepared.popleft() for _ in range(min(len(prepared), self._max_batch))])
        if self.dropped:
            log.warning(
                "%d requests' spans were dropped: the export queue (OTEL_BSP_MAX_QUEUE_SIZE) was full", self.dropped
            )
            self.dropped = 0

    def _export(self, batch: list[Any]) -> None:
        try:
            self._send(batch)
        except Exception:  # the gateway serves on whatever its exporter does
            log.exception("exporting %d spans failed", len(batch))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()
