"""The health snapshot: what the gateway measured, summed over labels and workers; the upstream
keys' states by label, from whichever worker saw them; the upstream calls in flight of every worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy import metrics
from proxy.console import health
from tests.polling import eventually_async

NOW = 1_800_000_000.0


def test_the_snapshot_counts_api_traffic_only_and_names_each_keys_state() -> None:
    registry = CollectorRegistry()
    requests = Counter("claude_proxy_requests", "", ["route", "model", "status"], registry=registry)
    requests.labels("/v1/chat/completions", "m", "200").inc(5)
    requests.labels("/v1/responses", "m", "429").inc(2)
    requests.labels("/console", "", "200").inc(100)  # the console's own polling is not load
    duration = Histogram(
        "claude_proxy_request_duration_seconds", "", ["route", "model"], buckets=(0.1, 1), registry=registry
    )
    duration.labels("/v1/chat/completions", "m").observe(0.05)
    duration.labels("/console", "").observe(0.05)
    resting = Gauge("claude_proxy_upstream_key_resting_until_seconds", "", ["key"], registry=registry)
    refused = Gauge("claude_proxy_upstream_key_refused", "", ["key"], registry=registry)
    for key, until, gone in (("…aaaa", 0, 0), ("…bbbb", NOW + 30, 0), ("…cccc", NOW - 5, 0), ("…dddd", 0, 1)):
        resting.labels(key).set(until)
        refused.labels(key).set(gone)
    snapshot = health.snapshot(registry, upstream_in_flight=3, now=NOW)
    assert snapshot["requests_by_status"] == {"200": 5.0, "429": 2.0}
    assert snapshot["duration_buckets"] == [[0.1, 1.0], [1.0, 1.0], ["+Inf", 1.0]]
    assert snapshot["upstream_in_flight"] == 3
    assert snapshot["upstream_keys"] == [
        {"key": "…aaaa", "state": "healthy", "resting_until": None},
        {"key": "…bbbb", "state": "resting", "resting_until": NOW + 30},
        {"key": "…cccc", "state": "healthy", "resting_until": None},  # its rest is over
        {"key": "…dddd", "state": "refused", "resting_until": None},
    ]
    json.dumps(snapshot, allow_nan=False)  # plain JSON: no infinities


WORKER = textwrap.dedent(
    """
    import sys, time
    from proxy.upstream.keypool import KeyPool, UpstreamKey
    from proxy import metrics
    pool = KeyPool([UpstreamKey("sk-ant-worker-key-0001"), UpstreamKey("sk-ant-worker-key-0002")])
    pool.rest(pool.keys[0], 600)
    metrics.UPSTREAM_IN_FLIGHT.set(4)
    print("ready", flush=True)
    sys.stdin.read()  # alive (so its samples count) until the test closes stdin
    """
)
READER = (
    "import json; from proxy import metrics; from proxy.console import health; "
    "print(json.dumps(health.snapshot(metrics.registry())))"
)


def test_with_several_workers_a_key_rested_by_one_shows_in_anothers_snapshot(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as worker:
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"
        other = subprocess.run(
            [sys.executable, "-c", READER], cwd=root, env=env, capture_output=True, text=True, check=True
        )
        snapshot = json.loads(other.stdout)
        worker.stdin.close()
    states = {key["key"]: key["state"] for key in snapshot["upstream_keys"]}
    assert states == {"…0001": "resting", "…0002": "healthy"}
    assert snapshot["upstream_in_flight"] == 4


@pytest.mark.anyio
async def test_each_worker_publishes_its_upstream_calls_in_flight_only_with_several_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert health.publish_upstream_in_flight(lambda: 7) is None  # one worker: read directly, nothing runs
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")  # only the switch is read here
    task = health.publish_upstream_in_flight(lambda: 7, every=0.01)
    assert task is not None
    try:
        await eventually_async(lambda: metrics.UPSTREAM_IN_FLIGHT._value.get() == 7)
    finally:
        task.cancel()
        metrics.UPSTREAM_IN_FLIGHT.set(0)
