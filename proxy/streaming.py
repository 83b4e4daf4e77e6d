"""The streamed response for SSE: Starlette's `StreamingResponse`, run with plain asyncio tasks.

Starlette streams a body in an anyio task group beside a task that waits for the client's
disconnect (uvicorn drops writes to a closed connection silently, so only `receive` tells). The
task group and its cancel scopes cost about 100 µs per stream, which a stream's first byte waits
for; two asyncio tasks do the same job. Behaviour is Starlette's: when the client leaves, the body
is cancelled where it waits, so its `finally` closes the upstream call and settles the usage.
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = asyncio.ensure_future(self.stream_response(send))
        disconnected = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((body, disconnected), return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected.cancel()
            if not body.done():
                body.cancel()  # the client left (or this task is being cancelled)
                await asyncio.wait((body,))  # its cleanup runs now; our own cancellation still propagates
        if not body.cancelled():
            body.result()  # what the body raised, raised here as Starlette would
