"""Checks of the harness's own logic (not of the gateway): ``python -m pytest -q -p no:cacheprovider bench``.

Pure functions only — figures and their spread, the row each table shows, answer checks, the fake
upstream's pings — so they run in a second with nothing started.
"""

from __future__ import annotations

import json
from typing import Any

from bench.fake_upstream import PING, REPLY_TEXT, Replies, Server
from bench.report import compute_spread, compute_targets, median_rows, render
from bench.targets import CLAUDE_PROXY, DIRECT, REFERENCE, check_reply


def _row(rps: float, p50: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p50, "problem": None, **extra}


def _round(proxy_c32: float, reference_c32: float) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "c1": {DIRECT: _row(10_000, 0.1), CLAUDE_PROXY: _row(1_000, 0.6), REFERENCE: _row(2_000, 0.3)},
        "c32": {CLAUDE_PROXY: _row(proxy_c32), REFERENCE: _row(reference_c32)},
    }


def test_each_figure_is_computed_per_round_with_its_median_and_range() -> None:
    results = {"rounds": [_round(500, 1000), _round(900, 1000), _round(700, 1000)]}
    spread = compute_spread(results)
    assert spread["c32_over_reference"]["per_round"] == [0.5, 0.9, 0.7]
    assert spread["c32_over_reference"]["median"] == 0.7
    assert (spread["c32_over_reference"]["min"], spread["c32_over_reference"]["max"]) == (0.5, 0.9)
    assert spread["c1_added_over_reference"]["median"] == 2.5  # (0.6 - 0.1) / (0.3 - 0.1)


def test_a_figure_without_measurements_says_why() -> None:
    results: dict[str, Any] = {
        "rounds": [{"c32": {CLAUDE_PROXY: _row(1000)}, "tracing": {CLAUDE_PROXY: {"problem": "n/a: no spans"}}}],
        "settings": {"selected": ["c32", "tracing"]},
    }
    results["scenarios"] = median_rows(results["rounds"])
    tracing = compute_spread(results)["tracing_over_c32"]
    assert tracing["median"] is None
    assert tracing["why_not"] == "tracing: n/a: no spans"
    assert "n/a: tracing: n/a: no spans" in render(results)


def test_tables_show_the_round_with_the_median_rate() -> None:
    rounds = [_round(500, 1000), _round(900, 1000), _round(700, 1000)]
    assert median_rows(rounds)["c32"][CLAUDE_PROXY]["rps"] == 700


def test_open10000_is_met_only_when_every_stream_was_open_at_once() -> None:
    row: dict[str, Any] = {
        "streams": 10_000,
        "streams_wanted": 10_000,
        "completed": 10_000,
        "peak_open": 9_000,
        "ramp_s": 30,
    }
    row["rss_kb_per_stream"] = 15.0
    results = {"scenarios": {"open10000": {CLAUDE_PROXY: row}}}
    verdicts = {t["name"]: t["met"] for t in compute_targets(results)}
    assert verdicts["open10000 complete"] is False
    assert verdicts["open10000 RSS per open stream"] is True
    row["peak_open"] = 10_000
    assert {t["name"]: t["met"] for t in compute_targets(results)}["open10000 complete"] is True


def _stream(replies: Replies, pings: int) -> bytes:
    """The SSE body the fake upstream writes, de-chunked."""
    raw = replies.stream_first.split(b"\r\n\r\n", 1)[1] + b"".join(replies.rest(pings))
    body, rest = b"", raw
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return body


def test_pings_lengthen_a_stream_without_changing_its_text() -> None:
    replies = Replies("claude-sonnet-5-5")
    with_pings = _stream(replies, 3)
    assert with_pings.count(b"event: ping") == 3
    assert len(replies.rest(3)) == len(replies.stream_rest) + 3 and replies.rest(3).count(PING) == 3
    assert check_reply("anthropic", True, 200, with_pings) is None
    assert check_reply("anthropic", True, 200, _stream(replies, 0)) is None


def test_the_fake_upstream_takes_pings_at_run_time() -> None:
    server = Server(0.0)
    answer = server.configure(json.dumps({"event_delay": 0.5, "pings": 26}).encode())
    assert answer.startswith(b"HTTP/1.1 200") and (server.event_delay, server.pings) == (0.5, 26)
    assert server.configure(b'{"event_delay": 0.5, "pings": -1}').startswith(b"HTTP/1.1 400")


def test_a_wrong_answer_is_named() -> None:
    plain = json.dumps({"choices": [{"message": {"content": REPLY_TEXT[:-1]}}]}).encode()
    assert check_reply("openai", False, 200, plain) is not None
    assert check_reply("openai", False, 503, b"busy") == "status 503: b'busy'"
