"""Structured logs: one JSON object per line, and nothing secret in any of them.

Records carry their structured fields in ``extra={"fields": {...}}``; the formatter merges them
into the line. Access lines come from ``proxy.access``.

The event loop only formats a line and queues it; a thread writes it to stderr. A write to a pipe
nobody drains (a stuck log collector) would otherwise block the loop and every request with it.
The queue is bounded: when it is full, lines are dropped and counted, and the count is logged once
the writer catches up.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import Any

import orjson

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    # The access log writes a line per request: the date-time part changes once a second.
    _second: int = -1
    _stamp: str = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


MAX_QUEUED_LINES = 10_000


class DroppingQueueHandler(QueueHandler):
    """Formats on the caller's thread, never blocks it: a full queue drops the line and counts it."""

    def __init__(self, lines: queue.Queue[Any]) -> None:
        super().__init__(lines)
        self._lines = lines
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                note = logging.LogRecord("proxy.logs", logging.WARNING, __file__, 0, _DROPPED, (self.dropped,), None)
                self._lines.put_nowait(self.prepare(note))
                self.dropped = 0
            self._lines.put_nowait(record)
        except queue.Full:
            self.dropped += 1


_DROPPED = "%d log lines were dropped: stderr was not read fast enough"

_listener: QueueListener | None = None


def _stop_writer() -> None:
    """Writes out what is queued; at exit, and before a new setup replaces the writer."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(_stop_writer)


def setup(level: str = "info", fmt: str = "json") -> None:
    """Route every logger (ours and uvicorn's) through one queue to a thread writing stderr."""
    global _listener
    _stop_writer()
    lines: queue.Queue[Any] = queue.Queue(MAX_QUEUED_LINES)
    handler = DroppingQueueHandler(lines)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    writer = logging.StreamHandler(sys.stderr)  # the line arrives formatted: its message is the line
    _listener = QueueListener(lines, writer)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # proxy.access writes the one access line per request; uvicorn's own would be a second, plain
    # one. uvicorn checks `hasHandlers()` once per connection, so with no handler and no propagation
    # it does not even build the record.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers[:] = []
    uvicorn_access.propagate = False
    # Client libraries log every request at INFO; the access line already says all of it.
    for name in ("httpx", "httpcore", "aiohttp"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
