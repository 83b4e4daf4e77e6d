"""Taking the gateway's upstream keys (and, from transport errors, the upstream's address) out of
everything the upstream says, before any route or translator sees it: ``Scrubber`` for whole bodies
and texts, ``StreamScrubber`` for a body that arrives in chunks."""

from __future__ import annotations

import re
from collections.abc import Iterable

import yarl

_REDACTED = "[redacted]"
# Anything address-like left in a transport error's text: a URL, an IPv4 address (and port).
_ADDRESS = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", re.IGNORECASE)
# A secret shorter than this is not a real key, and scrubbing it would mangle ordinary text.
_MIN_SECRET = 8


class Scrubber:
    """Takes the gateway's upstream keys out of what the upstream says, and its address out of
    transport errors.

    The one mechanism for every upstream-derived message: the upstream's bytes are scrubbed where
    they enter (every body, every stream chunk: error replies, HTML pages, the first and any later
    stream ``error`` event, what the native routes relay unchanged), so whatever maps or relays
    them next cannot show a key, even when a 400, a 403, a 5xx page or an error event quotes it."""

    def __init__(self, secrets: Iterable[str], base_url: str = "") -> None:
        # Longest first, so that a key that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._secret_bytes = [s.encode() for s in self._secrets]
        # Every byte that occurs in some key, made once: each stream's scrubber shares it.
        self._key_bytes = frozenset(b"".join(self._secret_bytes))
        url = yarl.URL(base_url) if base_url else None
        self._places: list[str] = []
        if url is not None and url.host:
            # The base URL, then host:port, then the host: the longest form first.
            self._places = [base_url.rstrip("/"), f"{url.host}:{url.port}", url.host]

    def scrub(self, data: bytes) -> bytes:
        """``data`` (a whole body) without the keys."""
        for secret in self._secret_bytes:
            if secret in data:
                data = data.replace(secret, _REDACTED.encode())
        return data

    def secrets(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def text(self, text: str) -> str:
        """A transport error's text for a client: no key, no upstream address."""
        text = self.secrets(text)
        for place in self._places:
            text = text.replace(place, "the upstream")
        return _ADDRESS.sub("the upstream", text)

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self._secret_bytes, self._key_bytes)


class StreamScrubber:
    """`Scrubber.scrub` over a body that arrives in chunks: a key cut by a chunk boundary is still
    found. The end of a chunk that could be the start of a key is held back until the next chunk
    (or the end); a chunk ending an SSE event ends in a blank line, so no event is delayed."""

    __slots__ = ("_held", "_key_bytes", "_secrets")

    def __init__(self, secrets: list[bytes], key_bytes: frozenset[int] | None = None) -> None:
        self._secrets = secrets
        # A chunk whose last byte occurs in no key cannot end with the start of one: the usual case
        # (an SSE chunk ends with a newline), decided without searching.
        self._key_bytes = frozenset(b"".join(secrets)) if key_bytes is None else key_bytes
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._secrets:
            return chunk
        data = self._held + chunk if self._held else chunk
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, _REDACTED.encode())
        keep = 0
        if data and data[-1] in self._key_bytes:
            keep = max(_key_start_at_end(data, secret) for secret in self._secrets)
        if keep:
            data, self._held = data[:-keep], data[-keep:]
        else:
            self._held = b""
        return data

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


def _key_start_at_end(data: bytes, secret: bytes) -> int:
    """The length of the longest end of ``data`` that is a (proper) start of ``secret``."""
    start = max(0, len(data) - len(secret) + 1)
    first = secret[:1]
    while (start := data.find(first, start)) != -1:
        if secret.startswith(data[start:]):
            return len(data) - start
        start += 1
    return 0
