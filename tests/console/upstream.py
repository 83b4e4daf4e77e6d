"""A fake Anthropic API for the console's browser tests: the built-in simulator, except that an
upstream key ending in ``REST`` is always rate-limited for an hour, so the gateway rests it.

Run as ``python -m tests.console.upstream PORT``.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from proxy.simulator import create_app

RATE_LIMITED_SUFFIX = b"REST"
simulator = create_app()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/v1/messages":
        key = dict(scope["headers"]).get(b"x-api-key", b"")
        if key.endswith(RATE_LIMITED_SUFFIX):
            body = orjson.dumps(
                {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down (test)."}}
            )
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"3600")]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
    await simulator(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
