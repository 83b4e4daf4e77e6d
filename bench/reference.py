"""A calibration point, not a product: the least a Python gateway on claude-proxy's stack can do.

Starlette on uvicorn (uvloop + httptools, no access log) — the server claude-proxy runs on — with
one ``aiohttp.ClientSession`` to the upstream: parse the OpenAI request, send a Messages request,
parse the reply, answer in OpenAI's shape. No auth, retries, timeouts, logging or metrics. What it
reaches on c1 and c32 is roughly the most claude-proxy could reach on this machine without leaving
this stack (``python -m bench --reference``).

Run: ``python -m bench.reference --port P --upstream U`` (non-streaming only).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app(upstream: str) -> Starlette:
    session: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        session["upstream"] = aiohttp.ClientSession(upstream, connector=aiohttp.TCPConnector(limit=1024))
        try:
            yield
        finally:
            await session["upstream"].close()

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        payload = {"model": body["model"], "max_tokens": body.get("max_tokens", 1024), "messages": body["messages"]}
        headers = {"content-type": "application/json", "x-api-key": "anything", "anthropic-version": "2023-06-01"}
        async with session["upstream"].post("/v1/messages", data=orjson.dumps(payload), headers=headers) as reply:
            message: dict[str, Any] = orjson.loads(await reply.read())
        text = "".join(block["text"] for block in message["content"] if block["type"] == "text")
        usage = message["usage"]
        completion = {
            "id": "chatcmpl-" + message["id"],
            "object": "chat.completion",
            "created": 0,
            "model": message["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"},
            ],
            "usage": {
                "prompt_tokens": usage["input_tokens"],
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            },
        }
        return Response(orjson.dumps(completion), media_type="application/json")

    routes = [Route("/healthz", healthz), Route("/v1/chat/completions", chat, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal aiohttp forwarder (benchmark calibration)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the Messages API, on loopback")
    args = parser.parse_args()
    app = create_app(args.upstream)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
