"""The one place that talks HTTP to Anthropic.

Everything network-shaped lives here: the connection pool, the upstream keys, timeouts and
retries. The rest of the gateway sees two calls:

    await upstream.request(method, path, body)   -> UpstreamReply (status, headers, body bytes)
    await upstream.open_stream(path, body)        -> UpstreamStream (status, headers, async bytes)

Transport failures never leave this module as httpx exceptions: ``_TRANSPORT_ERRORS`` maps them
to the gateway's own errors (see ``proxy/errors.py``), in the manner of httpx's own exception map.

What comes back is held to the gateway's bounds before anyone else sees it (``_open`` and
``UpstreamStream``): redirects are never followed (a 3xx is a 502: following one would send the key
and the prompt to another host), bodies are asked for and accepted only uncompressed (so their size
on the wire is their size in memory), a body is read up to ``upstream.max_response_bytes`` and one
stream event buffered up to ``upstream.max_event_bytes``; past a bound the reply is
``UpstreamRejected`` (502, not retried) and its connection closed. Retry hints are made sane once,
by the one parser (``retry_after_seconds``), and every byte and every transport error's text goes
through a ``Scrubber`` that removes the gateway's upstream keys (and, from transport errors, the
upstream's address), so no route or translator downstream can relay them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
import httpx
import orjson
import yarl
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from proxy import metrics
from proxy.config import Settings
from proxy.errors import (
    ProxyError,
    RateLimited,
    ServiceUnavailable,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.keypool import KeyPool, NoKeyAvailable, UpstreamKey
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder
from proxy.translate.errors import retry_after_seconds, status_of_error_event

__all__ = [
    "InProcessTransport",
    "Scrubber",
    "Upstream",
    "UpstreamReply",
    "UpstreamStream",
    "map_transport_error",
    "retry_after_seconds",
]

log = logging.getLogger("proxy.upstream")

_R = TypeVar("_R", bound="UpstreamReply | UpstreamStream")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})
# An error body is read only to tell the client what went wrong; cap it so a huge HTML page cannot.
MAX_ERROR_BODY = 64 * 1024
# The upstream's request id is passed on to clients and logs; anything else is dropped.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

httpx2: Any
try:  # the optional `httpx2` transport (pip install 'claude-proxy[httpx2]'): httpx's API, its own classes
    import httpx2
except ImportError:  # pragma: no cover - depends on the environment
    httpx2 = None

ErrorMap = tuple[tuple[type[BaseException], Callable[[str], ProxyError]], ...]


def _httpx_errors(module: Any) -> ErrorMap:
    """httpx's exception classes and what each means; httpx2 has the same names."""
    return (
        (module.ConnectTimeout, lambda m: UpstreamTimeout(f"timed out connecting to the upstream API: {m}")),
        (module.TimeoutException, lambda m: UpstreamTimeout(f"the upstream API timed out: {m}")),
        (module.ConnectError, lambda m: UpstreamUnavailable(f"cannot connect to the upstream API: {m}")),
        (module.RemoteProtocolError, lambda m: UpstreamError(f"the upstream API broke the connection: {m}")),
        (module.TransportError, lambda m: UpstreamError(f"upstream transport error: {m}")),
    )


# The httpx families are disjoint from the rest; among the rest, order matters: aiohttp's timeouts
# are TimeoutErrors, and its connection errors are OSErrors.
_TRANSPORT_ERRORS: ErrorMap = (
    *_httpx_errors(httpx),
    *(_httpx_errors(httpx2) if httpx2 is not None else ()),
    (TimeoutError, lambda m: UpstreamTimeout(f"the upstream API timed out{m}")),
    (aiohttp.ClientConnectorError, lambda m: UpstreamUnavailable(f"cannot connect to the upstream API: {m}")),
    (aiohttp.ServerDisconnectedError, lambda m: UpstreamError(f"the upstream API broke the connection: {m}")),
    (aiohttp.ClientPayloadError, lambda m: UpstreamError(f"the upstream API broke the connection: {m}")),
    (aiohttp.ClientError, lambda m: UpstreamError(f"upstream transport error: {m}")),
    (OSError, lambda m: UpstreamError(f"upstream transport error: {m}")),
)
_TRANSPORT_EXCEPTIONS = tuple(exc_type for exc_type, _ in _TRANSPORT_ERRORS)


def map_transport_error(exc: BaseException, scrubber: Scrubber | None = None) -> ProxyError:
    """The gateway's error for a transport exception. The client's message says what failed, never
    where (``scrubber`` takes out the upstream's address and keys); the log has the whole text."""
    for exc_type, make in _TRANSPORT_ERRORS:
        if isinstance(exc, exc_type):
            text = scrubber.secrets(str(exc)) if scrubber else str(exc)
            log.warning("upstream transport error: %s: %s", type(exc).__name__, text)
            if exc_type is TimeoutError:
                return make("")
            detail = _client_detail(exc)
            return make(scrubber.text(detail) if scrubber else detail)
    raise exc


# aiohttp's parser errors quote the offending bytes (``... when reading: b'aaaa...'``): upstream
# data, of no use to a client.
_QUOTED_BYTES = re.compile(r":\s*b['\"].*", re.DOTALL)
_MAX_DETAIL = 200


def _client_detail(exc: BaseException) -> str:
    """What went wrong, for the client, without the upstream's host and port (the log has them):
    aiohttp's connect errors read ``Cannot connect to host 10.0.3.7:443 ssl:default [...]``, its
    response errors end in ``url='http://10.0.3.7:443/v1/messages'``."""
    cause: BaseException | None = exc
    for _ in range(5):  # httpx wraps the socket's OSError in its own errors
        if cause is None:
            break
        os_error = cause.os_error if isinstance(cause, aiohttp.ClientConnectorError) else cause
        if isinstance(os_error, OSError) and os_error.errno:
            return os.strerror(os_error.errno)  # the event loop's own strerror may quote the address
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed"
    if isinstance(exc, aiohttp.ClientResponseError):  # e.g. a header too large, too many headers
        detail = _QUOTED_BYTES.sub("", exc.message).rstrip(". ") or "malformed response"
    else:
        detail = str(exc) or type(exc).__name__
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"


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
        return StreamScrubber(self._secret_bytes)


class StreamScrubber:
    """`Scrubber.scrub` over a body that arrives in chunks: a key cut by a chunk boundary is still
    found. The end of a chunk that could be the start of a key is held back until the next chunk
    (or the end); a chunk ending an SSE event ends in a blank line, so no event is delayed."""

    __slots__ = ("_held", "_key_bytes", "_secrets")

    def __init__(self, secrets: list[bytes]) -> None:
        self._secrets = secrets
        # A chunk whose last byte occurs in no key cannot end with the start of one: the usual case
        # (an SSE chunk ends with a newline), decided without searching.
        self._key_bytes = frozenset(b"".join(secrets))
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

    @property
    def request_id(self) -> str | None:
        return _safe_request_id(self.headers)


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


def _too_large(max_bytes: int) -> UpstreamRejected:
    refusal = UpstreamRejected(f"the upstream API's reply is over upstream.max_response_bytes ({max_bytes} bytes)")
    log.warning("upstream reply refused: %s", refusal.message)
    return refusal


class _Retry(Exception):
    """One attempt failed in a way worth retrying after ``wait`` seconds (None: exponential backoff).

    ``final`` is what the client gets if no retry follows: the last error reply, or an error."""

    def __init__(self, final: UpstreamReply | ProxyError, wait: float | None = None) -> None:
        super().__init__("retry")
        self.final = final
        self.wait = wait


Attempt = Callable[[UpstreamKey], Awaitable[_R]]


class Upstream:
    """A pooled HTTP client for the Messages API with a key pool, timeouts, retries and a bound
    on calls in flight."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = up = settings.upstream
        configured = [UpstreamKey(k.secret(), k.weight) for k in settings.anthropic_api_key]
        # The simulator needs no key; it still gets one so every request looks like a real one.
        self.keys = KeyPool(configured or [UpstreamKey("simulator-key", label="simulator")], clock=clock)
        self.scrubber = Scrubber([k.secret for k in configured], settings.anthropic_base_url)
        self.in_flight = 0
        self._sleep = sleep or asyncio.sleep
        self._clock = clock
        # One shared pool, sized from the in-flight bound so that admitted calls never queue for a connection.
        if transport is None and up.transport == "aiohttp":
            self._backend: _Backend = _AiohttpBackend(settings)
        elif transport is None and up.transport == "httpx2":  # the settings refuse it when httpx2 is missing
            self._backend = _HttpxBackend(settings, None, module=httpx2)
        else:
            self._backend = _HttpxBackend(settings, transport)

    async def aclose(self) -> None:
        await self._backend.aclose()

    # --- public calls ----------------------------------------------------------------

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        """Send one request, retrying retryable failures; the final reply may still be an error.
        ``headers`` adds request headers (a native client's ``anthropic-beta``); never credentials."""

        async def attempt(key: UpstreamKey) -> UpstreamReply:
            stream = await self._open(method, path, body, key, headers)
            try:
                payload = await stream.read_whole(self.config.max_response_bytes)
            except UpstreamRejected:
                raise  # the same request would get the same reply: not retried
            except ProxyError as exc:
                raise _Retry(exc) from exc
            finally:
                await stream.aclose()
            return self._judge(UpstreamReply(stream.status, stream.headers, payload), key)

        with self._admitted():
            return await self._with_retries(attempt)

    async def open_stream(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> UpstreamStream | UpstreamReply:
        """Open a streaming request. A successful open returns the live stream, whose first event
        has been checked: an ``error`` event before anything reached the client is retried like an
        error status. An error that survives the retries returns as an ``UpstreamReply``."""

        async def attempt(key: UpstreamKey) -> UpstreamStream | UpstreamReply:
            stream = await self._open("POST", path, body, key, headers)
            try:
                if stream.status == 200:
                    first = await stream.first_event()
                    if first is None or first[0] != "error":
                        return stream
                    reply = UpstreamReply(_status_of_event(first[1]), stream.headers, first[1])
                else:
                    reply = UpstreamReply(stream.status, stream.headers, await stream.read(MAX_ERROR_BODY))
            except UpstreamRejected:
                await stream.aclose()
                raise
            except ProxyError as exc:
                await stream.aclose()
                raise _Retry(exc) from exc
            except BaseException:
                await stream.aclose()
                raise
            await stream.aclose()
            return self._judge(reply, key)

        with self._admitted() as release:
            result = await self._with_retries(attempt)
            if isinstance(result, UpstreamStream):
                # The stream outlives this call: its slot is released when the stream is closed.
                result._on_close = release.hand_over()
            return result

    # --- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[_Slot]:
        """Load shedding: beyond the in-flight bound, answer at once rather than queue without limit."""
        if self.in_flight >= self.config.max_in_flight:
            raise ServiceUnavailable(
                "The gateway is at capacity; retry shortly.", code="gateway_overloaded", headers={"retry-after": "1"}
            )
        self.in_flight += 1
        slot = _Slot(self)
        try:
            yield slot
        finally:
            slot.release_unless_handed_over()

    async def _open(
        self, method: str, path: str, body: bytes | None, key: UpstreamKey, headers: Mapping[str, str] | None = None
    ) -> UpstreamStream:
        metrics.series(metrics.UPSTREAM_ATTEMPTS, path.partition("?")[0]).inc()
        sent = {**headers, "x-api-key": key.secret} if headers else {"x-api-key": key.secret}
        try:
            async with asyncio.timeout(self.config.first_byte_timeout):
                status, response_headers, chunks, close = await self._backend.open(method, path, body, sent)
        except _TRANSPORT_EXCEPTIONS as exc:
            raise _Retry(map_transport_error(exc, self.scrubber)) from exc
        refusal = _refusal(status, response_headers)
        if refusal is not None:
            await close()  # unread: the connection is dropped, not reused
            log.warning("upstream reply refused: %s", self.scrubber.secrets(refusal.message))
            raise refusal
        return UpstreamStream(
            status,
            self._sane_retry_hints(response_headers),
            chunks,
            close,
            self.config.idle_timeout,
            self.scrubber,
            self.config.max_event_bytes,
        )

    def _sane_retry_hints(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """``headers`` with their retry hints, if any, rewritten by the one parser: finite, at most
        ``max_retry_hint``, in seconds and milliseconds. Whoever reads them next (the retry waits,
        the key pool, the client's Retry-After, the native routes' passthrough) sees sane values."""
        if "retry-after" not in headers and "retry-after-ms" not in headers:
            return headers
        hint = retry_after_seconds(headers, limit=self.config.max_retry_hint)
        sane = httpx.Headers(headers)
        for name in ("retry-after", "retry-after-ms"):
            sane.pop(name, None)
        if hint is not None:
            sane["retry-after"] = str(math.ceil(hint))
            sane["retry-after-ms"] = str(round(hint * 1000))
        return sane

    def _judge(self, reply: UpstreamReply, key: UpstreamKey) -> UpstreamReply:
        """Decide what an error reply means for the key pool and whether to try again."""
        if reply.status < 400:
            return reply
        should_retry = reply.headers.get("x-should-retry")
        if should_retry == "false":
            return reply
        hinted = retry_after_seconds(reply.headers, limit=self.config.max_retry_hint)
        if reply.status == 401:
            self.keys.disable(key)
            if self.keys.any_enabled():
                raise _Retry(reply, wait=0.0)
            return reply
        if reply.status == 429:
            self.keys.rest(key, hinted if hinted is not None else 1.0)
            # Another key may serve at once; otherwise wait for the first key to wake.
            raise _Retry(reply, wait=self.keys.retry_in() or 0.0)
        if reply.status in RETRYABLE_STATUS or should_retry == "true":
            raise _Retry(reply, wait=hinted)
        return reply

    async def _with_retries(self, attempt: Attempt[_R]) -> _R:
        """Run ``attempt``, retrying retryable failures (``_retry``), all within ``request_timeout``."""
        up = self.config
        started = self._clock()
        try:
            async with asyncio.timeout(up.request_timeout):
                try:
                    # Most calls succeed at once, and setting tenacity up costs more than the rest of
                    # this call's bookkeeping: the first attempt runs bare; tenacity takes over on a failure.
                    result = await attempt(self._acquire_key())
                except _Retry as failure:
                    result = await self._retry(attempt, failure, started)
        except TimeoutError:
            raise UpstreamTimeout(f"No upstream answer within {up.request_timeout:g}s.") from None
        result.elapsed = self._clock() - started
        return result

    async def _retry(self, attempt: Attempt[_R], failed: _Retry, started: float) -> _R:
        """The attempts after a failed first one, under tenacity: bounded attempts, and no sleep that
        would outlast the retry deadline or the longest retry-after we honour (that is answered at
        once instead). The final reply may still be an error."""
        up = self.config

        def wait(state: RetryCallState) -> float:
            planned = _failure(state).wait
            if planned is None:  # exponential backoff with full jitter
                planned = random.random() * min(up.max_backoff, 0.5 * 2 ** (state.attempt_number - 1))
            return planned

        def stop(state: RetryCallState) -> bool:
            sleep = state.upcoming_sleep  # tenacity computes the wait before asking whether to stop
            time_left = up.retry_deadline - (self._clock() - started)
            return state.attempt_number >= up.max_attempts or sleep > min(time_left, up.max_retry_after)

        def count_retry(state: RetryCallState) -> None:
            metrics.series(metrics.UPSTREAM_RETRIES, _retry_reason(_failure(state).final)).inc()

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception_type(_Retry),
            sleep=self._sleep,
            before_sleep=count_retry,
            reraise=True,
        )
        try:
            async for attempt_state in retrying:
                with attempt_state:
                    number = attempt_state.retry_state.attempt_number
                    if number == 1:
                        raise failed  # tenacity's attempt 1 is the one already made: its failure decides what follows
                    result = await attempt(self._acquire_key())
                    result.attempts = number
                    return result
        except _Retry as exhausted:
            if isinstance(exhausted.final, ProxyError):
                raise exhausted.final from None
            exhausted.final.attempts = retrying.statistics.get("attempt_number", 1)
            return exhausted.final  # type: ignore[return-value]  # an error reply, which every _R admits
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _acquire_key(self) -> UpstreamKey:
        try:
            return self.keys.acquire()
        except NoKeyAvailable as none:
            if none.retry_in is None:
                raise UpstreamAuthFailed(
                    "The gateway's upstream credentials were rejected; the operator has been alerted."
                ) from None
            error = RateLimited(
                "Every upstream key is rate-limited; retry after the indicated time.",
                headers={"retry-after": str(max(1, math.ceil(none.retry_in)))},
            )
            raise _Retry(error, wait=none.retry_in) from None


class _Slot:
    """One admitted in-flight call; released exactly once, by this call or by the stream it opened."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._handed_over = False
        self._released = False

    def hand_over(self) -> Callable[[], None]:
        self._handed_over = True
        return self._release

    def release_unless_handed_over(self) -> None:
        if not self._handed_over:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._upstream.in_flight -= 1


Opened = tuple[int, Mapping[str, str], AsyncIterator[bytes], Callable[[], Awaitable[None]]]
# Request headers every backend sends: bodies uncompressed, so that their size is known as they arrive.
UNENCODED = {"accept-encoding": "identity", "content-type": "application/json"}


class _Backend(Protocol):
    """The HTTP client under ``Upstream``: open a request, get status, headers, body chunks, close."""

    async def open(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Opened: ...

    async def aclose(self) -> None: ...


class _AiohttpBackend:
    """aiohttp's client, used directly: its pool does not contend under concurrency as httpx's does
    (encode/httpx#3215), and without httpx's layers on top it costs far less per request
    (see bench/README.md for the comparison)."""

    def __init__(self, settings: Settings) -> None:
        up = settings.upstream
        self._base = settings.anthropic_base_url.rstrip("/")
        self._default_headers = {**UNENCODED, "anthropic-version": settings.anthropic_version}
        self._limit = up.max_in_flight
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=up.connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}  # the few paths called, parsed once

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30.0, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._default_headers,
                # Bodies are asked for uncompressed (UNENCODED) and an encoded one is refused, so
                # nothing decompresses a small body into a huge one. aiohttp's own header bounds
                # (max_line_size, max_field_size, max_headers) stay at their defaults.
                auto_decompress=False,
                # One upstream session serves every client: cookies the upstream sets (a load
                # balancer's, say) must not be kept and replayed for everyone. Not keeping a jar also
                # saves a quarter of aiohttp's time per request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _url(self, path: str) -> yarl.URL:
        url = self._urls.get(path)
        if url is None:
            url = yarl.URL(self._base + path)
            if len(self._urls) < 64:  # paths are the gateway's own; the bound is only a guard
                self._urls[path] = url
        return url

    async def open(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Opened:
        # Never follow a redirect: it would re-send the key and the prompt to another host.
        response = await self._client().request(
            method, self._url(path), data=body, headers=headers, allow_redirects=False
        )

        async def close() -> None:
            # A body read to its end returns the connection to the pool; a partial one must not be reused.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

        return response.status, response.headers, response.content.iter_any(), close

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _HttpxBackend:
    """httpx's client: for an injected transport (tests, the in-process simulator) or by choice;
    with ``module=httpx2``, its successor (the same API), by choice."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None, module: Any = httpx) -> None:
        up = settings.upstream
        limits = module.Limits(
            max_connections=up.max_in_flight, max_keepalive_connections=up.max_in_flight, keepalive_expiry=30.0
        )
        self._client = module.AsyncClient(
            base_url=settings.anthropic_base_url,
            transport=transport,
            # Reads are bounded by our own first-byte and idle timeouts, which httpx cannot tell apart.
            timeout=module.Timeout(connect=up.connect_timeout, read=None, write=up.idle_timeout, pool=None),
            limits=limits,
            headers={**UNENCODED, "anthropic-version": settings.anthropic_version},
            follow_redirects=False,  # a redirect would re-send the key and the prompt to another host
        )

    async def open(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Opened:
        request = self._client.build_request(method, path, content=body, headers=headers)
        response = await self._client.send(request, stream=True, follow_redirects=False)
        # An encoded body is refused before it is read (`_refusal`), so no decoder ever runs here.
        return response.status_code, response.headers, response.aiter_bytes(), response.aclose

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_reason(final: UpstreamReply | ProxyError) -> str:
    if isinstance(final, UpstreamReply):
        return str(final.status)
    if isinstance(final, UpstreamTimeout):
        return "timeout"
    if isinstance(final, UpstreamUnavailable):
        return "connect"
    if isinstance(final, RateLimited):
        return "keys_resting"
    return "transport"


def _failure(state: RetryCallState) -> _Retry:
    exc = state.outcome.exception() if state.outcome else None
    assert isinstance(exc, _Retry)
    return exc


def _status_of_event(data: bytes) -> int:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 500
    return status_of_error_event(parsed) if isinstance(parsed, dict) else 500


def _refusal(status: int, headers: Mapping[str, str]) -> UpstreamRejected | None:
    """Why a reply is refused as it opens, if it is: a redirect (following it would send the key
    and the prompt to wherever it points, and serve that host's answer as Claude's), or a body
    encoded although the gateway asked for none (its decoded size would be unbounded)."""
    if 300 <= status < 400:
        return UpstreamRejected(f"the upstream API answered with a redirect (HTTP {status}), which is not followed")
    if "content-encoding" not in headers:  # the usual case, decided with one lookup
        return None
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return UpstreamRejected(
            f"the upstream API sent a {encoding[:20]}-encoded body; the gateway accepts only uncompressed ones"
        )
    return None


class InProcessTransport(httpx.AsyncBaseTransport):
    """Serves requests from an ASGI app in this process, streaming its body as it is produced.

    httpx's own ``ASGITransport`` collects the whole body before returning, which would turn the
    built-in simulator's streams into one burst; this one hands over each body message at once.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        messages: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        disconnected = asyncio.Event()
        request_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await messages.put(message)

        async def run() -> None:
            try:
                await self._app(_asgi_scope(request), receive, send)
            except BaseException as exc:  # handed to the reader, which re-raises it as a transport error
                await messages.put(exc)
                return
            await messages.put(None)

        task = asyncio.create_task(run())
        try:
            start = await messages.get()
        except BaseException:
            # Cancelled while waiting for headers (a timeout, a client gone): the app goes too.
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if not isinstance(start, dict) or start.get("type") != "http.response.start":
            task.cancel()
            raise httpx.RemoteProtocolError("in-process app ended without a response", request=request)
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]  # as sent: httpx decodes them
        stream = _QueueStream(messages, task, disconnected, request)
        return httpx.Response(start["status"], headers=headers, stream=stream, request=request)


class _QueueStream(httpx.AsyncByteStream):
    def __init__(
        self,
        messages: asyncio.Queue[dict[str, Any] | BaseException | None],
        task: asyncio.Task[None],
        disconnected: asyncio.Event,
        request: httpx.Request,
    ) -> None:
        self._messages = messages
        self._task = task
        self._disconnected = disconnected
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._messages.get()
            if message is None:
                return
            if isinstance(message, BaseException):
                raise httpx.ReadError(f"in-process app failed: {message!r}", request=self._request)
            if message.get("type") != "http.response.body":
                continue
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def aclose(self) -> None:
        self._disconnected.set()
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def _asgi_scope(request: httpx.Request) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.url.scheme,
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?")[0],
        "query_string": request.url.query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "client": ("127.0.0.1", 0),
        "server": (request.url.host, request.url.port or 80),
    }
