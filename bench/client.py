"""A minimal asyncio HTTP/1.1 client for what wrk cannot measure: time to first streamed byte and
a thousand slow streams held open at once. The same code drives all three targets.

It speaks just enough HTTP/1.1 for the targets here: keep-alive, ``Content-Length`` and chunked
response bodies. Times are ``time.perf_counter`` seconds from just before the request is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.procs import LOOPBACK

MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    pass


# What a failed exchange raises; anything else is a bug in the bench.
CLIENT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, TimeoutError)


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    ttfb: float  # seconds from sending the request to the first body byte
    total: float  # seconds from sending the request to the end of the body


def build_request(port: int, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; requests go one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=MAX_HEAD)
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    async def request(self, raw: bytes, on_head: Callable[[], None] | None = None) -> Reply:
        """Send ``raw`` and read the whole reply; ``on_head`` is called once its head arrived."""
        started = time.perf_counter()
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        if on_head is not None:
            on_head()
        status, headers = _parse_head(head)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, first = await self._read_chunked()
        elif "content-length" in headers:
            length = int(headers["content-length"])
            first_part = await self._reader.readexactly(min(1, length))
            first = time.perf_counter()
            body = first_part + await self._reader.readexactly(length - len(first_part))
        else:
            first_part = await self._reader.read(MAX_HEAD)
            first = time.perf_counter()
            body = first_part + await self._reader.read()
        ended = time.perf_counter()
        return Reply(status, headers, body, first - started, ended - started)

    async def _read_chunked(self) -> tuple[bytes, float]:
        parts: list[bytes] = []
        first = 0.0
        while True:
            size_line = await self._reader.readline()
            if not first:
                first = time.perf_counter()
            if not size_line:
                raise ProtocolError("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await self._reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                return b"".join(parts), first
            chunk = await self._reader.readexactly(size + 2)
            parts.append(chunk[:-2])


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad status line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def one(port: int, raw: bytes, limit_s: float = 30.0, on_head: Callable[[], None] | None = None) -> Reply:
    """One request on a fresh connection, given at most ``limit_s`` seconds."""
    async with asyncio.timeout(limit_s):
        conn = await Connection.open(port)
        try:
            return await conn.request(raw, on_head)
        finally:
            await conn.close()


async def sequential(port: int, raw: bytes, duration: float, max_requests: int = 100_000) -> list[Reply]:
    """Requests one after another on one keep-alive connection, for ``duration`` seconds."""
    replies: list[Reply] = []
    deadline = time.monotonic() + duration
    conn = await Connection.open(port)
    try:
        while time.monotonic() < deadline and len(replies) < max_requests:
            async with asyncio.timeout(max(duration, 10.0)):
                replies.append(await conn.request(raw))
    finally:
        await conn.close()
    return replies


@dataclass(slots=True)
class Outcome:
    reply: Reply | None
    error: str | None


async def concurrent_streams(port: int, raw: bytes, count: int, ramp: float, limit_s: float) -> list[Outcome]:
    """``count`` requests at once, each on its own connection, started evenly over ``ramp`` seconds."""

    async def run(index: int) -> Outcome:
        await asyncio.sleep(ramp * index / count)
        try:
            return Outcome(await one(port, raw, limit_s), None)
        except CLIENT_ERRORS as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:200])

    return list(await asyncio.gather(*(run(i) for i in range(count))))
