"""What a finished span is, the W3C context it carries and the sampling decision: plain Python, no
OpenTelemetry import.

The gateway records its spans itself rather than through the SDK's span objects: an SDK span (its
locked, validated attribute store, its processors, its context objects) costs a request about a
third of what the gateway itself spends serving it, which tracing at 100 % sampling cannot afford.
A `SpanRecord` is a slotted object with a plain attribute dict, made on the export thread from a
request's record (`proxy.tracing.spans`); `proxy.tracing.otlp` encodes it to OTLP, or hands it to
any SDK exporter as an SDK span.

Sampling follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` as the SDK does, for the
standard samplers: ``always_on``, ``always_off``, ``traceidratio``, ``parentbased_always_on``
(the default), ``parentbased_always_off``, ``parentbased_traceidratio``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger("proxy.tracing")

SERVER: Final = 2  # OTLP's SpanKind values
CLIENT: Final = 3
UNSET, OK, ERROR = 0, 1, 2  # OTLP's status codes
SAMPLED: Final = 0x01  # the W3C trace flag

_getrandbits = random.getrandbits  # reseeded in a forked worker by the random module itself
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")


@dataclass(frozen=True, slots=True)
class Parent:
    """The span a W3C ``traceparent`` names: the client's, which this request's span continues."""

    trace_id: int
    span_id: int
    sampled: bool


def parse_traceparent(value: str | None) -> Parent | None:
    """The parent a ``traceparent`` header names; None for none, or one that is malformed (as W3C
    says: then the request starts a trace of its own)."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip().lower())
    if match is None or match[1] == "ff" or (match[1] == "00" and len(value.strip()) != 55):
        return None
    trace_id, span_id = int(match[2], 16), int(match[3], 16)
    if not trace_id or not span_id:
        return None
    return Parent(trace_id, span_id, bool(int(match[4], 16) & SAMPLED))


class SharedAttributes:
    """Attributes that many spans carry alike (an upstream target's, a route's and model's): made
    once, and encoded once (``encoded``, by the OTLP encoder)."""

    __slots__ = ("attributes", "encoded")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.encoded: bytes | None = None

    def __repr__(self) -> str:
        return f"SharedAttributes({self.attributes!r})"


class SpanRecord:
    """One finished span: ``shared`` attributes (if any), then its own."""

    __slots__ = (
        "attributes",
        "description",
        "end_ns",
        "events",
        "flags",
        "kind",
        "name",
        "parent_id",
        "parent_remote",
        "shared",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        kind: int,
        trace_id: int,
        parent_id: int,
        attributes: dict[str, Any],
        remote: bool = False,
        *,
        span_id: int = 0,
        start_ns: int = 0,
        shared: SharedAttributes | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id or new_span_id()
        self.parent_id = parent_id  # 0: a root span
        self.parent_remote = remote
        self.flags = SAMPLED  # only sampled spans are recorded
        self.start_ns = start_ns or time.time_ns()
        self.end_ns = 0
        self.attributes = attributes
        self.shared = shared
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.status = UNSET
        self.description = ""

    def all_attributes(self) -> dict[str, Any]:
        return {**self.shared.attributes, **self.attributes} if self.shared is not None else dict(self.attributes)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        self.events.append((name, time.time_ns(), attributes))

    def fail(self, kind: str, description: str) -> None:
        self.attributes["error.type"] = kind
        self.status, self.description = ERROR, description


def new_trace_id() -> int:
    return _getrandbits(128) or 1


def new_span_id() -> int:
    return _getrandbits(64) or 1


# --- sampling -----------------------------------------------------------------------------

Sampler = Callable[[Parent | None, int], bool]  # (the client's parent, the trace id) → record?
_ROOT_SAMPLERS: Final = ("always_on", "always_off", "traceidratio")


def sampler_from_environment(environ: Mapping[str, str] = os.environ) -> Sampler:
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    root_name = name.removeprefix("parentbased_")
    if root_name not in _ROOT_SAMPLERS:
        log.warning("OTEL_TRACES_SAMPLER=%s is not supported; using parentbased_always_on", name)
        name, root_name = "parentbased_always_on", "always_on"
    root = _root_sampler(root_name, environ.get("OTEL_TRACES_SAMPLER_ARG"))
    if not name.startswith("parentbased_"):
        return lambda parent, trace_id: root(trace_id)
    return lambda parent, trace_id: root(trace_id) if parent is None else parent.sampled


def _root_sampler(name: str, argument: str | None) -> Callable[[int], bool]:
    if name == "always_on":
        return lambda trace_id: True
    if name == "always_off":
        return lambda trace_id: False
    try:
        rate = min(max(float(argument if argument is not None else 1.0), 0.0), 1.0)
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%s is not a number; sampling every trace", argument)
        rate = 1.0
    bound = round(rate * (1 << 64))  # as the SDK's TraceIdRatioBased: the trace id's low 64 bits
    return lambda trace_id: (trace_id & 0xFFFFFFFFFFFFFFFF) < bound
