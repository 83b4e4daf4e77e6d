"""``python -m bench``: start the fake upstream, measure it, claude-proxy and LiteLLM in turn, report.

One target is measured at a time and each gateway runs only while it is measured, so nothing else
competes for the two cores. Everything started is stopped at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import litellm_peer
from bench.procs import Services, StartError, raise_fd_limit, terminate_on_sigterm
from bench.report import RESULTS, compute_ratios, compute_targets, render
from bench.scenarios import RESPONSES, Bench, Plan, Row, run_scenario
from bench.targets import (
    Target,
    default_transport,
    direct_target,
    start_claude_proxy,
    start_fake_upstream,
    start_reference,
)
from bench.wrk import ensure_wrk, wrk_version

# Each Responses scenario runs right after the chat scenario it repeats, so their ratio compares
# the two paths on (nearly) the same machine.
ALL = ("c1", "c32", "resp-c32", "resp-c32-store", "s32", "resp-s32", "ttfb", "open1000")
DIRECT_SCENARIOS = tuple(s for s in ALL if s not in RESPONSES)  # the fake upstream speaks Messages only
LITELLM_SCENARIOS = tuple(s for s in ALL if s != "open1000")  # open1000 through LiteLLM would not fit the budget
TRANSPORT_SCENARIOS = ("c32", "s32")
REFERENCE_SCENARIOS = ("c1", "c32")
TRANSPORTS = ("aiohttp", "httpx", "httpx2")  # httpx2 only when installed (the [httpx2] extra)
PROFILE_FILE = "claude-proxy-profile-c32.collapsed"


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run of the harness (numbers not comparable)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM column")
    parser.add_argument("--no-transports", action="store_true", help="skip the upstream transport comparison")
    parser.add_argument(
        "--profile", action="store_true", help="also profile claude-proxy under c32 with py-spy (+15 s)"
    )
    parser.add_argument(
        "--reference", action="store_true", help="also measure a bare Starlette+aiohttp forwarder on c1/c32 (+25 s)"
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="only compare this tree's claude-proxy with the one at git commit REV, interleaved (c1, c32, s32)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --against: how many interleaved rounds")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where latest.json and dated copies go")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs (printed path)")
    return parser.parse_args(argv)


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


def measure(bench: Bench, clock: Clock, target: Target, scenarios: tuple[str, ...]) -> dict[str, Row]:
    problem = target.verify()
    if problem:
        clock.log(f"  {target.name}: answers are wrong, not measuring it: {problem}")
        return {s: Row(target.name, problem=f"verification failed: {problem}") for s in scenarios}
    rows = {}
    for scenario in scenarios:
        rows[scenario] = row = run_scenario(bench, target, scenario)
        describe(clock, scenario, row)
    return rows


def run(args: argparse.Namespace, clock: Clock, workdir: Path) -> dict[str, Any]:
    plan = Plan.quick() if args.quick else Plan()
    wrk = ensure_wrk()
    transport = default_transport()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "tools": {"wrk": wrk_version(wrk)},
        "settings": {"plan": plan.__dict__, "claude_proxy_transport": transport},
        "scenarios": {s: {} for s in ALL},
        "transports": {},
        "notes": [],
        "profile": None,
    }

    install = None
    if not args.no_litellm:
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
            results["scenarios"][scenario][row.target] = row.as_dict()

    with Services(workdir) as services:
        clock.log("fake upstream")
        upstream = start_fake_upstream(services, workdir)
        bench = Bench(wrk, workdir, upstream, plan)
        record(measure(bench, clock, direct_target(upstream), DIRECT_SCENARIOS))

        clock.log(f"claude-proxy (transport {transport})")
        try:
            gateway, config = start_claude_proxy(services, workdir, upstream, transport=None, max_in_flight=1024)
        except StartError as exc:
            clock.log(f"  claude-proxy did not start: {exc}")
            results["notes"].append(f"claude-proxy did not start: {str(exc).splitlines()[0]}")
        else:
            results["settings"]["claude_proxy_config"] = config
            rows = measure(bench, clock, gateway, ALL)
            record(rows)
            results["transports"][transport] = {s: rows[s].as_dict() for s in TRANSPORT_SCENARIOS}
            if args.profile:
                from bench.profile import profile_c32

                clock.log("  profiling claude-proxy under c32 (py-spy)")
                results["profile"] = profile_c32(bench, gateway, Path(tempfile.gettempdir()) / PROFILE_FILE)
                if results["profile"].get("error"):
                    clock.log(f"  profile failed: {results['profile']['error']}")
            services.stop(gateway.service)

        if not args.no_transports:
            for other in (t for t in TRANSPORTS if t != transport):
                clock.log(f"claude-proxy (transport {other})")
                try:
                    gateway, _ = start_claude_proxy(services, workdir, upstream, transport=other, max_in_flight=1024)
                except StartError as exc:
                    clock.log(f"  did not start: {exc}")
                    continue
                rows = measure(bench, clock, gateway, TRANSPORT_SCENARIOS)
                results["transports"][other] = {s: row.as_dict() for s, row in rows.items()}
                services.stop(gateway.service)

        if args.reference:
            clock.log("reference forwarder (bench/reference.py)")
            try:
                reference = start_reference(services, workdir, upstream)
            except StartError as exc:
                clock.log(f"  did not start: {exc}")
            else:
                record(measure(bench, clock, reference, REFERENCE_SCENARIOS))
                services.stop(reference.service)

        if install is not None and install.ok:
            clock.log(f"LiteLLM {litellm_peer.VERSION}")
            try:
                peer, config = litellm_peer.start(services, workdir, upstream.port)
            except StartError as exc:
                clock.log(f"  LiteLLM did not start, carrying on without it: {exc}")
                results["notes"].append(f"LiteLLM did not start: {str(exc).splitlines()[0]}")
            else:
                results["settings"]["litellm_config"] = config
                record(measure(bench, clock, peer, LITELLM_SCENARIOS))
                services.stop(peer.service)

    results["measuring_s"] = round(time.monotonic() - measuring_started, 1)
    results["elapsed_s"] = round(time.monotonic() - clock.started, 1)
    results["ratios"] = compute_ratios(results)
    results["targets"] = compute_targets(results)
    return results


def run_against(args: argparse.Namespace, clock: Clock, workdir: Path) -> int:
    """The A/B mode: no other targets, only this tree and REV, alternately; results to the temp dir."""
    from bench import against

    plan = Plan.quick() if args.quick else Plan()
    with Services(workdir) as services:
        clock.log("fake upstream")
        upstream = start_fake_upstream(services, workdir)
        bench = Bench(ensure_wrk(), workdir, upstream, plan)
        clock.log(f"this tree against {args.against}, {args.rounds} rounds")
        result = against.compare(bench, services, args.against, args.rounds, clock.log)
    result["machine"] = machine()
    path = Path(tempfile.gettempdir()) / "claude-proxy-bench-against.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(against.render(result), end="")
    print(f"\nresults: {path}")
    return 0


def save(results: dict[str, Any], directory: Path) -> list[Path]:
    """``latest.json`` plus a dated copy; a --quick run goes to the temp dir only."""
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    if results["quick"]:
        paths = [Path(tempfile.gettempdir()) / "claude-proxy-bench-quick.json"]
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
    raise_fd_limit()
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
