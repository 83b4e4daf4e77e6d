"""``Upstream``: the client the rest of the gateway calls, and what it makes of each reply.

It admits a call (load shedding: at most ``upstream.max_in_flight`` calls in flight, a stream
holding its ``_Slot`` until closed), picks a key from the pool, opens the request on the backend
within the first-byte timeout, refuses a redirect or an encoded body as it opens (``_refusal``),
rewrites retry hints once by the one parser, and judges an error reply (``_judge``): what it means
for the key pool (a 401 disables the key, a 429 rests it) and whether it is worth another attempt,
which ``proxy.upstream.retry`` then runs, all within ``upstream.request_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import httpx
import orjson

from proxy import metrics
from proxy.config import Settings
from proxy.errors import (
    ProxyError,
    RateLimited,
    ServiceUnavailable,
    UpstreamRejected,
    UpstreamTimeout,
    upstream_credentials_refused,
)
from proxy.translate.errors import retry_after_seconds, status_of_error_event
from proxy.upstream.backends import (
    _TRANSPORT_EXCEPTIONS,
    _AiohttpBackend,
    _Backend,
    _HttpxBackend,
    httpx2,
    map_transport_error,
)
from proxy.upstream.keypool import KeyPool, NoKeyAvailable, UpstreamKey
from proxy.upstream.reply import MAX_ERROR_BODY, UpstreamReply, UpstreamStream
from proxy.upstream.retry import _R, RETRYABLE_STATUS, Attempt, _Retry, retry_after_failure
from proxy.upstream.scrub import Scrubber

if TYPE_CHECKING:
    from proxy.tracing.spans import AttemptTrace, RequestTrace

log = logging.getLogger("proxy.upstream")


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
        self.base_url = settings.anthropic_base_url
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
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        trace: RequestTrace | None = None,
    ) -> UpstreamReply:
        """Send one request, retrying retryable failures; the final reply may still be an error.
        ``headers`` adds request headers (a native client's ``anthropic-beta``); never credentials.
        ``trace``: the request's trace, which gets a span per attempt."""

        async def attempt(key: UpstreamKey, span: AttemptTrace | None = None) -> UpstreamReply:
            stream = await self._open(method, path, body, key, headers, span)
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
            return await self._with_retries(attempt if trace is None else self._traced(attempt, trace, method, path))

    async def open_stream(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None, *, trace: RequestTrace | None = None
    ) -> UpstreamStream | UpstreamReply:
        """Open a streaming request. A successful open returns the live stream, whose first event
        has been checked: an ``error`` event before anything reached the client is retried like an
        error status. An error that survives the retries returns as an ``UpstreamReply``."""

        async def attempt(key: UpstreamKey, span: AttemptTrace | None = None) -> UpstreamStream | UpstreamReply:
            stream = await self._open("POST", path, body, key, headers, span)
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
            result = await self._with_retries(attempt if trace is None else self._traced(attempt, trace, "POST", path))
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

    def _traced(
        self, attempt: Callable[[UpstreamKey, AttemptTrace], Awaitable[_R]], trace: RequestTrace, method: str, path: str
    ) -> Attempt[_R]:
        """``attempt``, each call in a CLIENT span of its own (numbered: retries are visible). A
        stream that opens keeps its span until it is closed."""
        number = 0

        async def traced(key: UpstreamKey) -> _R:
            nonlocal number
            number += 1
            span = trace.attempt(number, key.label, method, self.base_url, path)
            try:
                result = await attempt(key, span)
            except _Retry as retry:
                if isinstance(retry.final, ProxyError):
                    span.failed(retry.final.type, retry.final.message)
                else:
                    span.replied(retry.final.status, retry.final.request_id)
                span.end()
                raise
            except ProxyError as error:
                span.failed(error.type, error.message)
                span.end()
                raise
            except BaseException as error:  # cancelled (the client left, the deadline passed), or a bug
                span.failed("cancelled" if not isinstance(error, Exception) else type(error).__qualname__, repr(error))
                span.end()
                raise
            span.replied(result.status, result.request_id)
            if isinstance(result, UpstreamStream):
                result._trace = span  # ended when the stream is closed
            else:
                span.end()
            return result

        return traced

    async def _open(
        self,
        method: str,
        path: str,
        body: bytes | None,
        key: UpstreamKey,
        headers: Mapping[str, str] | None = None,
        span: AttemptTrace | None = None,
    ) -> UpstreamStream:
        metrics.series(metrics.UPSTREAM_ATTEMPTS, path.partition("?")[0]).inc()
        sent = {**headers, "x-api-key": key.secret} if headers else {"x-api-key": key.secret}
        if span is not None and span.traceparent is not None:  # the trace goes on upstream, and only that
            sent["traceparent"] = span.traceparent
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
        """Run ``attempt``, retrying retryable failures (``retry_after_failure``), all within
        ``request_timeout``."""
        up = self.config
        started = self._clock()
        try:
            async with asyncio.timeout(up.request_timeout):
                try:
                    # Most calls succeed at once, and setting tenacity up costs more than the rest of
                    # this call's bookkeeping: the first attempt runs bare; tenacity takes over on a failure.
                    result = await attempt(self._acquire_key())
                except _Retry as failure:
                    result = await retry_after_failure(
                        attempt,
                        failure,
                        started,
                        config=up,
                        acquire=self._acquire_key,
                        clock=self._clock,
                        sleep=self._sleep,
                    )
        except TimeoutError:
            raise UpstreamTimeout(f"No upstream answer within {up.request_timeout:g}s.") from None
        result.elapsed = self._clock() - started
        return result

    def _acquire_key(self) -> UpstreamKey:
        try:
            return self.keys.acquire()
        except NoKeyAvailable as none:
            if none.retry_in is None:
                raise upstream_credentials_refused() from None
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
