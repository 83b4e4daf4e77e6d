"""Incremental decoder for the upstream `text/event-stream` body (WHATWG event-stream rules).

Hand-written rather than taken from `httpx-sse`: that library decodes to `str` lines (its current
line splitter walks the text one character at a time in Python) and is tied to an
`httpx.Response`, while this path wants the `data` field as bytes for `orjson` and one
`bytes.split` per network read. `sse-starlette` is server-side, and the SDKs' decoders are private.

Rules implemented: lines end in LF, CRLF or CR, and a read may end anywhere (inside CRLF or a
multi-byte character: the decoder never decodes data); ``data`` lines are joined with LF; an
event is dispatched at a blank line, only when it had a ``data`` field; ``event`` sets the name
("message" when absent or empty); ``:`` lines are comments; ``id``, ``retry`` and unknown fields are
ignored; a line without a colon is a field with an empty value; one space after the colon is
stripped; a leading UTF-8 BOM is dropped.

End of stream: per the spec an event not closed by a blank line is discarded, so `flush()` returns
no event; `pending` tells the caller that the body stopped mid-event (a truncated stream).

Bound: an event is buffered until its blank line, so a hostile or broken upstream could make one
event (or one line with no newline at all) as large as it likes. The bytes held for the current
event (its partial line and its ``data`` lines) are counted; past ``max_event_bytes``
(``upstream.max_event_bytes``) the stream fails with `UpstreamRejected`, which the relays turn
into a stream error event, and the caller closes the upstream response. The events the same read
completed before it are not lost: ``feed`` returns them in a list that raises the failure once a
``for`` loop has gone through them, and every later ``feed`` raises it at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator

from proxy.errors import UpstreamRejected

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "aiter_sse"]

_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024  # the default of `upstream.max_event_bytes`


class SSEDecoder:
    __slots__ = (
        "_bom_checked",
        "_data",
        "_data_size",
        "_event",
        "_failure",
        "_fields_seen",
        "_partial",
        "_partial_size",
        "_trailing_cr",
        "max_event_bytes",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._partial: list[bytes] = []  # the current line's bytes, when a read ended inside it
        self._partial_size = 0
        self._trailing_cr = False  # the last read ended in CR: an LF opening the next one is its pair
        self._bom_checked = False
        self._event = b""
        self._data: list[bytes] = []
        self._data_size = 0
        self._fields_seen = False  # any field line since the last blank line
        self._failure: UpstreamRejected | None = None  # an event went over the bound: the stream is dead

    @property
    def pending(self) -> bool:
        """Input that no blank line has closed yet: a partial line or an event's fields."""
        return bool(self._partial) or self._fields_seen

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """The events completed by `chunk`, in order, as ``(event name, data)``."""
        if self._failure is not None:
            raise self._failure
        if not chunk:
            return []
        if self._trailing_cr:
            self._trailing_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if not self._bom_checked:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []

        has_cr = b"\r" in chunk
        if not has_cr and b"\n" not in chunk:
            self._partial.append(chunk)
            self._partial_size += len(chunk)
            return self._checked([])
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        if has_cr:
            # A CR at the very end already ends its line; remember it in case the next read
            # starts with the LF of the same CRLF.
            self._trailing_cr = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        rest = lines.pop()
        events = self._lines(lines)
        if rest and self._failure is None:
            self._partial.append(rest)
            self._partial_size = len(rest)
        return self._checked(events)

    def flush(self) -> list[tuple[str, bytes]]:
        """End of stream. Returns no event (see the module docstring); `pending` stays as it was."""
        return []

    def _lines(self, lines: list[bytes]) -> list[tuple[str, bytes]]:
        events: list[tuple[str, bytes]] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    name = self._event.decode("utf-8", "replace") if self._event else "message"
                    events.append((name, data[0] if len(data) == 1 else b"\n".join(data)))
                    data.clear()
                    self._data_size = 0
                self._event = b""
                self._fields_seen = False
                continue
            if line[0] == 0x3A:  # ":" comment
                continue
            self._fields_seen = True
            field, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
                self._data_size += len(value)
                if self._partial_size + self._data_size > self.max_event_bytes:
                    break  # `_checked` fails the stream after the events completed so far
            elif field == b"event":
                self._event = value
        return events

    def _checked(self, events: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """``events``, unless the event being read is over the bound: then the stream fails, after
        ``events`` if there are any."""
        if self._failure is None and self._partial_size + self._data_size <= self.max_event_bytes:
            return events
        self._failure = UpstreamRejected(
            f"the upstream API sent a stream event over upstream.max_event_bytes ({self.max_event_bytes} bytes)"
        )
        self._partial.clear()  # nothing more will be decoded: let the oversized bytes go
        self._data.clear()
        self._partial_size = self._data_size = 0
        if not events:
            raise self._failure
        return _EventsThenFailure(events, self._failure)

    def _strip_bom(self, chunk: bytes) -> bytes:
        head = b"".join(self._partial) + chunk if self._partial else chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            # Too short to tell yet: keep it as the start of the first line.
            self._partial = [head]
            return b""
        self._bom_checked = True
        self._partial = []
        return head[len(_BOM) :] if head.startswith(_BOM) else head


class _EventsThenFailure(list[tuple[str, bytes]]):
    """The events a read completed before an event over the bound, then that failure: a relay's
    ``for event, data in decoder.feed(chunk)`` handles the events, then gets the error."""

    def __init__(self, events: list[tuple[str, bytes]], failure: UpstreamRejected) -> None:
        super().__init__(events)
        self._failure = failure

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        yield from super().__iter__()
        raise self._failure


async def aiter_sse(
    chunks: AsyncIterable[bytes], max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> AsyncIterator[tuple[str, bytes]]:
    """The events of an SSE byte stream (e.g. ``response.aiter_raw()``), as they complete.

    A body that ends mid-event yields nothing for that event; the stream translator reports the
    missing end of message. Use `SSEDecoder` directly to inspect `pending`.
    """
    decoder = SSEDecoder(max_event_bytes)
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event
