"""Ratios, the project's targets, and the Markdown tables printed and pasted into bench/README.md.

``python -m bench.report [results.json]`` renders a saved run again (default: results/latest.json).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import RESPONSES, SCENARIOS
from bench.targets import CLAUDE_PROXY, DIRECT, LITELLM, REFERENCE

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_ORDER = (DIRECT, CLAUDE_PROXY, LITELLM, REFERENCE)
LABELS = {REFERENCE: "reference forwarder"}
Rows = dict[str, dict[str, Any]]  # target name -> row
RESPONSES_OVER_CHAT_GOAL = 0.9  # issue 15: the Responses path's requests/s within 0.9x of chat's


def _row(results: dict[str, Any], scenario: str, target: str) -> dict[str, Any] | None:
    row = results.get("scenarios", {}).get(scenario, {}).get(target)
    return row if row and not row.get("problem") else None


def _value(results: dict[str, Any], scenario: str, target: str, key: str) -> float | None:
    row = _row(results, scenario, target)
    value = row.get(key) if row else None
    return float(value) if isinstance(value, int | float) else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    def rps(scenario: str, target: str) -> float | None:
        return _value(results, scenario, target, "rps")

    def p50(scenario: str, target: str) -> float | None:
        return _value(results, scenario, target, "p50_ms")

    throughput = ("c1", "c32", "s32")
    latency = ("c1", "c32", "s32", "ttfb")
    return {
        "claude_proxy_over_litellm_rps": {s: _div(rps(s, CLAUDE_PROXY), rps(s, LITELLM)) for s in throughput},
        "claude_proxy_over_direct_rps": {s: _div(rps(s, CLAUDE_PROXY), rps(s, DIRECT)) for s in throughput},
        "litellm_over_direct_rps": {s: _div(rps(s, LITELLM), rps(s, DIRECT)) for s in throughput},
        "claude_proxy_added_p50_ms": {s: _sub(p50(s, CLAUDE_PROXY), p50(s, DIRECT)) for s in latency},
        "litellm_added_p50_ms": {s: _sub(p50(s, LITELLM), p50(s, DIRECT)) for s in latency},
        "claude_proxy_over_reference_rps": {s: _div(rps(s, CLAUDE_PROXY), rps(s, REFERENCE)) for s in ("c1", "c32")},
        "reference_added_p50_ms": {s: _sub(p50(s, REFERENCE), p50(s, DIRECT)) for s in ("c1", "c32")},
        "c32_p99_over_p50": {
            t: _div(_value(results, "c32", t, "p99_ms"), _value(results, "c32", t, "p50_ms")) for t in TARGET_ORDER
        },
        **responses_ratios(results),
    }


def responses_ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each Responses scenario over LiteLLM's Responses path and over the same gateway's chat
    scenario it repeats, all from the same run; and what storing costs (stored ÷ unstored)."""

    def rps(scenario: str, target: str) -> float | None:
        return _value(results, scenario, target, "rps")

    def over_chat(target: str) -> dict[str, float | None]:
        return {name: _div(rps(name, target), rps(spec.base, target)) for name, spec in RESPONSES.items()}

    return {
        "responses_claude_proxy_over_litellm_rps": {n: _div(rps(n, CLAUDE_PROXY), rps(n, LITELLM)) for n in RESPONSES},
        "responses_over_chat_rps": over_chat(CLAUDE_PROXY),
        "litellm_responses_over_chat_rps": over_chat(LITELLM),
        "responses_stored_over_unstored_rps": {
            t: _div(rps("resp-c32-store", t), rps("resp-c32", t)) for t in (CLAUDE_PROXY, LITELLM)
        },
    }


@dataclass(frozen=True)
class Figure:
    """One figure of issue 18, computed from one round's measurements (so it has a spread)."""

    key: str
    label: str
    inputs: tuple[tuple[str, str], ...]  # (scenario, target) rows it reads: for "why not measured"
    compute: Callable[[dict[str, Any]], float | None]
    goal: float | None = None
    at_least: bool = True
    unit: str = "x"


def _rps_over(num: tuple[str, str], den: tuple[str, str]) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: _div(_value(r, *num, "rps"), _value(r, *den, "rps"))


def _added(target: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: _sub(_value(r, "c1", target, "p50_ms"), _value(r, "c1", DIRECT, "p50_ms"))


def _added_over_reference(r: dict[str, Any]) -> float | None:
    return _div(_added(CLAUDE_PROXY)(r), _added(REFERENCE)(r))


def _per_event(scenario: str, target: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: _value(r, scenario, target, "cpu_us_per_event")


CP, REF = CLAUDE_PROXY, REFERENCE
FIGURES = (
    Figure("c32_over_reference", "c32 rps ÷ reference forwarder", (("c32", CP), ("c32", REF)),
           _rps_over(("c32", CP), ("c32", REF)), 0.8),
    Figure("resp_c32_over_reference", "resp-c32 rps ÷ reference forwarder (its /v1/responses)",
           (("resp-c32", CP), ("resp-c32", REF)), _rps_over(("resp-c32", CP), ("resp-c32", REF)), 0.8),
    Figure("c1_added_over_reference", "c1 added p50 ÷ reference's added p50",
           (("c1", CP), ("c1", REF), ("c1", DIRECT)), _added_over_reference, 1.25, at_least=False),
    Figure("s32_over_relay", "s32 streams/s ÷ bare stream relay", (("s32", CP), ("s32", REF)),
           _rps_over(("s32", CP), ("s32", REF)), 0.75),
    Figure("resp_s32_over_relay", "resp-s32 streams/s ÷ bare stream relay", (("resp-s32", CP), ("resp-s32", REF)),
           _rps_over(("resp-s32", CP), ("resp-s32", REF)), 0.75),
    Figure("limits_sqlite_over_c32", "limits (SQLite) c32 ÷ no limits", (("limits-sqlite", CP), ("c32", CP)),
           _rps_over(("limits-sqlite", CP), ("c32", CP)), 0.9),
    Figure("limits_redis_over_c32", "limits (Redis) c32 ÷ no limits", (("limits-redis", CP), ("c32", CP)),
           _rps_over(("limits-redis", CP), ("c32", CP)), 0.9),
    Figure("workers2_over_workers1", "--workers 2 ÷ --workers 1, c32", (("workers2", CP), ("c32", CP)),
           _rps_over(("workers2", CP), ("c32", CP))),
    Figure("tracing_over_c32", "tracing on ÷ off, c32", (("tracing", CP), ("c32", CP)),
           _rps_over(("tracing", CP), ("c32", CP))),
    Figure("resp_c32_over_c32", "resp-c32 ÷ chat c32 (issue 15)", (("resp-c32", CP), ("c32", CP)),
           _rps_over(("resp-c32", CP), ("c32", CP)), RESPONSES_OVER_CHAT_GOAL),
    Figure("resp_s32_over_s32", "resp-s32 ÷ chat s32 (issue 15)", (("resp-s32", CP), ("s32", CP)),
           _rps_over(("resp-s32", CP), ("s32", CP)), RESPONSES_OVER_CHAT_GOAL),
    Figure("cp_added_p50_c1_ms", "claude-proxy c1 added p50", (("c1", CP), ("c1", DIRECT)), _added(CP), unit=" ms"),
    Figure("ref_added_p50_c1_ms", "reference c1 added p50", (("c1", REF), ("c1", DIRECT)), _added(REF), unit=" ms"),
    Figure("cp_cpu_per_event_s32", "claude-proxy CPU per relayed event, s32", (("s32", CP),),
           _per_event("s32", CP), unit=" µs"),
    Figure("cp_cpu_per_event_resp_s32", "claude-proxy CPU per relayed event, resp-s32", (("resp-s32", CP),),
           _per_event("resp-s32", CP), unit=" µs"),
    Figure("relay_cpu_per_event_s32", "bare relay CPU per relayed event, s32", (("s32", REF),),
           _per_event("s32", REF), unit=" µs"),
)  # fmt: skip
OPEN_MANY_KB_GOAL = 20.0  # open10000: gateway RSS per open stream above idle


def median_rows(rounds: list[dict[str, Rows]]) -> dict[str, Rows]:
    """Per scenario and target, the round whose requests/s is the median of the good rounds (the
    last round's row when none is good): the row the tables show."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for measured in rounds:
        for scenario, rows in measured.items():
            for target, row in rows.items():
                found.setdefault(scenario, {}).setdefault(target, []).append(row)
    chosen: dict[str, Rows] = {}
    for scenario, targets in found.items():
        for target, candidates in targets.items():
            good = [r for r in candidates if not r.get("problem") and r.get("rps") is not None]
            good.sort(key=lambda r: float(r["rps"]))
            chosen.setdefault(scenario, {})[target] = good[(len(good) - 1) // 2] if good else candidates[-1]
    return chosen


def compute_spread(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each figure per round, with median, min and max (rounds without it left out), and why a
    figure was not measured at all."""
    rounds = results.get("rounds") or [results.get("scenarios", {})]
    spread: dict[str, dict[str, Any]] = {}
    for figure in FIGURES:
        values = [figure.compute({"scenarios": measured}) for measured in rounds]
        present = [v for v in values if v is not None]
        spread[figure.key] = {
            "per_round": [None if v is None else round(v, 4) for v in values],
            "median": round(statistics.median(present), 4) if present else None,
            "min": round(min(present), 4) if present else None,
            "max": round(max(present), 4) if present else None,
            "why_not": None if present else _why_not(results, figure),
        }
    return spread


def _why_not(results: dict[str, Any], figure: Figure) -> str:
    chosen = results.get("settings", {}).get("selected")
    for scenario, target in figure.inputs:
        if chosen is not None and scenario not in chosen:
            return f"{scenario} not selected"
        row = results.get("scenarios", {}).get(scenario, {}).get(target)
        if row is None:
            return f"{scenario} not measured for {target}"
        if row.get("problem"):
            return f"{scenario}: {row['problem'].splitlines()[0][:140]}"
    return "not measured"


def _check(
    name: str, target: str, measured: float | None, limit: float, *, at_least: bool, unit: str = ""
) -> dict[str, Any]:
    if measured is None:
        return {"name": name, "target": target, "measured": None, "met": None, "detail": "not measured"}
    met = measured >= limit if at_least else measured <= limit
    if at_least:
        share = measured / limit
        detail = f"{share:.2f} times the goal" if met else f"missed: {share:.2f} of the goal ({1 / share:.1f}x short)"
    else:
        gap = abs(limit - measured)
        detail = f"{gap:.3g}{unit} to spare" if met else f"missed by {gap:.3g}{unit}"
    return {"name": name, "target": target, "measured": round(measured, 4), "met": met, "detail": detail}


def compute_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's targets (and issue 15's Responses ÷ chat), judged on the median over the rounds."""
    spread = results.get("spread") or compute_spread(results)
    checks = []
    for figure in FIGURES:
        if figure.goal is None:
            continue
        figures = spread[figure.key]
        sign = "≥" if figure.at_least else "≤"
        check = _check(figure.label, f"{sign} {figure.goal:g}{figure.unit}", figures["median"], figure.goal,
                       at_least=figure.at_least, unit=figure.unit)  # fmt: skip
        if figures["median"] is not None:
            check["detail"] += f" (rounds {_range(figures)})"
        elif figures["why_not"]:
            check["detail"] = figures["why_not"]
        checks.append(check)
    for scenario in ("open10000", "open1000"):
        checks += _open_checks(results, scenario)
    return checks


def _range(figures: dict[str, Any]) -> str:
    return (
        f"{figures['min']:.3g} to {figures['max']:.3g}" if figures["min"] != figures["max"] else f"{figures['min']:.3g}"
    )


def _open_checks(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    opened = results.get("scenarios", {}).get(scenario, {}).get(CLAUDE_PROXY)
    if not opened:
        return []
    streams, completed = opened.get("streams", 0), opened.get("completed", 0)
    met = bool(streams) and completed == streams
    detail = f"{completed} of {streams}" + ("" if met else f"; failures: {opened.get('failures')}")
    if scenario == "open10000":  # "10,000 at once": every stream asked for, all open together
        wanted, peak = opened.get("streams_wanted", streams), opened.get("peak_open", 0)
        met = met and streams == wanted and peak == streams
        detail += f"; {peak:,} open at once"
        if peak < streams:
            detail += f" (the last started after {opened.get('ramp_s', 0):.0f} s: the gateway fell behind)"
    if opened.get("note"):
        detail += f"; {opened['note']}"
    checks = [{"name": f"{scenario} complete", "target": "all", "measured": completed, "met": met, "detail": detail}]
    if scenario == "open10000":
        per_stream = opened.get("rss_kb_per_stream")
        goal = f"≤ {OPEN_MANY_KB_GOAL:g} KB"
        checks.append(
            _check("open10000 RSS per open stream", goal, per_stream, OPEN_MANY_KB_GOAL, at_least=False, unit=" KB")
        )
    else:
        checks.append(_check("open1000 gateway RSS", "≤ 120 MB", opened.get("rss_mb"), 120, at_least=False, unit=" MB"))
    return checks


# --- rendering ------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "—"
    return format(value, spec)


def _ms(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _scenario_rows(rows: Rows, unit: str, cpu: bool) -> list[list[str]]:
    out = []
    for target in TARGET_ORDER:
        row = rows.get(target)
        if row is None:
            continue
        name = LABELS.get(target, target)
        blanks = ["—"] * (5 if cpu else 4)
        if row.get("problem") and row.get("rps") is None:
            out.append([name, *blanks, f"failed: {row['problem'].splitlines()[0][:90]}"])
            continue
        note = row.get("problem") or ""
        cells = [name, _fmt(row.get("rps")), _ms(row.get("p50_ms")), _ms(row.get("p99_ms"))]
        if cpu:
            cells.append(_ms(row.get("cpu_ms_per_request")))
        cells.append(_fmt(row.get("rss_mb"), ".0f"))
        measured = f"{row.get('requests', 0):,} {unit}" + _foreign(row)
        cells.append(note.splitlines()[0][:90] if note else measured)
        out.append(cells)
    return out


def _foreign(row: dict[str, Any]) -> str:
    share = row.get("foreign_cpu_pct")
    return f"; others {share:.0f}% CPU" if isinstance(share, int | float) and share >= 5 else ""


def _foreign_summary(results: dict[str, Any]) -> str:
    shares = [
        row["foreign_cpu_pct"]
        for rows in results.get("scenarios", {}).values()
        for row in rows.values()
        if isinstance(row.get("foreign_cpu_pct"), int | float)
    ]
    if not shares:
        return ""
    return (
        f"Processes the bench did not start used {sum(shares) / len(shares):.0f}% of the machine's CPU on average "
        f"while it measured (at most {max(shares):.0f}%); rows where they took 5% or more say so."
    )


def _x(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else f"{value:{spec}}x"


def render(results: dict[str, Any]) -> str:
    """Markdown for one run; ratios and verdicts are computed afresh from its measurements."""
    results = {**results, "ratios": compute_ratios(results)}
    results["spread"] = compute_spread(results)
    results["targets"] = compute_targets(results)
    machine = results.get("machine", {})
    lines = [
        f"Measured {results.get('date', '?')} on {machine.get('nproc', '?')} x {machine.get('cpu_model', '?')}, "
        f"Python {machine.get('python', '?')}; load generator {results.get('tools', {}).get('wrk', '?')} "
        f"(throughput) and the bench's asyncio client (ttfb, open1000); claude-proxy transport "
        f"`{results.get('settings', {}).get('claude_proxy_transport', '?')}`; run took "
        f"{results.get('elapsed_s', 0):.0f} s ({len(results.get('rounds') or [None])} rounds). "
        f"{_foreign_summary(results)}",
        "",
        *_figures_table(results),
        "",
    ]
    for scenario, description in SCENARIOS.items():
        rows = results.get("scenarios", {}).get(scenario)
        if not rows:
            continue
        lines.append(f"**{scenario}** — {description}")
        lines.append("")
        if scenario == "open1000":
            lines += _open_table(rows)
        elif scenario == "open10000":
            lines += _many_table(rows)
        elif scenario == "ttfb":
            header = ["target", "streams/s", "ttfb p50 ms", "ttfb p99 ms", "peak RSS MB", "samples"]
            lines += _table(header, _scenario_rows(rows, "streams", cpu=False))
        else:
            header = ["target", "rps", "p50 ms", "p99 ms", "CPU ms/req", "peak RSS MB", "measured"]
            lines += _table(header, _scenario_rows(rows, "streams" if _streams(scenario) else "requests", cpu=True))
        lines.append("")
    lines += _ratios_table(results)
    lines.append("")
    if any(results.get("scenarios", {}).get(name) for name in RESPONSES):
        lines += _responses_table(results)
        lines.append("")
    lines += _targets_table(results)
    if results.get("transports"):
        lines.append("")
        lines += _transport_table(results)
    profile = results.get("profile")
    if profile and not profile.get("error"):
        lines.append("")
        lines += _profile_lines(profile)
    for name, other in (results.get("profiles") or {}).items():
        if name != "c32" and other and not other.get("error"):
            lines.append("")
            lines += _short_profile_lines(name, other)
    for note in results.get("notes", []):
        lines.append(f"\n> {note}")
    return "\n".join(lines) + "\n"


def _streams(scenario: str) -> bool:
    spec = RESPONSES.get(scenario)
    return (spec.base if spec else scenario) == "s32"


def _problem(results: dict[str, Any], scenario: str, target: str) -> str:
    row = results.get("scenarios", {}).get(scenario, {}).get(target)
    if row is None:
        return "not measured"
    problem = row.get("problem")
    return f"{target}: {problem.splitlines()[0][:100]}" if problem else ""


def _responses_table(results: dict[str, Any]) -> list[str]:
    """The Responses path beside chat: same run, same gateway process, same conversation."""
    r = results["ratios"]
    rows = []
    for name, spec in RESPONSES.items():
        cpu = [_value(results, s, CLAUDE_PROXY, "cpu_ms_per_request") for s in (name, spec.base)]
        notes = [n for n in (_problem(results, name, t) for t in (CLAUDE_PROXY, LITELLM)) if n]
        rows.append(
            [
                f"{name} (÷ {spec.base})",
                _fmt(_value(results, name, CLAUDE_PROXY, "rps")),
                _fmt(_value(results, name, LITELLM, "rps")),
                _x(r.get("responses_claude_proxy_over_litellm_rps", {}).get(name), ".1f"),
                _x(r.get("responses_over_chat_rps", {}).get(name)),
                _x(r.get("litellm_responses_over_chat_rps", {}).get(name)),
                f"{_ms(cpu[0])} / {_ms(cpu[1])}",
                "; ".join(notes),
            ]
        )
    header = [
        "scenario (chat scenario it repeats)",
        "claude-proxy rps",
        "LiteLLM rps",
        "claude-proxy ÷ LiteLLM",
        "claude-proxy Responses ÷ chat",
        "LiteLLM Responses ÷ chat",
        "claude-proxy CPU ms/req Responses / chat",
        "notes",
    ]
    stored = r.get("responses_stored_over_unstored_rps", {})
    lines = ["**Responses API path** (`POST /v1/responses`) beside chat, same run", "", *_table(header, rows)]
    if stored.get(CLAUDE_PROXY) is not None:
        lines += [
            "",
            f"Storing (resp-c32-store ÷ resp-c32 rps): claude-proxy {_x(stored.get(CLAUDE_PROXY))}"
            + (f", LiteLLM {_x(stored.get(LITELLM))}" if stored.get(LITELLM) is not None else "")
            + ".",
        ]
    return lines


def _figures_table(results: dict[str, Any]) -> list[str]:
    """Issue 18's figures: each per round, its median and range, the goal and the verdict."""
    spread = results["spread"]
    rows = []
    chosen = results.get("settings", {}).get("selected")
    for figure in FIGURES:
        f = spread[figure.key]
        if chosen is not None and not all(scenario in chosen for scenario, _ in figure.inputs):
            continue  # a run of some scenarios only (--only): leave out what it did not try
        if f["median"] is None:
            cells = ["—", "—", "—", f"n/a: {f['why_not']}" if f["why_not"] else "n/a"]
        else:
            per_round = ", ".join("—" if v is None else f"{v:.3g}" for v in f["per_round"])
            verdict = "no target"
            if figure.goal is not None:
                met = f["median"] >= figure.goal if figure.at_least else f["median"] <= figure.goal
                verdict = "met" if met else "**missed**"
            cells = [f"{f['median']:.3g}{figure.unit}", _range(f), per_round, verdict]
        goal = "—" if figure.goal is None else f"{'≥' if figure.at_least else '≤'} {figure.goal:g}{figure.unit}"
        rows.append([figure.label, goal, *cells])
    header = ["figure", "goal", "median", "range over rounds", "per round", "verdict"]
    return ["**Issue 18 figures** (each round measures both sides moments apart)", "", *_table(header, rows)]


def _many_table(rows: Rows) -> list[str]:
    header = ["target", "completed", "peak open", "stream p50 s", "stream p99 s", "ttfb p50 ms", "RSS before MB"]
    header += ["peak RSS MB", "KB per open stream", "notes"]
    out = []
    for target, row in rows.items():
        failures = row.get("failures") or {}
        notes = [f"{n} x {reason[:60]}" for reason, n in failures.items()]
        notes += [text.splitlines()[0][:220] for text in (row.get("note"), row.get("problem")) if text]
        if row.get("ramp_s") is not None:
            notes.append(
                f"all started within {row['ramp_s']:.1f} s, each planned {row.get('stream_planned_s', 0):.0f} s"
            )
        if row.get("listen_overflows"):
            notes.append(f"{row['listen_overflows']:,} listen-queue overflows (machine-wide) meanwhile")
        out.append(
            [
                LABELS.get(target, target),
                f"{row.get('completed', 0):,} / {row.get('streams', 0):,}",
                _fmt(row.get("peak_open")),
                _seconds(row.get("p50_ms")),
                _seconds(row.get("p99_ms")),
                _ms(row.get("ttfb_p50_ms")),
                _fmt(row.get("rss_before_mb"), ".0f"),
                _fmt(row.get("rss_mb"), ".0f"),
                _fmt(row.get("rss_kb_per_stream"), ".1f"),
                "; ".join(notes),
            ]
        )
    return _table(header, out)


def _seconds(ms: Any) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f}"


def _open_table(rows: Rows) -> list[str]:
    header = ["target", "completed", "stream p50 s", "stream p99 s", "ttfb p50 ms", "RSS before MB", "peak RSS MB"]
    out = []
    for target in TARGET_ORDER:
        row = rows.get(target)
        if row is None:
            continue
        failures = row.get("failures") or {}
        note = "; ".join(f"{n} x {reason[:60]}" for reason, n in failures.items()) + _foreign(row)
        out.append(
            [
                LABELS.get(target, target),
                f"{row.get('completed', 0)} / {row.get('streams', 0)}",
                _seconds(row.get("p50_ms")),
                _seconds(row.get("p99_ms")),
                _ms(row.get("ttfb_p50_ms")),
                _fmt(row.get("rss_before_mb"), ".0f"),
                _fmt(row.get("rss_mb"), ".0f"),
                note.removeprefix("; "),
            ]
        )
    return _table([*header, "notes"], out)


def _ratios_table(results: dict[str, Any]) -> list[str]:
    r = results["ratios"]
    rows = []
    for scenario in ("c1", "c32", "s32", "ttfb"):
        rows.append(
            [
                scenario,
                _x(r["claude_proxy_over_litellm_rps"].get(scenario), ".1f"),
                _x(r["claude_proxy_over_direct_rps"].get(scenario), ".3f"),
                _ms(r["claude_proxy_added_p50_ms"].get(scenario)),
                _ms(r["litellm_added_p50_ms"].get(scenario)),
            ]
        )
    p99 = r["c32_p99_over_p50"]
    lines = ["**Ratios**", ""]
    lines += _table(
        [
            "scenario",
            "claude-proxy ÷ LiteLLM rps",
            "claude-proxy ÷ direct rps",
            "claude-proxy added p50 ms",
            "LiteLLM added p50 ms",
        ],
        rows,
    )
    lines += ["", "c32 p99 ÷ p50: " + ", ".join(f"{t} {_x(p99.get(t))}" for t in TARGET_ORDER if p99.get(t))]
    over_reference = r.get("claude_proxy_over_reference_rps", {})
    if any(over_reference.values()):
        added = r["reference_added_p50_ms"]
        lines += [
            "",
            "Reference forwarder: claude-proxy reaches "
            + ", ".join(f"{_x(over_reference.get(s))} of its {s} rps" for s in ("c1", "c32"))
            + f"; it adds {_ms(added.get('c1'))} ms to direct p50 on c1.",
        ]
    return lines


def _targets_table(results: dict[str, Any]) -> list[str]:
    mark = {True: "met", False: "**missed**", None: "not measured"}
    rows = [
        [t["name"], t["target"], "—" if t["measured"] is None else f"{t['measured']:g}", mark[t["met"]], t["detail"]]
        for t in results["targets"]
    ]
    return ["**Targets**", "", *_table(["target", "goal", "measured", "verdict", "detail"], rows)]


def _transport_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for transport, scenarios in results["transports"].items():
        for scenario in ("c32", "s32"):
            row = scenarios.get(scenario)
            if not row:
                continue
            rows.append(
                [
                    f"`{transport}`",
                    scenario,
                    _fmt(row.get("rps")),
                    _ms(row.get("p50_ms")),
                    _ms(row.get("p99_ms")),
                    _fmt(row.get("rss_mb"), ".0f"),
                    (row.get("problem") or "").splitlines()[0][:60] if row.get("problem") else "",
                ]
            )
    header = ["upstream.transport", "scenario", "rps", "p50 ms", "p99 ms", "peak RSS MB", "notes"]
    return ["**claude-proxy upstream transport**", "", *_table(header, rows)]


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    def pct_table(title: str, key: str, count: int) -> list[str]:
        return _table([title, "% of samples"], [[name, f"{pct}"] for name, pct in profile.get(key, [])[:count]])

    lines = [f"**Profile** (py-spy --native, claude-proxy under c32, {profile['samples']:,} samples)", ""]
    lines += pct_table("charged to (innermost frame's package)", "self_by_package_pct", 10)
    lines += ["", *pct_table("package, inclusive (its callees too)", "inclusive_by_package_pct", 10)]
    lines += ["", *pct_table("function (self)", "self_by_function_pct", 12)]
    lines += ["", *pct_table("claude-proxy function (inclusive)", "inclusive_proxy_pct", 10)]
    return lines


def _short_profile_lines(name: str, profile: dict[str, Any]) -> list[str]:
    """Another load's profile, shortly: where its time goes by package and along claude-proxy's path."""

    def top(key: str, count: int) -> str:
        return ", ".join(f"{n} {pct}%" for n, pct in profile.get(key, [])[:count])

    stacks = profile.get("collapsed_stacks", "?")
    return [
        f"**Profile under {name}** ({profile['samples']:,} samples; stacks in `{stacks}`)",
        "",
        f"* packages, inclusive: {top('inclusive_by_package_pct', 8)}",
        f"* claude-proxy functions, inclusive: {top('inclusive_proxy_pct', 8)}",
        f"* functions, self: {top('self_by_function_pct', 6)}",
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULTS / "latest.json"
    print(render(json.loads(path.read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
