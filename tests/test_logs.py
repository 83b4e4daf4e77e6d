"""Log lines wait in a bounded deque for a writer thread: formatted on the caller's side, written in
batches, dropped and counted (never blocking) when the writer falls behind."""

from __future__ import annotations

import io
import logging
from collections import deque
from typing import Any

import orjson

from proxy import logs
from proxy.logs import BoundedLineHandler, JSONFormatter, LineWriter


def record(message: str, **fields: Any) -> logging.LogRecord:
    entry = logging.LogRecord("proxy.access", logging.INFO, __file__, 1, message, None, None)
    entry.fields = fields
    return entry


def handler_on(lines: deque[str]) -> BoundedLineHandler:
    handler = BoundedLineHandler(lines)
    handler.setFormatter(JSONFormatter())
    return handler


def test_a_waiting_line_is_the_json_line_with_its_fields() -> None:
    lines: deque[str] = deque()
    handler_on(lines).handle(record("POST /v1/chat/completions 200", status=200, key="team-a"))
    line = orjson.loads(lines.popleft())
    assert (line["logger"], line["msg"], line["status"], line["key"]) == (
        "proxy.access",
        "POST /v1/chat/completions 200",
        200,
        "team-a",
    )


def test_a_full_deque_drops_lines_without_blocking_and_says_how_many_once_there_is_room(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(logs, "MAX_QUEUED_LINES", 2)
    lines: deque[str] = deque()
    handler = handler_on(lines)
    for n in range(5):  # two fit; three are dropped, at once
        handler.handle(record(f"line {n}"))
    assert handler.dropped == 3
    assert [orjson.loads(lines.popleft())["msg"] for _ in range(2)] == ["line 0", "line 1"]

    handler.handle(record("line 5"))  # the writer caught up: the count comes first, then the line
    note, line = (orjson.loads(lines.popleft()) for _ in range(2))
    assert (note["level"], note["msg"]) == ("warning", "3 log lines were dropped: stderr was not read fast enough")
    assert line["msg"] == "line 5"
    assert handler.dropped == 0


def test_the_writer_writes_every_waiting_line_in_order_in_one_write_and_the_rest_when_stopped() -> None:
    class Stream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Stream.writes += 1
            return super().write(text)

    lines: deque[str] = deque(f"line {n}" for n in range(50))
    stream = Stream()
    writer = LineWriter(lines, stream, interval=60)  # only stop() makes it write
    writer.start()
    writer.stop()
    assert not writer.is_alive()
    assert stream.getvalue() == "".join(f"line {n}\n" for n in range(50))
    assert Stream.writes == 1
