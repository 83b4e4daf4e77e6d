"""A discard OTLP/HTTP collector for the tracing scenario: ``POST /v1/traces`` → 200, empty body.

Run as its own process: ``python -m bench.otlp_sink --port P``. A bare ``asyncio.Protocol`` (as
``fake_upstream.py``), so that receiving spans costs the machine as little as possible and the
scenario measures the gateway's side of tracing. It counts what it received:
``GET /_bench/stats`` → ``{"requests": N, "bytes": B}`` (the bench's proof that spans arrive);
``GET /healthz`` → 200. Keep-alive, ``Content-Length`` bodies; a chunked body is read to its end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
from typing import cast

from bench.fake_upstream import _CHUNKED_RE, _CONTENT_LENGTH_RE, _MAX_HEAD

_EMPTY_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def stats(self) -> bytes:
        body = json.dumps({"requests": self.requests, "bytes": self.bytes}).encode()
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class Sink(asyncio.Protocol):
    def __init__(self, counts: Counts) -> None:
        self._counts = counts
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    self._transport.close()
                return
            head = bytes(self._buffer[:end])
            if _CHUNKED_RE.search(head):
                total = self._buffer.find(b"\r\n0\r\n\r\n", end + 4)
                if total < 0:
                    return
                total += 7
            else:
                found = _CONTENT_LENGTH_RE.search(head)
                total = end + 4 + (int(found.group(1)) if found else 0)
                if len(self._buffer) < total:
                    return
            del self._buffer[:total]
            self._transport.write(self._answer(head, total - end - 4))

    def _answer(self, head: bytes, length: int) -> bytes:
        method, _, rest = head.partition(b"\r\n")[0].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method == b"POST" and path == b"/v1/traces":
            self._counts.requests += 1
            self._counts.bytes += length
            return _EMPTY_OK
        if path == b"/_bench/stats":
            return self._counts.stats()
        if path == b"/healthz":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        return _NOT_FOUND


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    counts = Counts()
    listener = await loop.create_server(
        lambda: Sink(counts), host, port, backlog=1024, reuse_address=True, family=socket.AF_INET
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with listener:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="discard OTLP/HTTP trace sink for the benchmark")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve("127.0.0.1", args.port))
    else:
        uvloop.run(serve("127.0.0.1", args.port))


if __name__ == "__main__":
    main()
