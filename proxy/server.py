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
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from proxy.config import Settings
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


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        "proxy.__main__:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
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
