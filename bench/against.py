"""``python -m bench --against REV``: this work tree's claude-proxy ÷ claude-proxy at commit REV.

The two gateways run the same scenarios, alternately, round after round, against one fake upstream,
so both see the same machine at (nearly) the same moment: the ratio of one round is far steadier
than two separate runs of the whole bench. REV's code runs from a temporary `git worktree` with this
venv's packages (a commit that needs other dependencies is not comparable this way). Reported per
scenario: requests/s new ÷ old per round, their median, and the p50 latencies. The Responses
scenarios (resp-c32, resp-s32) join in when both trees answer `POST /v1/responses` correctly; an
older REV without it (a 404) has them skipped, and the result says so.
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import Services
from bench.scenarios import Bench, Row, run_scenario
from bench.targets import REPO, Target, responses_variant, start_claude_proxy

SCENARIOS = ("c1", "c32", "s32")
RESPONSES_SCENARIOS = ("resp-c32", "resp-s32")


def worktree(rev: str, workdir: Path) -> tuple[Path, str]:
    """A detached work tree of ``rev`` inside ``workdir`` and the commit it names."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = workdir / f"claude-proxy-{commit[:12]}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), commit],
        capture_output=True,
        check=True,
    )
    return path, commit


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)


def compare(bench: Bench, services: Services, rev: str, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    old_code, commit = worktree(rev, bench.workdir)
    try:
        return _rounds(bench, services, old_code, commit, rounds, log)
    finally:
        remove_worktree(old_code)


def _start(bench: Bench, services: Services, code: Path, label: str) -> Target:
    target, _ = start_claude_proxy(
        services, bench.workdir, bench.upstream, transport=None, max_in_flight=1024, code=code, label=label
    )
    target.name = label
    problem = target.verify()
    if problem:
        raise RuntimeError(f"{label} answers wrongly: {problem}")
    return target


def _rounds(
    bench: Bench, services: Services, old_code: Path, commit: str, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    new_label, old_label = "new", f"old@{commit[:9]}"
    new = _start(bench, services, REPO, new_label)
    old = _start(bench, services, old_code, old_label)
    skipped = _responses_skipped(new, old)
    scenarios = SCENARIOS if skipped else SCENARIOS + RESPONSES_SCENARIOS
    if skipped:
        log(f"  {skipped}")
    rows: dict[str, list[tuple[Row, Row]]] = {s: [] for s in scenarios}
    try:
        for number in range(rounds):
            for scenario in scenarios:
                # Alternate which goes first, so neither always gets the warmer machine.
                pair = (new, old) if number % 2 == 0 else (old, new)
                measured = {t.name: run_scenario(bench, t, scenario) for t in pair}
                rows[scenario].append((measured[new_label], measured[old_label]))
                log(f"  round {number + 1} {scenario:<8} {_ratio_text(measured[new_label], measured[old_label])}")
    finally:
        services.stop(new.service)
        services.stop(old.service)
    return {
        "against": commit,
        "rounds": rounds,
        "responses_skipped": skipped,
        "scenarios": {s: _summary(pairs) for s, pairs in rows.items()},
    }


def _responses_skipped(*targets: Target) -> str | None:
    """Why the Responses scenarios cannot be compared (a tree without /v1/responses), or None."""
    problems = []
    for target in targets:
        problem = responses_variant(target, store=False).verify()
        if problem:
            problems.append(f"{target.name}: {problem[:160]}")
    if not problems:
        return None
    return "Responses scenarios skipped, POST /v1/responses does not answer right in " + "; ".join(problems)


def _ratio(new: Row, old: Row) -> float | None:
    if new.rps is None or old.rps is None or old.rps == 0:
        return None
    return new.rps / old.rps


def _ratio_text(new: Row, old: Row) -> str:
    ratio = _ratio(new, old)
    if ratio is None:
        return f"not comparable: {new.problem or old.problem}"
    return f"new {new.rps:,.0f}/s p50 {new.p50_ms:.3f} ms, old {old.rps:,.0f}/s p50 {old.p50_ms:.3f} ms: {ratio:.3f}x"


def _summary(pairs: list[tuple[Row, Row]]) -> dict[str, Any]:
    ratios = [r for r in (_ratio(new, old) for new, old in pairs) if r is not None]
    return {
        "new_over_old_rps": [round(r, 3) for r in ratios],
        "median": round(statistics.median(ratios), 3) if ratios else None,
        "new": [new.as_dict() for new, _ in pairs],
        "old": [old.as_dict() for _, old in pairs],
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"claude-proxy (this tree) ÷ claude-proxy at {result['against'][:12]}, {result['rounds']} interleaved rounds",
        "",
        "| scenario | new ÷ old requests/s per round | median |",
        "| --- | --- | --- |",
    ]
    for scenario, summary in result["scenarios"].items():
        per_round = ", ".join(f"{r:.3f}" for r in summary["new_over_old_rps"]) or "—"
        median = f"{summary['median']:.3f}x" if summary["median"] is not None else "—"
        lines.append(f"| {scenario} | {per_round} | {median} |")
    if result.get("responses_skipped"):
        lines += ["", f"> {result['responses_skipped']}"]
    return "\n".join(lines) + "\n"
