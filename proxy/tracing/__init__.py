"""OpenTelemetry traces, optional (``tracing: true`` / ``PROXY_TRACING=1``, and the ``tracing`` extra).

Off, tracing costs a request one check of the settings and nothing else: no span, no context
object, and OpenTelemetry is never imported (this module imports nothing of it). On, each request
served by the pipeline gets:

    a SERVER span        the whole request, a stream to its last byte; continues the client's trace
                         (W3C ``traceparent``); the GenAI attributes (``proxy.tracing.genai``), the
                         client key's name, the status; a ``first_token`` event
    a CLIENT span        per upstream attempt (retries visible): attempt number, the upstream key by
    per attempt          its last four characters, the HTTP status; the upstream call carries its
                         ``traceparent`` (and no other tracing header)

The modules, each one concept:

    genai.py    the GenAI semantic conventions' attributes, from the Messages API call and reply (pure)
    record.py   a span being recorded, the W3C context, the sampler (no OpenTelemetry import)
    spans.py    the request's and the attempts' spans: what the pipeline and the upstream note
    otlp.py     out of the process: OTLP protobuf, batched on a thread, or any SDK exporter

Spans are recorded by the gateway itself, not as SDK span objects: a request keeps a small record
as it is served, whose spans are made and encoded to OTLP by the gateway's own encoder a batch of
requests at a time (see ``spans``, ``record`` and ``otlp``: the SDK's would cost more than the
request). The SDK still
provides the resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), the OTLP/HTTP client
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``,
``..._COMPRESSION``, its retries) and the exporter interface. Also read: ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (the standard samplers; default ``parentbased_always_on``),
``OTEL_BSP_SCHEDULE_DELAY`` / ``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (cuts the opt-in content attributes), and
``OTEL_TRACES_EXPORTER=console`` (print spans instead of exporting them). The service is named
``claude-proxy`` unless ``OTEL_SERVICE_NAME`` says otherwise.

Each serving process makes its tracing on its first traced request (a ``--workers`` child makes
its own, after the fork) and sends what is queued at exit. ``install`` puts one in place first
(tests: an in-memory exporter).
"""

from __future__ import annotations

import atexit
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from proxy.tracing.extra import INSTALL_HINT, installed

if TYPE_CHECKING:
    from starlette.requests import Request

    from proxy.tracing.spans import Record, RequestTrace, Route, Tracing

__all__ = ["CURRENT", "INSTALL_HINT", "install", "installed", "start", "uninstall"]

# The request being traced, for log lines written while serving it (`proxy.logs` adds its ids).
CURRENT: ContextVar[RequestTrace | None] = ContextVar("claude_proxy_trace", default=None)

_tracing: Tracing | None = None
_flushed_at_exit = False


def install(exporter: Any = None, *, batch: bool = True) -> Tracing:
    """Make the process's tracing, replacing (and flushing) any before it. ``exporter``: an SDK
    ``SpanExporter`` (default: OTLP/HTTP as ``OTEL_*`` says); ``batch=False`` exports each span as
    it ends (tests)."""
    global _tracing, _flushed_at_exit
    from proxy.tracing.spans import Tracing

    uninstall()
    _tracing = Tracing(exporter, batch=batch)
    if not _flushed_at_exit:  # the export thread is a daemon: what it holds at exit goes out first
        atexit.register(uninstall)
        _flushed_at_exit = True
    return _tracing


def uninstall() -> None:
    """Send what is queued and drop the process's tracing, if any."""
    global _tracing
    tracing, _tracing = _tracing, None
    if tracing is not None:
        tracing.shutdown()


def start(request: Request, where: Route, exchange: Record, payloads: bool) -> RequestTrace:
    """The request's SERVER span, started (continuing the client's trace), noted on ``exchange``
    and as the current trace for log lines. The caller ends it (``RequestTrace.exit``)."""
    tracing = _tracing if _tracing is not None else install()
    trace = tracing.request(request, where, exchange, payloads)
    exchange.trace = trace
    CURRENT.set(trace)
    return trace
