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
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["SSEDecoder", "aiter_sse"]

_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    __slots__ = ("_bom_checked", "_data", "_event", "_fields_seen", "_partial", "_trailing_cr")

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the current line's bytes, when a read ended inside it
        self._trailing_cr = False  # the last read ended in CR: an LF opening the next one is its pair
        self._bom_checked = False
        self._event = b""
        self._data: list[bytes] = []
        self._fields_seen = False  # any field line since the last blank line

    @property
    def pending(self) -> bool:
        """Input that no blank line has closed yet: a partial line or an event's fields."""
        return bool(self._partial) or self._fields_seen

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """The events completed by `chunk`, in order, as ``(event name, data)``."""
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
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
        if has_cr:
            # A CR at the very end already ends its line; remember it in case the next read
            # starts with the LF of the same CRLF.
            self._trailing_cr = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        return self._lines(lines)

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
            elif field == b"event":
                self._event = value
        return events

    def _strip_bom(self, chunk: bytes) -> bytes:
        head = b"".join(self._partial) + chunk if self._partial else chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            # Too short to tell yet: keep it as the start of the first line.
            self._partial = [head]
            return b""
        self._bom_checked = True
        self._partial = []
        return head[len(_BOM) :] if head.startswith(_BOM) else head


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """The events of an SSE byte stream (e.g. ``response.aiter_raw()``), as they complete.

    A body that ends mid-event yields nothing for that event; the stream translator reports the
    missing end of message. Use `SSEDecoder` directly to inspect `pending`.
    """
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event
