"""Structured logs: one JSON object per line, and nothing secret in any of them.

Records carry their structured fields in ``extra={"fields": {...}}``; the formatter merges them
into the line. Access lines come from ``proxy.access``.
"""

from __future__ import annotations

import logging
import sys
import time
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


def setup(level: str = "info", fmt: str = "json") -> None:
    """Route every logger (ours and uvicorn's) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
