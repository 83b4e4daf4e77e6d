"""The one place that talks HTTP to Anthropic.

Everything network-shaped lives here: the connection pool, the upstream keys, timeouts and
retries. The rest of the gateway sees two calls:

    await upstream.request(method, path, body)   -> UpstreamReply (status, headers, body bytes)
    await upstream.open_stream(path, body)        -> UpstreamStream (status, headers, async bytes)

Transport failures never leave this module as httpx exceptions: ``_TRANSPORT_ERRORS`` maps them
to the gateway's own errors (see ``proxy/errors.py``), in the manner of httpx's own exception map.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
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
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.keypool import KeyPool, NoKeyAvailable, UpstreamKey
from proxy.sse import SSEDecoder
from proxy.translate.errors import status_of_error_event

log = logging.getLogger("proxy.upstream")

_R = TypeVar("_R", bound="UpstreamReply | UpstreamStream")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})
# An error body is read only to tell the client what went wrong; cap it so a huge HTML page cannot.
MAX_ERROR_BODY = 64 * 1024

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


def map_transport_error(exc: BaseException) -> ProxyError:
    for exc_type, make in _TRANSPORT_ERRORS:
        if isinstance(exc, exc_type):
            log.warning("upstream transport error: %s: %s", type(exc).__name__, exc)
            return make("" if exc_type is TimeoutError else _client_detail(exc))
    raise exc


def _client_detail(exc: BaseException) -> str:
    """What went wrong, for the client, without the upstream's host and port (the log has them):
    aiohttp's connect errors read ``Cannot connect to host 10.0.3.7:443 ssl:default [...]``."""
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
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class UpstreamReply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float = 0.0
    attempts: int = 1

    @property
    def request_id(self) -> str | None:
        return self.headers.get("request-id")


@dataclass(slots=True)
class UpstreamStream:
    """An open upstream response whose body has not been read yet; close it when done."""

    status: int
    headers: Mapping[str, str]
    _chunks: AsyncIterator[bytes]
    _close: Callable[[], Awaitable[None]]
    _idle_timeout: float
    _on_close: Callable[[], None] | None = None
    _prefix: list[bytes] = field(default_factory=list)
    elapsed: float = 0.0
    attempts: int = 1
    _closed: bool = False

    @property
    def request_id(self) -> str | None:
        return self.headers.get("request-id")

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; a read that stalls longer than the idle timeout fails."""
        while self._prefix:
            yield self._prefix.pop(0)
        while (chunk := await self._next_chunk()) is not None:
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)

    async def first_event(self, limit: int = MAX_ERROR_BODY) -> tuple[str, bytes] | None:
        """Read up to the first complete SSE event, keeping the bytes read for ``iter_bytes``."""
        decoder = SSEDecoder()
        size = 0
        while size < limit and (chunk := await self._next_chunk()) is not None:
            self._prefix.append(chunk)
            size += len(chunk)
            events = decoder.feed(chunk)
            if events:
                return events[0]
        return None

    async def _next_chunk(self) -> bytes | None:
        try:
            async with asyncio.timeout(self._idle_timeout):
                return await anext(self._chunks)
        except StopAsyncIteration:
            return None
        except _TRANSPORT_EXCEPTIONS as exc:
            raise map_transport_error(exc) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._close()
            finally:
                if self._on_close:
                    self._on_close()


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
                payload = await stream.read()
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
            raise _Retry(map_transport_error(exc)) from exc
        return UpstreamStream(status, response_headers, chunks, close, self.config.idle_timeout)

    def _judge(self, reply: UpstreamReply, key: UpstreamKey) -> UpstreamReply:
        """Decide what an error reply means for the key pool and whether to try again."""
        if reply.status < 400:
            return reply
        should_retry = reply.headers.get("x-should-retry")
        if should_retry == "false":
            return reply
        hinted = retry_after_seconds(reply.headers)
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
        self._default_headers = {"anthropic-version": settings.anthropic_version, "content-type": "application/json"}
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
                auto_decompress=True,
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
        response = await self._client().request(method, self._url(path), data=body, headers=headers)

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
            headers={"anthropic-version": settings.anthropic_version, "content-type": "application/json"},
        )

    async def open(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Opened:
        request = self._client.build_request(method, path, content=body, headers=headers)
        response = await self._client.send(request, stream=True)
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


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asked us to wait, from ``retry-after-ms`` or ``retry-after``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            return None
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
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
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
