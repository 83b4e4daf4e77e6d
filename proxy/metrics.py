"""Prometheus metrics (prometheus-client), served at ``GET /metrics``.

With several workers, ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a shared folder before any
worker imports this module, and ``/metrics`` aggregates every worker's samples from it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

from proxy.usage import Usage

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "claude_proxy_requests_total", "Requests answered, by route, model and HTTP status.", ["route", "model", "status"]
)
REQUEST_DURATION = Histogram(
    "claude_proxy_request_duration_seconds",
    "Time from request to the end of the response (a stream: its last byte).",
    ["route", "model"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "claude_proxy_time_to_first_token_seconds",
    "Time from request to the first streamed content chunk.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_ATTEMPTS = Counter(
    "claude_proxy_upstream_attempts_total", "Calls sent to the upstream API, retries included.", ["path"]
)
UPSTREAM_RETRIES = Counter(
    "claude_proxy_upstream_retries_total",
    "Upstream attempts that were retried, by reason (an HTTP status, timeout, connect, …).",
    ["reason"],
)
TOKENS = Counter(
    "claude_proxy_tokens_total",
    "Tokens used, by client key name, model and kind (input, output, cached).",
    ["key", "model", "kind"],
)
IN_FLIGHT = Gauge("claude_proxy_in_flight_requests", "Requests being served right now.", multiprocess_mode="livesum")
STREAMS_OPEN = Gauge(
    "claude_proxy_streams_open", "Streaming responses being sent right now.", multiprocess_mode="livesum"
)
UPSTREAM_KEYS = Gauge(
    "claude_proxy_upstream_keys",
    "Upstream keys of the pool by state (healthy, resting, disabled), per worker.",
    ["state"],
    multiprocess_mode="liveall",
)
# Each upstream key by its label (last four characters), kept up to date by the key pool when a key
# rests or is refused, so that every worker's view reaches the aggregate without a scrape of each:
# the latest "resting until" any live worker was told, and whether any worker had it refused.
UPSTREAM_KEY_RESTING_UNTIL = Gauge(
    "claude_proxy_upstream_key_resting_until_seconds",
    "Unix time until which an upstream key rests after a 429 (0: not resting), by key label.",
    ["key"],
    multiprocess_mode="livemax",
)
UPSTREAM_KEY_REFUSED = Gauge(
    "claude_proxy_upstream_key_refused",
    "1 once the upstream refused a key (401) and it left the rotation, by key label.",
    ["key"],
    multiprocess_mode="livemax",
)
UPSTREAM_IN_FLIGHT = Gauge(
    "claude_proxy_upstream_in_flight", "Upstream calls in flight right now.", multiprocess_mode="livesum"
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry() -> CollectorRegistry:
    """What ``/metrics`` reads: every worker's samples in multi-worker mode, else this process's."""
    if multiprocess_mode():
        aggregate = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return aggregate
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type; all workers' samples in multi-worker mode."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


@functools.lru_cache(maxsize=8192)
def _child(metric: MetricWrapperBase, labels: tuple[str, ...]) -> Any:
    return metric.labels(*labels)


def series(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: prometheus_client validates the labels and takes a
    lock on every call, and the hot path asks for the same few series on every request. The label
    values are bounded (routes, statuses, capped models, key names), and so is this cache."""
    return _child(metric, labels)


# Model names come from clients; past this many distinct values they share one label, so a
# client cannot grow the metrics without bound.
MAX_MODEL_LABELS = 100
_seen_models: set[str] = set()


def model_label(model: str | None) -> str:
    if not model:
        return ""
    if model in _seen_models:
        return model
    if len(_seen_models) < MAX_MODEL_LABELS:
        _seen_models.add(model)
        return model
    return "other"


def record_tokens(key: str, model: str, usage: Usage) -> None:
    """Count a request's tokens; "input" is the whole prompt (cache reads and writes included),
    "cached" the cache reads among it."""
    label = model_label(model)
    series(TOKENS, key, label, "input").inc(usage.prompt)
    series(TOKENS, key, label, "output").inc(usage.output)
    if usage.cache_read:
        series(TOKENS, key, label, "cached").inc(usage.cache_read)


def record_key_pool(states: list[dict[str, Any]]) -> None:
    counts = {"healthy": 0, "resting": 0, "disabled": 0}
    for state in states:
        if state["disabled"]:
            counts["disabled"] += 1
        elif state["resting_for"] > 0:
            counts["resting"] += 1
        else:
            counts["healthy"] += 1
    for name, count in counts.items():
        UPSTREAM_KEYS.labels(name).set(count)


def record_upstream_key(label: str, resting_until: float, refused: bool) -> None:
    """One upstream key's state: ``resting_until`` is a Unix time (0 when it is not resting)."""
    UPSTREAM_KEY_RESTING_UNTIL.labels(label).set(resting_until)
    UPSTREAM_KEY_REFUSED.labels(label).set(1 if refused else 0)
