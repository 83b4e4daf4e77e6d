"""What an upstream call hands back: ``UpstreamReply`` (a whole body) and ``UpstreamStream`` (an
open response read as it arrives), both held to the gateway's bounds.

A body is read up to ``upstream.max_response_bytes`` (``read_whole``; past it the reply is
``UpstreamRejected`` and its connection is closed), every chunk is scrubbed of the upstream keys
on the way in, a read that stalls past the idle timeout fails, and a transport error while reading
becomes the gateway's own error (``map_transport_error``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import UpstreamRejected
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder
from proxy.upstream.backends import _TRANSPORT_EXCEPTIONS, map_transport_error
from proxy.upstream.scrub import Scrubber, StreamScrubber

if TYPE_CHECKING:
    from proxy.tracing.spans import AttemptTrace

log = logging.getLogger("proxy.upstream")
_UNPARSED: Any = object()

# An error body is read only to tell the client what went wrong; cap it so a huge HTML page cannot.
MAX_ERROR_BODY = 64 * 1024
# The upstream's request id is passed on to clients and logs; anything else is dropped.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _safe_request_id(headers: Mapping[str, str]) -> str | None:
    """The upstream's ``request-id`` if it looks like one; it goes into response headers and logs,
    where a non-latin-1 or overlong value would fail (or forge) them."""
    value = headers.get("request-id")
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


@dataclass(slots=True)
class UpstreamReply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float = 0.0
    attempts: int = 1
    _parsed: Any = field(default=_UNPARSED, repr=False, compare=False)

    @property
    def request_id(self) -> str | None:
        return _safe_request_id(self.headers)

    def json(self) -> Any:
        """The body as JSON, parsed once: the dialect's answer and the request's trace both read
        it. A body that is not JSON raises ``orjson.JSONDecodeError`` each time."""
        if self._parsed is _UNPARSED:
            self._parsed = orjson.loads(self.body)
        return self._parsed


@dataclass(slots=True)
class UpstreamStream:
    """An open upstream response whose body has not been read yet; close it when done.

    Every chunk read is scrubbed of the upstream keys on the way in (``Scrubber``), so that
    ``iter_bytes``, ``read`` and ``first_event`` hand on only scrubbed bytes. A relay decodes the
    events with ``SSEDecoder(stream.max_event_bytes)``."""

    status: int
    headers: Mapping[str, str]
    _chunks: AsyncIterator[bytes]
    _close: Callable[[], Awaitable[None]]
    _idle_timeout: float
    _scrubber: Scrubber = field(default_factory=lambda: Scrubber(()))
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    _on_close: Callable[[], None] | None = None
    _prefix: list[bytes] = field(default_factory=list)
    elapsed: float = 0.0
    attempts: int = 1
    _closed: bool = False
    _ended: bool = False
    _scrubbing: StreamScrubber | None = None
    _trace: AttemptTrace | None = None  # the attempt's span, ended when the stream is closed

    @property
    def request_id(self) -> str | None:
        return _safe_request_id(self.headers)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; a read that stalls longer than the idle timeout fails."""
        while self._prefix:
            yield self._prefix.pop(0)
        while (chunk := await self._next_chunk()) is not None:
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        """The body, or its first ``limit`` bytes or so (an error body's excerpt)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)

    async def read_whole(self, max_bytes: int) -> bytes:
        """The whole body; one over ``max_bytes`` (declared or read) is ``UpstreamRejected``, and
        the caller's close then drops the connection rather than read the rest."""
        declared = self.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes)
        # Read raw and scrubbed once, whole: cheaper than scrubbing chunk by chunk, and the same.
        parts: list[bytes] = list(self._prefix)
        self._prefix.clear()
        if self._scrubbing is not None:  # bytes held back by a chunk-wise read before this one
            parts.append(self._scrubbing.flush())
        size = sum(map(len, parts))
        while (chunk := await self._read_raw()) is not None:
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            parts.append(chunk)
        self._ended = True
        return self._scrubber.scrub(parts[0] if len(parts) == 1 else b"".join(parts))

    async def first_event(self, limit: int = MAX_ERROR_BODY) -> tuple[str, bytes] | None:
        """Read up to the first complete SSE event, keeping the bytes read for ``iter_bytes``."""
        decoder = SSEDecoder(self.max_event_bytes)
        size = 0
        while size < limit and (chunk := await self._next_chunk()) is not None:
            self._prefix.append(chunk)
            size += len(chunk)
            events = decoder.feed(chunk)
            if events:
                return events[0]
        return None

    async def _next_chunk(self) -> bytes | None:
        """The next scrubbed chunk, None at the end of the body."""
        if self._ended:
            return None
        if self._scrubbing is None:
            self._scrubbing = self._scrubber.stream()
        while True:
            chunk = await self._read_raw()
            if chunk is None:
                self._ended = True
                return self._scrubbing.flush() or None
            scrubbed = self._scrubbing.feed(chunk)
            if scrubbed:
                return scrubbed
            # All of it held back (it may be the start of a key): read on.

    async def _read_raw(self) -> bytes | None:
        try:
            async with asyncio.timeout(self._idle_timeout):
                return await anext(self._chunks)
        except StopAsyncIteration:
            return None
        except _TRANSPORT_EXCEPTIONS as exc:
            raise map_transport_error(exc, self._scrubber) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._close()
            finally:
                if self._on_close:
                    self._on_close()
                if self._trace is not None:
                    self._trace.end()


def _too_large(max_bytes: int) -> UpstreamRejected:
    refusal = UpstreamRejected(f"the upstream API's reply is over upstream.max_response_bytes ({max_bytes} bytes)")
    log.warning("upstream reply refused: %s", refusal.message)
    return refusal
