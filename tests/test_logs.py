"""Log lines go through a bounded queue to a writer thread: formatted on the caller's side, dropped
and counted (never blocking) when the writer falls behind."""

from __future__ import annotations

import logging
import queue
from typing import Any

import orjson

from proxy.logs import DroppingQueueHandler, JSONFormatter


def record(message: str, **fields: Any) -> logging.LogRecord:
    entry = logging.LogRecord("proxy.access", logging.INFO, __file__, 1, message, None, None)
    entry.fields = fields
    return entry


def test_a_queued_line_is_the_json_line_with_its_fields() -> None:
    lines: queue.Queue[Any] = queue.Queue(10)
    handler = DroppingQueueHandler(lines)
    handler.setFormatter(JSONFormatter())
    handler.emit(record("POST /v1/chat/completions 200", status=200, key="team-a"))
    line = orjson.loads(lines.get_nowait().getMessage())
    assert (line["logger"], line["msg"], line["status"], line["key"]) == (
        "proxy.access",
        "POST /v1/chat/completions 200",
        200,
        "team-a",
    )


def test_a_full_queue_drops_lines_without_blocking_and_says_how_many_once_there_is_room() -> None:
    lines: queue.Queue[Any] = queue.Queue(2)
    handler = DroppingQueueHandler(lines)
    handler.setFormatter(JSONFormatter())
    for n in range(5):  # two fit; three are dropped, at once
        handler.emit(record(f"line {n}"))
    assert handler.dropped == 3
    assert [orjson.loads(lines.get_nowait().getMessage())["msg"] for _ in range(2)] == ["line 0", "line 1"]

    handler.emit(record("line 5"))  # the writer caught up: the count comes first, then the line
    note, line = (orjson.loads(lines.get_nowait().getMessage()) for _ in range(2))
    assert (note["level"], note["msg"]) == ("warning", "3 log lines were dropped: stderr was not read fast enough")
    assert line["msg"] == "line 5"
    assert handler.dropped == 0
