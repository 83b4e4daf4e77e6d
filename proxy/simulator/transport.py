"""An httpx transport that serves requests from an ASGI app in this process.

The gateway runs the built-in simulator through it when no upstream key is set, and the tests run
their fake upstreams through it; unlike httpx's ``ASGITransport``, it streams a body as it is produced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx


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
