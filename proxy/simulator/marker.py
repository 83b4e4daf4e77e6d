"""The response header that tells clients a gateway's answers come from the built-in simulator.

A gateway without an upstream key answers from the simulator with status 200, like Claude would; a
client (or a monitor) cannot tell from the body. This wraps the whole ASGI app, outside starlette's
own error middleware, so every response carries the header: completions, errors, 500s, probes.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SIMULATOR_HEADER = "x-claude-proxy-simulator"
_HEADER = (SIMULATOR_HEADER.encode(), b"1")


class MarkSimulatorAnswers:
    """ASGI middleware adding ``x-claude-proxy-simulator: 1`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan passes through untouched
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _HEADER]}
            await send(message)

        await self.app(scope, receive, send_marked)
