"""The scenarios: what each measures and how, against any target.

* ``c1``  — wrk, 1 connection, non-streaming: the latency a gateway adds to one request.
* ``c32`` — wrk, 32 connections, non-streaming: throughput and its tail (p99 / p50).
* ``s32`` — wrk, 32 connections, streaming (latency = the whole stream).
* ``ttfb`` — asyncio client, 1 connection, streaming with a 1 ms gap between upstream events:
  time from sending the request to the first body byte.
* ``open1000`` — asyncio client, 1000 streams at once, each on its own connection, held open
  ~10 s by the upstream's per-event delay: all must complete; the gateway's RSS is sampled.
* ``resp-c32``, ``resp-s32`` — c32 and s32 through the gateway's ``POST /v1/responses`` with the same
  conversation and ``store: false`` (the translation path alone); ``resp-c32-store`` is resp-c32 with
  the API's default ``store: true``, so the gateway also keeps every response.

Each run first checks that the target answers correctly, warms up, then samples the target's
memory while it measures; every streamed answer of ttfb and open1000 is checked in full.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.client import CLIENT_ERRORS, build_request, concurrent_streams, sequential
from bench.procs import ForeignCpu, RssSampler, Service
from bench.targets import Target, responses_variant, set_event_delay
from bench.wrk import WrkError, WrkResult, run_wrk

MB = 1024 * 1024
UPSTREAM_EVENTS_AFTER_FIRST = 24  # the fake upstream's stream: 25 events, the first sent at once

_T = TypeVar("_T")

SCENARIOS: dict[str, str] = {
    "c1": "1 connection, non-streaming: added latency",
    "c32": "32 connections, non-streaming: throughput and tail",
    "s32": "32 connections, streaming (latency = whole stream)",
    "ttfb": "time to first streamed byte, 1 connection, upstream events 1 ms apart",
    "open1000": "1000 concurrent slow streams (~10 s each): completion and memory",
    "resp-c32": "as c32, through POST /v1/responses with store: false",
    "resp-s32": "as s32, through POST /v1/responses with store: false",
    "resp-c32-store": "as c32, through POST /v1/responses with store left to its default (true)",
}


@dataclass(frozen=True)
class ResponsesScenario:
    """A chat scenario run through the Responses API instead: the same load, another path."""

    base: str  # the chat scenario whose load it repeats
    store: bool


RESPONSES: dict[str, ResponsesScenario] = {
    "resp-c32": ResponsesScenario("c32", store=False),
    "resp-s32": ResponsesScenario("s32", store=False),
    "resp-c32-store": ResponsesScenario("c32", store=True),
}


@dataclass(frozen=True)
class Plan:
    """Durations and sizes; the defaults fit the whole run in under five minutes on two cores."""

    warmup_s: float = 1.0
    c1_s: float = 8.0
    c32_s: float = 10.0
    s32_s: float = 10.0
    ttfb_s: float = 6.0
    ttfb_event_delay_s: float = 0.001
    open_streams: int = 1000
    open_hold_s: float = 10.0
    open_ramp_s: float = 1.0

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run of the harness itself; its numbers are not comparable."""
        return cls(warmup_s=1, c1_s=2, c32_s=2, s32_s=2, ttfb_s=1, open_streams=200, open_hold_s=3, open_ramp_s=0.5)


@dataclass
class Row:
    """One target in one scenario. Latencies in ms; for ttfb the percentiles are of the first
    byte, for open1000 of whole streams; ``rps`` is requests (or streams) completed per second."""

    target: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None
    requests: int = 0
    errors: int = 0
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}


@dataclass
class Bench:
    wrk: str
    workdir: Path
    upstream: Service
    plan: Plan


def run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def throughput(bench: Bench, target: Target, *, stream: bool, connections: int, seconds: float) -> Row:
    body = target.stream_body if stream else target.body

    def wrk(duration: float) -> WrkResult:
        return run_wrk(
            bench.wrk,
            bench.workdir,
            port=target.port,
            path=target.path,
            body=body,
            headers=target.headers,
            connections=connections,
            seconds=duration,
        )

    try:
        wrk(bench.plan.warmup_s)
        cpu_before = target.service.cpu_seconds()
        with RssSampler(target.service) as rss, ForeignCpu([bench.upstream, target.service]) as foreign:
            result = wrk(seconds)
        cpu = target.service.cpu_seconds() - cpu_before
    except (WrkError, OSError) as exc:
        return Row(target.name, problem=str(exc))
    if result.requests == 0:
        return Row(target.name, problem=f"no request completed in {seconds:g} s", errors=result.errors)
    row = Row(
        target.name,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        rss_mb=rss.peak / MB,
        requests=result.requests,
        errors=result.errors + result.non_2xx,
        extra={
            "p90_ms": result.p90_ms,
            "max_ms": result.max_ms,
            "non_2xx": result.non_2xx,
            "cpu_ms_per_request": 1000 * cpu / result.requests,
            "cpu_share": cpu / result.seconds,  # of one core
            "foreign_cpu_pct": 100 * foreign.share,
        },
    )
    return _after(row, target)


def _after(row: Row, target: Target) -> Row:
    """A run only counts if the target still answers correctly afterwards."""
    if not target.service.alive():
        row.problem = f"{target.service.name} died:\n{target.service.log_tail(5)}"
        return row
    problem = target.verify()
    if problem:
        row.problem = f"wrong answers after the run: {problem}"
    elif row.errors:
        row.problem = f"{row.errors} errors / non-2xx of {row.requests + row.errors}"
    return row


def ttfb(bench: Bench, target: Target) -> Row:
    plan = bench.plan
    raw = build_request(target.port, target.path, target.stream_body, target.headers)
    set_event_delay(bench.upstream, plan.ttfb_event_delay_s)
    try:
        run_async(sequential(target.port, raw, plan.warmup_s))
        with RssSampler(target.service) as rss, ForeignCpu([bench.upstream, target.service]) as foreign:
            started = time.monotonic()
            replies = run_async(sequential(target.port, raw, plan.ttfb_s))
            elapsed = time.monotonic() - started
    except CLIENT_ERRORS as exc:
        return Row(target.name, problem=f"{type(exc).__name__}: {exc}")
    finally:
        set_event_delay(bench.upstream, 0)
    good = [r for r in replies if target.check(True, r.status, r.body) is None]
    if not good:
        return Row(target.name, problem="no correct stream", errors=len(replies))
    first = [r.ttfb * 1000 for r in good]
    whole = [r.total * 1000 for r in good]
    row = Row(
        target.name,
        rps=len(good) / elapsed,
        p50_ms=statistics.median(first),
        p99_ms=_pct(first, 99),
        rss_mb=rss.peak / MB,
        requests=len(good),
        errors=len(replies) - len(good),
        extra={
            "stream_p50_ms": statistics.median(whole),
            "min_ms": min(first),
            "foreign_cpu_pct": 100 * foreign.share,
        },
    )
    return _after(row, target)


def open_streams(bench: Bench, target: Target) -> Row:
    plan = bench.plan
    raw = build_request(target.port, target.path, target.stream_body, target.headers)
    set_event_delay(bench.upstream, plan.open_hold_s / UPSTREAM_EVENTS_AFTER_FIRST)
    try:
        before = target.service.rss_bytes()
        with (
            RssSampler(target.service, interval=0.25) as rss,
            ForeignCpu([bench.upstream, target.service]) as foreign,
        ):
            started = time.monotonic()
            outcomes = run_async(
                concurrent_streams(
                    target.port, raw, plan.open_streams, plan.open_ramp_s, limit_s=plan.open_hold_s * 3 + 30
                )
            )
            elapsed = time.monotonic() - started
    finally:
        set_event_delay(bench.upstream, 0)
    reasons: Counter[str] = Counter()
    durations: list[float] = []
    firsts: list[float] = []
    for outcome in outcomes:
        if outcome.reply is None:
            reasons[outcome.error or "unknown"] += 1
            continue
        problem = target.check(True, outcome.reply.status, outcome.reply.body)
        if problem:
            reasons[problem[:120]] += 1
            continue
        durations.append(outcome.reply.total * 1000)
        firsts.append(outcome.reply.ttfb * 1000)
    row = Row(
        target.name,
        rps=len(durations) / elapsed if elapsed else None,
        p50_ms=statistics.median(durations) if durations else None,
        p99_ms=_pct(durations, 99) if durations else None,
        rss_mb=rss.peak / MB,
        requests=len(durations),
        errors=len(outcomes) - len(durations),
        extra={
            "streams": len(outcomes),
            "completed": len(durations),
            "ttfb_p50_ms": statistics.median(firsts) if firsts else None,
            "ttfb_p99_ms": _pct(firsts, 99) if firsts else None,
            "rss_before_mb": before / MB,
            "failures": dict(reasons.most_common(3)),
            "seconds": elapsed,
            "foreign_cpu_pct": 100 * foreign.share,
        },
    )
    if row.errors:
        row.problem = f"{row.errors} of {len(outcomes)} streams failed"
    if not target.service.alive():
        row.problem = f"{target.service.name} died:\n{target.service.log_tail(5)}"
    return row


def responses_scenario(bench: Bench, target: Target, name: str) -> Row:
    """``name``'s chat scenario against ``target``'s Responses path, once that path answers right
    (an older gateway or a peer without /v1/responses gets a row saying why, not a number)."""
    spec = RESPONSES[name]
    variant = responses_variant(target, store=spec.store)
    problem = variant.verify()
    if problem:
        return Row(target.name, problem=f"verification failed: {problem}")
    return run_scenario(bench, variant, spec.base)


def run_scenario(bench: Bench, target: Target, name: str) -> Row:
    plan = bench.plan
    if name in RESPONSES:
        return responses_scenario(bench, target, name)
    if name == "c1":
        return throughput(bench, target, stream=False, connections=1, seconds=plan.c1_s)
    if name == "c32":
        return throughput(bench, target, stream=False, connections=32, seconds=plan.c32_s)
    if name == "s32":
        return throughput(bench, target, stream=True, connections=32, seconds=plan.s32_s)
    if name == "ttfb":
        return ttfb(bench, target)
    if name == "open1000":
        return open_streams(bench, target)
    raise ValueError(f"unknown scenario {name!r}")
