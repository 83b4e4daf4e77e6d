"""The health page's data: one snapshot of what the gateway already measures.

It reads the same registry ``/metrics`` serves (`proxy.metrics.registry`): with ``--workers N``
that is every live worker's samples, so the page shows the whole gateway. A snapshot holds
cumulative counters and histogram buckets, not rates: the page keeps the last minutes of
snapshots and computes requests/s, errors by status and p50/p99 from the differences between
them (client-side, see static/health.js), so the server keeps no history and any worker can answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from proxy import metrics

# Only the API's own traffic: the console's polling, /metrics scrapes and probes are not load.
API_PREFIX = "/v1/"


def _buckets(by_le: dict[float, float]) -> list[list[float | str]]:
    # JSON has no infinity: the last bucket's bound is the string "+Inf", as in the exposition format.
    return [[le if math.isfinite(le) else "+Inf", by_le[le]] for le in sorted(by_le)]


def snapshot(
    registry: CollectorRegistry, upstream_in_flight: int | None = None, now: float | None = None
) -> dict[str, Any]:
    """Counters and gauges summed over workers and labels, as plain JSON."""
    now = time.time() if now is None else now
    by_status: dict[str, float] = defaultdict(float)
    duration: dict[float, float] = defaultdict(float)
    ttft: dict[float, float] = defaultdict(float)
    gauges: dict[str, float] = defaultdict(float)
    resting: dict[str, float] = defaultdict(float)
    refused: dict[str, float] = defaultdict(float)
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "claude_proxy_requests_total" and labels.get("route", "").startswith(API_PREFIX):
                by_status[labels.get("status", "")] += value
            elif name == "claude_proxy_request_duration_seconds_bucket" and labels.get("route", "").startswith(
                API_PREFIX
            ):
                duration[float(labels["le"])] += value
            elif name == "claude_proxy_time_to_first_token_seconds_bucket":
                ttft[float(labels["le"])] += value
            elif name in (
                "claude_proxy_in_flight_requests",
                "claude_proxy_streams_open",
                "claude_proxy_upstream_in_flight",
            ):
                gauges[name] += value
            elif name == "claude_proxy_upstream_key_resting_until_seconds":
                resting[labels["key"]] = max(resting[labels["key"]], value)
            elif name == "claude_proxy_upstream_key_refused":
                refused[labels["key"]] = max(refused[labels["key"]], value)
    if upstream_in_flight is None:
        upstream_in_flight = int(gauges["claude_proxy_upstream_in_flight"])
    return {
        "at": now,
        "requests_by_status": dict(sorted(by_status.items())),
        "duration_buckets": _buckets(duration),
        "ttft_buckets": _buckets(ttft),
        # The console's own request for this snapshot is in flight too; it is not load.
        "in_flight": max(int(gauges["claude_proxy_in_flight_requests"]) - 1, 0),
        "streams_open": int(gauges["claude_proxy_streams_open"]),
        "upstream_in_flight": upstream_in_flight,
        "upstream_keys": [_key_state(key, resting[key], refused.get(key, 0.0), now) for key in sorted(resting)],
    }


def _key_state(key: str, resting_until: float, refused: float, now: float) -> dict[str, Any]:
    if refused:
        return {"key": key, "state": "refused", "resting_until": None}
    if resting_until > now:
        return {"key": key, "state": "resting", "resting_until": resting_until}
    return {"key": key, "state": "healthy", "resting_until": None}


async def _publish_every(count: Callable[[], int], every: float) -> None:
    while True:
        metrics.UPSTREAM_IN_FLIGHT.set(count())
        await asyncio.sleep(every)


def publish_upstream_in_flight(count: Callable[[], int], every: float = 1.0) -> asyncio.Task[None] | None:
    """With several workers, each worker's count of upstream calls in flight (`Upstream.in_flight`)
    is copied into a summed gauge once a second, so any worker's snapshot shows the whole gateway's.
    A background task, not a hook on the call path: the completion path does no extra work. With one
    worker the snapshot reads the count itself and nothing is started. The caller cancels the task."""
    if not metrics.multiprocess_mode():
        return None
    return asyncio.create_task(_publish_every(count, every), name="console-upstream-in-flight")
