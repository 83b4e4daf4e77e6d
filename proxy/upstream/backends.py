"""The HTTP clients under ``Upstream`` and what their failures mean.

Three backends behind one small protocol (``_Backend``: open a request, get status, headers and
body chunks, close): aiohttp's client (the default), httpx's (for an injected transport, such as
the in-process simulator's, or by choice) and httpx2's (httpx's successor, by choice). Every one
asks for uncompressed bodies and never follows a redirect.

Transport failures never leave the package as httpx or aiohttp exceptions: ``_TRANSPORT_ERRORS``
maps them to the gateway's own errors (see ``proxy/errors.py``), in the manner of httpx's own
exception map, and ``map_transport_error`` applies it, keeping the upstream's address and keys out
of what the client is told.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import httpx
import yarl

from proxy.config import Settings
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from proxy.upstream.scrub import Scrubber

log = logging.getLogger("proxy.upstream")

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
