"""The streamed response for SSE: Starlette's `StreamingResponse`, run with plain asyncio tasks.

Starlette streams a body in an anyio task group beside a task that waits for the client's
disconnect. The task group and its cancel scopes cost about 100 µs per stream, which a stream's
first byte waits for; `proxy.disconnect.until_disconnect` does the same job with two asyncio
tasks. Behaviour is Starlette's: when the client leaves, the body is cancelled where it waits, so
its `finally` closes the upstream call and settles the usage.
"""

from __future__ import annotations

import contextlib

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.disconnect import ClientGone, until_disconnect


class EventStreamResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ClientGone):  # nobody is left to tell
            await until_disconnect(receive, self.stream_response(send))
