"""The streamed response for SSE: Starlette's `StreamingResponse`, run with plain asyncio tasks,
and the owner of what its request took until the last byte.

Starlette streams a body in an anyio task group beside a task that waits for the client's
disconnect. The task group and its cancel scopes cost about 100 µs per stream, which a stream's
first byte waits for; `proxy.disconnect.until_disconnect` does the same job with two asyncio
tasks. Behaviour is Starlette's: when the client leaves, the body is cancelled where it waits.

A streamed request outlives its handler, so the handler hands over what it took (the upstream
responses it opened, the key's token reservation, the usage to record) as an `AsyncExitStack`
with `adopt`. The response releases it when it ends, however it ends: finished, failed, client
gone, cancelled, or never started at all. A body generator's own ``finally`` cannot promise that:
a generator that never started, or that was left suspended at a ``yield``, runs it only when the
garbage collector gets to it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy import metrics
from proxy.disconnect import ClientGone, until_disconnect


class EventStreamResponse(StreamingResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = contextlib.AsyncExitStack()

    def adopt(self, owner: contextlib.AsyncExitStack) -> None:
        """Release ``owner`` (callbacks run last-in, first-out) when this response ends."""
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.STREAMS_OPEN.inc()
        try:
            with contextlib.suppress(ClientGone):  # nobody is left to tell
                await until_disconnect(receive, self.stream_response(send))
        finally:
            metrics.STREAMS_OPEN.dec()
            try:
                await self._close_body()
            finally:
                await self._owner.aclose()

    async def _close_body(self) -> None:
        # The body's own cleanup (tasks it started) runs now, wherever it stopped.
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:
            await close()
