"""Running the gateway under uvicorn, with a graceful drain on SIGTERM.

On the first SIGTERM (or SIGINT) a worker starts draining: ``/readyz`` answers 503 at once while the
server still accepts for ``shutdown.drain_delay`` seconds, so a load balancer or Kubernetes stops
sending traffic; then uvicorn stops accepting and gives in-flight requests and streams up to
``shutdown.grace_period`` seconds to finish before closing. A second signal stops at once.

The drain is installed from the app's lifespan, in each worker, by wrapping the handler uvicorn has
just installed: it works the same with one worker or many (where the supervisor relays SIGTERM).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from proxy.config import Settings
from proxy.errors import InvalidRequest
from proxy.lifecycle import LIFECYCLE

log = logging.getLogger("proxy.server")

Handler = Callable[[int, FrameType | None], Any]


def install_drain(drain_delay: float) -> None:
    """Wrap uvicorn's exit handler so that the first signal drains before it stops the server."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        stop = signal.getsignal(sig)
        if callable(stop):
            signal.signal(sig, _draining_handler(stop, loop, drain_delay))


def _draining_handler(stop: Handler, loop: asyncio.AbstractEventLoop, drain_delay: float) -> Handler:
    def handle(sig: int, frame: FrameType | None) -> None:
        if LIFECYCLE.draining or drain_delay <= 0:
            LIFECYCLE.draining = True
            stop(sig, frame)
            return
        LIFECYCLE.draining = True
        log.info("draining: /readyz answers 503; no longer accepting in %.1fs", drain_delay)
        loop.call_soon_threadsafe(loop.call_later, drain_delay, stop, sig, None)

    return handle


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head that grows past ``max_head_bytes``.

    httptools keeps a header line it has not seen the end of in memory with no limit, so a client
    sending one endless header would grow the worker without bound, and the 431 that
    `proxy.access` gives an over-large *complete* head would never come. This counts the bytes of
    a head still being read and answers 431 (OpenAI-shaped) and closes once they pass the limit.

    The count is exact when a read holds only head bytes; a read in which a new pipelined message
    begins is not counted, so the bound is the limit plus at most one read. Module-level so that
    uvicorn can pickle it into ``--workers`` processes.
    """

    def __init__(self, *args: Any, max_head_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self._in_head = False
        self._heads_begun = 0
        self._head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._heads_begun += 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        heads_before = self._heads_begun
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            self._head_bytes = 0
            return
        # Still inside a head: all of this read was head, unless the head began within it.
        self._head_bytes = self._head_bytes + len(data) if self._heads_begun == heads_before else 0
        if self._head_bytes > self.max_head_bytes:
            self._refuse_head()

    def _refuse_head(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            # Nothing else is on the wire, so the client can be told why.
            error = InvalidRequest(
                f"The request headers are larger than this gateway accepts ({self.max_head_bytes} bytes).", status=431
            )
            body = error.to_json()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + body
            )
        self.transport.close()


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        "proxy.__main__:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=functools.partial(BoundedHeadProtocol, max_head_bytes=settings.max_header_bytes),  # type: ignore[arg-type]
        log_config=None,  # logging is ours: proxy.logs routes uvicorn's loggers through the JSON handler
        log_level=settings.log_level,
        access_log=False,  # proxy.access writes one structured line per request instead
        timeout_keep_alive=30,
        timeout_graceful_shutdown=int(settings.shutdown.grace_period) or None,
    )


def run(settings: Settings) -> None:
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers must share one metrics folder, named before any of them imports prometheus_client.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="claude-proxy-metrics-")
    config = uvicorn_config(settings)
    if settings.workers == 1:
        uvicorn.Server(config).run()
        return
    Multiprocess(config, sockets=[config.bind_socket()]).run()
