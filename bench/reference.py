"""A calibration point, not a product: the least a Python gateway on claude-proxy's stack can do.

Starlette on uvicorn (uvloop + httptools, no access log) — the server claude-proxy runs on — with
one ``aiohttp.ClientSession`` to the upstream. No auth, retries, timeouts, logging or metrics.

* ``POST /v1/chat/completions`` and ``POST /v1/responses`` without ``stream``: parse the request,
  send a Messages request, parse the reply, answer in the client's shape (a minimal
  ``chat.completion`` or ``response`` object) — the bare forwarder.
* either path with ``"stream": true``: send the Messages request with ``stream: true`` and pass the
  upstream's SSE bytes through untranslated, chunk by chunk as they arrive, with raw ASGI sends (no
  task group, no disconnect watch) — the bare stream relay. Streams are not translated, so the
  relay is the floor of what relaying costs, for chat and Responses alike.

What it reaches is roughly the most claude-proxy could reach on this machine without leaving this
stack. Run: ``python -m bench.reference --port P --upstream U``.
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
from starlette.types import Receive, Scope, Send

UPSTREAM_HEADERS = {"content-type": "application/json", "x-api-key": "anything", "anthropic-version": "2023-06-01"}
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class Relay(Response):
    """The upstream's stream, byte for byte: each chunk aiohttp hands over is one ASGI send."""

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self.reply = reply
        self.status_code = reply.status
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": SSE_HEADERS})
            async for chunk in self.reply.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.reply.release()


def completion(message: dict[str, Any]) -> dict[str, Any]:
    usage = message["usage"]
    return {
        "id": "chatcmpl-" + message["id"],
        "object": "chat.completion",
        "created": 0,
        "model": message["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(message)}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        },
    }


def response_object(message: dict[str, Any]) -> dict[str, Any]:
    usage = message["usage"]
    return {
        "id": "resp_" + message["id"],
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": message["model"],
        "output": [
            {
                "type": "message",
                "id": "msg_" + message["id"],
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": _text(message), "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        },
    }


def _text(message: dict[str, Any]) -> str:
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


def create_app(upstream: str) -> Starlette:
    session: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)  # no pool cap: open10000-sized loads too
        session["upstream"] = aiohttp.ClientSession(upstream, connector=connector)
        try:
            yield
        finally:
            await session["upstream"].close()

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def forward(payload: dict[str, Any], stream: bool) -> Response | dict[str, Any]:
        if stream:
            payload["stream"] = True
            reply = await session["upstream"].post("/v1/messages", data=orjson.dumps(payload), headers=UPSTREAM_HEADERS)
            return Relay(reply)
        async with session["upstream"].post(
            "/v1/messages", data=orjson.dumps(payload), headers=UPSTREAM_HEADERS
        ) as reply:
            message: dict[str, Any] = orjson.loads(await reply.read())
        return message

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        payload = {"model": body["model"], "max_tokens": body.get("max_tokens", 1024), "messages": body["messages"]}
        answer = await forward(payload, bool(body.get("stream")))
        if isinstance(answer, Response):
            return answer
        return Response(orjson.dumps(completion(answer)), media_type="application/json")

    async def responses(request: Request) -> Response:
        body = orjson.loads(await request.body())
        messages = [{"role": "user", "content": body["input"]}]  # the bench sends `input` as one string
        payload = {"model": body["model"], "max_tokens": body.get("max_output_tokens", 1024), "messages": messages}
        answer = await forward(payload, bool(body.get("stream")))
        if isinstance(answer, Response):
            return answer
        return Response(orjson.dumps(response_object(answer)), media_type="application/json")

    routes = [
        Route("/healthz", healthz),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal aiohttp forwarder and stream relay (benchmark calibration)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the Messages API, on loopback")
    args = parser.parse_args()
    app = create_app(args.upstream)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
