"""``python -m bench``: start the fake upstream, measure it, claude-proxy and LiteLLM in turn, report.

One target is measured at a time and each gateway runs only while it is measured, so nothing else
competes for the two cores. Everything started is stopped at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import litellm_peer
from bench.procs import Services, StartError, raise_fd_limit, terminate_on_sigterm
from bench.report import RESULTS, compute_ratios, compute_spread, compute_targets, median_rows, render
from bench.scenarios import VARIANTS, Bench, Plan, Row, run_scenario
from bench.targets import (
    CLAUDE_PROXY,
    DIRECT,
    REFERENCE,
    Target,
    default_transport,
    direct_target,
    start_claude_proxy,
    start_fake_upstream,
    start_reference,
)
from bench.variants import Variant, sink_requests, start_variant
from bench.wrk import ensure_wrk, wrk_version

# The order scenarios run in: each Responses scenario right after the chat scenario it repeats, and
# each variant right after c32, so that every ratio compares two figures taken moments apart.
ALL = (
    "c1",
    "c32",
    "limits-sqlite",
    "limits-redis",
    "workers2",
    "tracing",
    "resp-c32",
    "resp-c32-store",
    "s32",
    "resp-s32",
    "ttfb",
    "open1000",
    "open10000",
)
OPT_IN = ("open10000",)  # ~1-2 min on two cores: only with --only/--also
DEFAULT = tuple(s for s in ALL if s not in OPT_IN)
# What feeds a ratio runs every round; the rest once, in the first round.
EVERY_ROUND = ("c1", "c32", "resp-c32", "s32", "resp-s32", *VARIANTS)
SCENARIOS_OF = {
    DIRECT: ("c1", "c32", "s32", "ttfb", "open1000"),  # the fake upstream speaks Messages only
    CLAUDE_PROXY: tuple(s for s in ALL if s not in VARIANTS),
    REFERENCE: ("c1", "c32", "resp-c32", "s32", "resp-s32"),
}
DIRECT_EVERY_ROUND = ("c1",)  # for the added latency; direct's other figures are a ceiling, once
LITELLM_SCENARIOS = tuple(s for s in ALL if s not in VARIANTS and not s.startswith("open"))
TRANSPORT_SCENARIOS = ("c32", "s32")
TRANSPORTS = ("aiohttp", "httpx", "httpx2")  # httpx2 only when installed (the [httpx2] extra)
MAX_IN_FLIGHT = 16384  # the shipped 512 would shed open1000/open10000's streams with a 503, by design
PROFILE_FILE = "claude-proxy-profile-{}.collapsed"


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run of the harness (numbers not comparable)")
    parser.add_argument(
        "--only", type=scenario_list, help=f"run only these scenarios, comma-separated (of: {','.join(ALL)})"
    )
    parser.add_argument(
        "--also", type=scenario_list, default=(), help=f"add opt-in scenarios to the default set ({','.join(OPT_IN)})"
    )
    parser.add_argument(
        "--many-streams", type=int, metavar="N", help="open10000's stream count (default 10000; 1000 with --quick)"
    )
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy (builds its venv once)")
    parser.add_argument("--no-litellm", action="store_true", help="(the default now) leave LiteLLM out")
    parser.add_argument("--transports", action="store_true", help="also compare claude-proxy's upstream transports")
    parser.add_argument("--no-transports", action="store_true", help="(the default now) leave the transports out")
    parser.add_argument(
        "--profile", action="store_true", help="also profile claude-proxy with py-spy under c32, resp-c32, s32, limits"
    )
    parser.add_argument("--reference", action="store_true", help="(always on now) the reference forwarder and relay")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="only compare this tree's claude-proxy with the one at git commit REV, interleaved (c1, c32, s32)",
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds of the ratio scenarios (default 3; 2 with --quick)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where latest.json and dated copies go")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs (printed path)")
    return parser.parse_args(argv)


def scenario_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    return names


def selected(args: argparse.Namespace) -> tuple[str, ...]:
    chosen = set(args.only) if args.only else set(DEFAULT) | set(args.also)
    chosen |= {VARIANTS[s] for s in chosen if s in VARIANTS}  # a variant's figure is over the plain c32
    return tuple(s for s in ALL if s in chosen)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def describe(clock: Clock, scenario: str, row: Row) -> None:
    if row.problem and row.rps is None:
        clock.log(f"  {row.target:<13} {scenario:<14} FAILED: {row.problem.splitlines()[0][:150]}")
        return
    rps = f"{row.rps:,.0f}/s" if row.rps is not None else "—"
    p50 = f"{row.p50_ms:.3f}" if row.p50_ms is not None else "—"
    p99 = f"{row.p99_ms:.3f}" if row.p99_ms is not None else "—"
    rss = f"{row.rss_mb:.0f} MB" if row.rss_mb is not None else "—"
    tail = f"  ({row.problem.splitlines()[0][:100]})" if row.problem else ""
    clock.log(f"  {row.target:<13} {scenario:<14} {rps:>10}  p50 {p50} ms  p99 {p99} ms  RSS {rss}{tail}")


def verified(clock: Clock, target: Target) -> str | None:
    problem = target.verify()
    if problem:
        clock.log(f"  {target.name}: answers are wrong, not measuring it: {problem}")
        return f"verification failed: {problem}"
    return None


def measure(bench: Bench, clock: Clock, target: Target, scenarios: tuple[str, ...]) -> dict[str, Row]:
    problem = verified(clock, target)
    if problem:
        return {s: Row(target.name, problem=problem) for s in scenarios}
    rows = {}
    for scenario in scenarios:
        rows[scenario] = row = run_scenario(bench, target, scenario)
        describe(clock, scenario, row)
    return rows


@dataclass
class Lineup:
    """The targets measured in rounds, started once and kept up (idle between their turns)."""

    targets: dict[str, Target]  # direct, claude-proxy, reference
    variants: dict[str, Variant]
    problems: dict[str, str]  # a target that did not start or answers wrongly: why

    def turns(self, scenario: str, first: bool, number: int) -> list[tuple[str, Target | None, str | None]]:
        """(target name, target, why not) for each target that runs ``scenario`` in this round."""
        if scenario in VARIANTS:
            variant = self.variants[scenario]
            return [(CLAUDE_PROXY, variant.target, variant.problem)]
        turns = []
        for name in (DIRECT, CLAUDE_PROXY, REFERENCE):
            if scenario not in SCENARIOS_OF[name]:
                continue
            if not first and (scenario not in EVERY_ROUND or (name == DIRECT and scenario not in DIRECT_EVERY_ROUND)):
                continue
            turns.append((name, self.targets.get(name), self.problems.get(name)))
        if number % 2:  # alternate who goes first, so neither always meets the warmer machine
            turns.reverse()
        return turns


def start_lineup(
    services: Services, bench: Bench, clock: Clock, scenarios: tuple[str, ...], results: dict[str, Any]
) -> Lineup:
    lineup = Lineup({}, {}, {})
    needs = {name for name, own in SCENARIOS_OF.items() if set(own) & set(scenarios)}
    starters = {
        DIRECT: lambda: direct_target(bench.upstream),
        CLAUDE_PROXY: lambda: _main_gateway(services, bench, results),
        REFERENCE: lambda: start_reference(services, bench.workdir, bench.upstream),
    }
    for name in (DIRECT, CLAUDE_PROXY, REFERENCE):
        if name not in needs:
            continue
        clock.log(f"starting {name}")
        try:
            target = starters[name]()
        except StartError as exc:
            clock.log(f"  {name} did not start: {exc}")
            lineup.problems[name] = f"did not start: {str(exc).splitlines()[0]}"
            results["notes"].append(f"{name} did not start: {str(exc).splitlines()[0]}")
            continue
        problem = verified(clock, target)
        if problem:
            lineup.problems[name] = problem
        else:
            lineup.targets[name] = target
    for name in (s for s in scenarios if s in VARIANTS):
        clock.log(f"starting claude-proxy for {name}")
        variant = lineup.variants[name] = start_variant(services, bench.workdir, bench.upstream, name, MAX_IN_FLIGHT)
        if variant.target is not None:
            variant.problem = verified(clock, variant.target)
            if variant.problem:
                variant.target = None
        if variant.problem:
            clock.log(f"  {name}: {variant.problem}")
    return lineup


def _main_gateway(services: Services, bench: Bench, results: dict[str, Any]) -> Target:
    gateway, config = start_claude_proxy(
        services, bench.workdir, bench.upstream, transport=None, max_in_flight=MAX_IN_FLIGHT
    )
    results["settings"]["claude_proxy_config"] = config
    return gateway


def run_rounds(
    bench: Bench, clock: Clock, lineup: Lineup, scenarios: tuple[str, ...], rounds: int
) -> list[dict[str, dict[str, dict[str, Any]]]]:
    """Every selected scenario in round 1; the ratio scenarios again in each later round."""
    measured: list[dict[str, dict[str, dict[str, Any]]]] = []
    for number in range(rounds):
        clock.log(f"round {number + 1} of {rounds}")
        this: dict[str, dict[str, dict[str, Any]]] = {}
        for scenario in scenarios:
            for name, target, problem in lineup.turns(scenario, number == 0, number):
                row = (
                    Row(name, problem=problem or "not started")
                    if target is None
                    else run_scenario(bench, target, scenario)
                )
                row.target = name
                if scenario == "tracing" and target is not None:
                    info = lineup.variants[scenario].info or {}
                    row.extra["otlp_posts_received"] = sink_requests(info["sink"])
                this.setdefault(scenario, {})[name] = row.as_dict()
                describe(clock, scenario, row)
        measured.append(this)
    return measured


def run(args: argparse.Namespace, clock: Clock, workdir: Path) -> dict[str, Any]:
    plan = Plan.quick() if args.quick else Plan.rounds()
    if args.many_streams:
        plan = dataclasses.replace(plan, many_streams=args.many_streams)
    rounds = args.rounds or (2 if args.quick else 3)
    scenarios = selected(args)
    wrk = ensure_wrk()
    transport = default_transport()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "tools": {"wrk": wrk_version(wrk)},
        "settings": {
            "plan": plan.__dict__,
            "rounds": rounds,
            "selected": list(scenarios),
            "partial": bool(args.only) or rounds < 3,
            "fd_limit": args.fd_limit,
            "claude_proxy_transport": transport,
        },
        "scenarios": {s: {} for s in scenarios},
        "rounds": [],
        "transports": {},
        "notes": [],
        "profile": None,
    }

    install = None
    if args.litellm and not args.no_litellm:
        install = litellm_peer.ensure_installed(workdir)
        results["tools"]["litellm"] = {"version": litellm_peer.VERSION, "install": install.method, "note": install.note}
        if not install.ok:
            clock.log(f"LiteLLM is unavailable, carrying on without it: {install.note}")
            results["notes"].append(f"LiteLLM column missing: {install.note}")
        elif install.method == "fallback":
            results["notes"].append(
                f"LiteLLM {litellm_peer.VERSION} was installed from bench/litellm-fallback.txt: PyPI does not serve "
                f"three exact pins of `{litellm_peer.PINNED}` (see bench/litellm_peer.py)."
            )
    measuring_started = time.monotonic()

    def record(rows: dict[str, Row]) -> None:
        for scenario, row in rows.items():
            results["scenarios"].setdefault(scenario, {})[row.target] = row.as_dict()

    with Services(workdir) as services:
        clock.log("fake upstream")
        upstream = start_fake_upstream(services, workdir)
        bench = Bench(wrk, workdir, upstream, plan, services.running)
        lineup = start_lineup(services, bench, clock, scenarios, results)
        results["rounds"] = run_rounds(bench, clock, lineup, scenarios, rounds)
        results["scenarios"].update(median_rows(results["rounds"]))

        gateway = lineup.targets.get(CLAUDE_PROXY)
        if gateway is not None:
            results["transports"][transport] = {
                s: results["scenarios"][s][CLAUDE_PROXY] for s in TRANSPORT_SCENARIOS if s in scenarios
            }
        if args.profile and gateway is not None:
            from bench.profile import profile_all

            clock.log("profiling claude-proxy (py-spy)")
            limited = lineup.variants.get("limits-sqlite")
            results["profiles"] = profile_all(
                bench,
                gateway,
                limited.target if limited else None,
                Path(tempfile.gettempdir()),
                PROFILE_FILE,
                clock.log,
            )
            results["profile"] = results["profiles"].get("c32")

        services.stop_all_but(upstream)  # the transports and LiteLLM are measured alone, as before

        if args.transports and not args.no_transports:
            for other in (t for t in TRANSPORTS if t != transport):
                clock.log(f"claude-proxy (transport {other})")
                try:
                    other_gateway, _ = start_claude_proxy(
                        services, workdir, upstream, transport=other, max_in_flight=MAX_IN_FLIGHT
                    )
                except StartError as exc:
                    clock.log(f"  did not start: {exc}")
                    continue
                rows = measure(bench, clock, other_gateway, TRANSPORT_SCENARIOS)
                results["transports"][other] = {s: row.as_dict() for s, row in rows.items()}
                services.stop(other_gateway.service)

        if install is not None and install.ok:
            clock.log(f"LiteLLM {litellm_peer.VERSION}")
            try:
                peer, config = litellm_peer.start(services, workdir, upstream.port)
            except StartError as exc:
                clock.log(f"  LiteLLM did not start, carrying on without it: {exc}")
                results["notes"].append(f"LiteLLM did not start: {str(exc).splitlines()[0]}")
            else:
                results["settings"]["litellm_config"] = config
                record(measure(bench, clock, peer, tuple(s for s in LITELLM_SCENARIOS if s in scenarios)))
                services.stop(peer.service)

    results["measuring_s"] = round(time.monotonic() - measuring_started, 1)
    results["elapsed_s"] = round(time.monotonic() - clock.started, 1)
    results["ratios"] = compute_ratios(results)
    results["spread"] = compute_spread(results)
    results["targets"] = compute_targets(results)
    return results


def run_against(args: argparse.Namespace, clock: Clock, workdir: Path) -> int:
    """The A/B mode: no other targets, only this tree and REV, alternately; results to the temp dir."""
    from bench import against

    plan = Plan.quick() if args.quick else Plan()
    rounds = args.rounds or 3
    with Services(workdir) as services:
        clock.log("fake upstream")
        upstream = start_fake_upstream(services, workdir)
        bench = Bench(ensure_wrk(), workdir, upstream, plan)
        clock.log(f"this tree against {args.against}, {rounds} rounds")
        result = against.compare(bench, services, args.against, rounds, clock.log)
    result["machine"] = machine()
    path = Path(tempfile.gettempdir()) / "claude-proxy-bench-against.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(against.render(result), end="")
    print(f"\nresults: {path}")
    return 0


def save(results: dict[str, Any], directory: Path) -> list[Path]:
    """``latest.json`` plus a dated copy; a --quick run, or one of chosen scenarios (--only, or
    --rounds below 3), goes to the temp dir only, so ``latest.json`` is always a whole run."""
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    partial = results["settings"].get("partial")
    if results["quick"] or partial:
        name = "quick" if results["quick"] else "partial"
        paths = [Path(tempfile.gettempdir()) / f"claude-proxy-bench-{name}.json"]
    else:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.fromisoformat(results["started_utc"]).strftime("%Y-%m-%dT%H%M%SZ")
        paths = [directory / f"{stamp}.json", directory / "latest.json"]
    for path in paths:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock()
    before, args.fd_limit = raise_fd_limit()
    if args.fd_limit > before:
        clock.log(
            f"raised the open-file limit from {before:,} to {args.fd_limit:,} (the hard limit); services inherit it"
        )
    else:
        clock.log(f"open-file limit {args.fd_limit:,} (already the hard limit)")
    workdir = Path(tempfile.mkdtemp(prefix="claude-proxy-bench-"))
    try:
        with terminate_on_sigterm():
            if args.against:
                return run_against(args, clock, workdir)
            results = run(args, clock, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted: every service the bench started has been stopped", file=sys.stderr)
        return 130
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    saved = save(results, args.results)
    print()
    print(render(results), end="")
    print("\nresults: " + " and ".join(str(p) for p in saved))
    if args.keep_logs:
        print(f"logs: {workdir}")
    return 0
