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
* ``open10000`` — 10,000 slow streams at once (upstream events 0.5 s apart), driven by a separate
  load-generator process (``bench/loadgen.py``); every stream checked in full; RSS per open stream.
* ``limits-sqlite``, ``limits-redis``, ``workers2``, ``tracing`` — c32's load on a differently
  configured claude-proxy (see ``VARIANTS``), reported over the plain gateway's c32 of the same round.

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
from bench.loadgen import run_loadgen
from bench.procs import ForeignCpu, RssSampler, Service, fd_limit, listen_overflows
from bench.targets import Target, responses_variant, set_event_delay
from bench.wrk import WrkError, WrkResult, run_wrk

MB = 1024 * 1024
UPSTREAM_EVENTS_AFTER_FIRST = 24  # the fake upstream's stream: 25 events, the first sent at once
UPSTREAM_EVENTS = UPSTREAM_EVENTS_AFTER_FIRST + 1  # what a relay relays per stream
FDS_PER_OPEN_STREAM = 2  # in the gateway: the client's socket and the upstream's
FD_HEADROOM = 256  # the gateway's own files: listeners, log, store, pools, with a margin

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
    "open10000": "10,000 concurrent slow streams (events 0.5 s apart, separate load generator): completion, RSS",
    "limits-sqlite": "as c32 with a key that has rpm, tpm and daily token limits, SQLite store",
    "limits-redis": "as c32 with the same limited key, Redis store",
    "workers2": "as c32 on claude-proxy --workers 2",
    "tracing": "as c32 with PROXY_TRACING=1 exporting to a discard OTLP/HTTP sink",
}

# Scenarios that run another scenario's load on a differently configured gateway (started by run.py):
# their figure is that gateway's over the plain one's, same round.
VARIANTS: dict[str, str] = {
    "limits-sqlite": "c32",
    "limits-redis": "c32",
    "workers2": "c32",
    "tracing": "c32",
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
    many_streams: int = 10_000  # open10000 (lowered to what the file-descriptor limit holds, and said)
    many_event_delay_s: float = 0.5
    # Ping events (the real API sends them) stretch each stream to (24 + pings) x 0.5 s = 25 s, so that
    # streams started over the 15 s ramp are all open at once when the gateway keeps up. Longer
    # streams do not help a gateway that does not: more events per stream slow its ramp as much.
    many_pings: int = 26
    many_ramp_s: float = 15.0

    @classmethod
    def quick(cls) -> Plan:
        """A smoke run of the harness itself; its numbers are not comparable."""
        return cls(
            warmup_s=1,
            c1_s=2,
            c32_s=2,
            s32_s=2,
            ttfb_s=1,
            open_streams=200,
            open_hold_s=3,
            open_ramp_s=0.5,
            many_streams=1000,
            many_event_delay_s=0.1,
            many_pings=0,
            many_ramp_s=2.0,
        )

    @classmethod
    def rounds(cls) -> Plan:
        """Shorter runs for the scenarios repeated every round (the spread, not one long run, is
        what the ratios are read from)."""
        return cls(c1_s=5.0, c32_s=6.0, s32_s=6.0)


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
    # Every service the bench runs (idle gateways, redis-server, the OTLP sink): their CPU is the
    # bench's, not the neighbours'. run.py points it at its Services' list.
    services: list[Service] = field(default_factory=list)

    def own(self, target: Target) -> list[Service]:
        return [self.upstream, target.service, *self.services]


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
        with RssSampler(target.service) as rss, ForeignCpu(bench.own(target)) as foreign:
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
    if stream:  # the gateway's CPU per upstream event it relayed (translated or not)
        row.extra["cpu_us_per_event"] = 1e6 * cpu / (result.requests * UPSTREAM_EVENTS)
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
        with RssSampler(target.service) as rss, ForeignCpu(bench.own(target)) as foreign:
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
            ForeignCpu(bench.own(target)) as foreign,
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


def many_streams(bench: Bench, target: Target) -> Row:
    """open10000: the load generator (its own process) holds ``plan.many_streams`` slow streams
    open at once, checking each in full; the gateway's RSS is sampled meanwhile. Fewer streams
    when the file-descriptor limit cannot hold two sockets per stream in the gateway (said)."""
    plan = bench.plan
    wanted = plan.many_streams
    count = max(1, min(wanted, (fd_limit() - FD_HEADROOM) // FDS_PER_OPEN_STREAM))
    raw = build_request(target.port, target.path, target.stream_body, target.headers)
    stream_s = plan.many_event_delay_s * (UPSTREAM_EVENTS_AFTER_FIRST + plan.many_pings)
    set_event_delay(bench.upstream, plan.many_event_delay_s, plan.many_pings)
    overflows = listen_overflows()
    try:
        before = target.service.rss_bytes()
        with RssSampler(target.service, interval=0.5) as rss:
            summary = run_loadgen(
                target.port,
                raw,
                target.stream_dialect or target.dialect,
                count,
                plan.many_ramp_s,
                stream_s * 4 + 60,
                bench.workdir,
            )
    finally:
        set_event_delay(bench.upstream, 0)
    if "error" in summary:
        return Row(target.name, problem=summary["error"])
    durations = [1000 * s for s in summary["durations_s"]]
    firsts = [1000 * s for s in summary["ttfb_s"]]
    completed = summary["completed"]
    grown = max(0, rss.peak - before)
    row = Row(
        target.name,
        rps=completed / summary["seconds"] if summary["seconds"] else None,
        p50_ms=statistics.median(durations) if durations else None,
        p99_ms=_pct(durations, 99) if durations else None,
        rss_mb=rss.peak / MB,
        requests=completed,
        errors=summary["streams"] - completed,
        extra={
            "streams": summary["streams"],
            "streams_wanted": wanted,
            "fd_limit": fd_limit(),
            "completed": completed,
            "peak_open": summary["peak_open"],
            "ttfb_p50_ms": statistics.median(firsts) if firsts else None,
            "ttfb_p99_ms": _pct(firsts, 99) if firsts else None,
            "rss_before_mb": before / MB,
            # Over the most streams open at once (what the peak RSS held), not all that ran.
            "rss_kb_per_stream": grown / 1024 / max(1, summary["peak_open"]),
            "failures": summary["failures"],
            "seconds": summary["seconds"],
            "stream_planned_s": stream_s,
            "ramp_s": summary["ramp_s"],
            # Connections the kernel refused because a listen queue was full (machine-wide, so
            # the load generator's own and neighbours' count too): what a reset before any byte means.
            "listen_overflows": listen_overflows() - overflows,
        },
    )
    if count < wanted:  # a note, not a failure: what was measured is still right
        row.extra["note"] = (
            f"{count:,} streams, not {wanted:,}: the open-file limit {fd_limit():,} holds no more "
            f"({FDS_PER_OPEN_STREAM} per stream + {FD_HEADROOM}); raise the hard limit (ulimit -Hn) to run all"
        )
    problems = []
    if row.errors:
        problems.append(f"{row.errors} of {summary['streams']} streams failed")
    if not target.service.alive():
        problems.append(f"{target.service.name} died:\n{target.service.log_tail(5)}")
    row.problem = "; ".join(problems) or None
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
    if name == "open10000":
        return many_streams(bench, target)
    if name in VARIANTS:  # ``target`` is already the variant's gateway
        return run_scenario(bench, target, VARIANTS[name])
    raise ValueError(f"unknown scenario {name!r}")
