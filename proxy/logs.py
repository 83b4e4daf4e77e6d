"""Structured logs: one JSON object per line, and nothing secret in any of them.

Records carry their structured fields in ``extra={"fields": {...}}``; the formatter merges them
into the line. Access lines come from ``proxy.access``.

The event loop only formats a line and leaves it in a deque; a thread writes the waiting lines to
stderr every 50 ms, in one write. A write to a pipe nobody drains (a stuck log collector) would
otherwise block the loop and every request with it. The deque is bounded: when it is full, lines
are dropped and counted, and the count is logged once the writer catches up.

The waiting lines are written on every way out: at exit (``atexit``), and on SIGTERM, which would
otherwise end the process before ``atexit`` runs. uvicorn catches SIGTERM while it serves, shuts
down (logging as it goes), puts back the handler it found and raises the signal again; with
Python's default handler that kills the process with the last lines still waiting. So every process
that serves (``serve`` itself, each ``--workers`` process) installs :func:`flush_on_sigterm` before
uvicorn takes the signal over, through :class:`UvicornConfig`.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any, TextIO

import orjson
import uvicorn

from proxy import tracing

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
        trace = tracing.CURRENT.get()
        if trace is not None:  # written while serving a traced request: the line leads to its trace
            line["trace_id"] = trace.trace_id
            line["span_id"] = trace.span_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


MAX_QUEUED_LINES = 10_000
WRITE_INTERVAL = 0.05  # seconds between the writer's rounds: how late a line may reach stderr


class BoundedLineHandler(logging.Handler):
    """Formats on the caller's thread and leaves the line for the writer; never blocks: past
    ``MAX_QUEUED_LINES`` waiting, a line is dropped and counted, and the count goes out once there
    is room again. A deque, not a `queue.Queue`: appending wakes no thread, so a busy gateway does
    not hand the GIL to the writer once per line."""

    def __init__(self, lines: deque[str]) -> None:
        super().__init__()
        self._lines = lines
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(self._lines) >= MAX_QUEUED_LINES:
            self.dropped += 1
            return
        if self.dropped:
            note = logging.LogRecord("proxy.logs", logging.WARNING, __file__, 0, _DROPPED, (self.dropped,), None)
            self._lines.append(self.format(note))
            self.dropped = 0
        self._lines.append(line)


_DROPPED = "%d log lines were dropped: stderr was not read fast enough"


class LineWriter(threading.Thread):
    """Every ``WRITE_INTERVAL`` seconds, writes the lines waiting to a stream in one write."""

    def __init__(self, lines: deque[str], stream: TextIO, interval: float = WRITE_INTERVAL) -> None:
        super().__init__(name="claude-proxy-log-writer", daemon=True)
        self._lines = lines
        self._stream = stream
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._write_waiting()
        self._write_waiting()

    def _write_waiting(self) -> None:
        batch = []
        while self._lines:
            batch.append(self._lines.popleft())
        if not batch:
            return
        try:
            self._stream.write("\n".join(batch) + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed: nowhere left to write
            pass

    def stop(self) -> None:
        """Writes out what is waiting; gives a stuck stream a few seconds at most."""
        self._stopping.set()
        self.join(timeout=5)


_writer: LineWriter | None = None


def _stop_writer() -> None:
    """At exit, and before a new setup replaces the writer."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


atexit.register(_stop_writer)


def flush_on_sigterm() -> None:
    """Until something else handles SIGTERM, make it write the waiting lines before it kills."""
    # Handlers belong to the main thread (a server run from a test's thread leaves them alone).
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _flush_then_terminate)


def _flush_then_terminate(signum: int, frame: FrameType | None) -> None:
    _stop_writer()
    # Then die of the signal as before, so a supervisor still sees "terminated by SIGTERM".
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


class UvicornConfig(uvicorn.Config):
    """uvicorn's Config. uvicorn calls ``configure_logging`` in each process it serves from (in
    ``Config()`` and again in every ``--workers`` process) before it installs its signal handlers:
    the one moment at which SIGTERM's handler, which uvicorn restores and re-raises, can be ours."""

    def configure_logging(self) -> None:
        super().configure_logging()
        flush_on_sigterm()
        # No line names its source file and line, so logging need not look them up (a stack walk
        # for every record, each access line's included): the logging HOWTO's "Optimization" switch.
        logging._srcfile = None


def setup(level: str = "info", fmt: str = "json") -> None:
    """Route every logger (ours and uvicorn's) through one bounded deque to a thread writing stderr."""
    global _writer
    _stop_writer()
    lines: deque[str] = deque()
    handler = BoundedLineHandler(lines)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _writer = LineWriter(lines, sys.stderr)
    _writer.start()
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
