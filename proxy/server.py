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
from proxy.dialects import error_body_for
from proxy.errors import InvalidRequest
from proxy.exchange import exchange_of
from proxy.lifecycle import LIFECYCLE
from proxy.logs import UvicornConfig

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


class CoalescingTransport:
    """A transport that sends a response's head together with what follows it.

    uvicorn writes a response's head and its body separately, each straight to the socket: two
    system calls for every answer, the largest single cost in a profile of the gateway at c32. This
    holds a head back until the next write (the body, or a stream's first event), which then leaves
    with it in one ``send``; a head nothing follows within the turn of the event loop is sent at its
    end. Only heads wait: a body goes out at once, so nothing done after it (the access line, the
    metrics) delays the client's last byte. Everything else is the transport's own; closing sends a
    held head first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held = b""

    def write(self, data: bytes) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        elif data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):  # uvicorn writes a head whole
            self._held = data
            self._loop.call_soon(self._flush)
            return
        if not self._transport.is_closing():
            self._transport.write(data)

    def _flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounding what a client may take to send its request: the head's
    bytes (``max_head_bytes``), the head's time (``head_timeout``) and the body's time
    (``body_timeout``). Module-level so that uvicorn can pickle it into ``--workers`` processes.

    Bytes: httptools keeps a header line it has not seen the end of in memory with no limit, so a
    client sending one endless header would grow the worker without bound, and the 431 that
    `proxy.access` gives an over-large *complete* head would never come. This counts the bytes of
    a head still being read and answers 431 (OpenAI-shaped) and closes once they pass the limit.
    The count is exact when a read holds only head bytes; a read in which a new pipelined message
    begins is not counted, so the bound is the limit plus at most one read.

    Time: uvicorn bounds only the idle time *between* requests (its keep-alive timeout, which any
    byte resets), so a client trickling a head or a body a byte at a time held its connection
    forever. The head clock starts when the connection opens, and when a later request's first
    byte arrives; the body clock when the head is complete. A head that runs out of time is
    answered 408 and closed; a body that does gets a 408 in the dialect of its route unless an
    answer has already begun, and is closed. Either clock is only the client's fault while the
    server is reading: when the server itself holds the connection back (an earlier pipelined
    answer still going, or reading paused because the app has not taken the body yet), the clock
    starts again instead.
    """

    def __init__(
        self, *args: Any, max_head_bytes: int, head_timeout: float = 30.0, body_timeout: float = 300.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self._in_head = False
        self._heads_begun = 0
        self._head_bytes = 0
        # One clock per connection: the phase being timed ("head", "body", or None between
        # requests, where uvicorn's keep-alive timeout applies), its deadline, and one timer that is
        # re-armed only when it fires. A request moves the deadline instead of creating and
        # cancelling timers, which would cost more per request than the rest of this class.
        self._phase: str | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- uvicorn's callbacks, extended ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._time("head", self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._heads_begun += 1
        if self._phase is None:  # a later request on a kept-alive connection (the first's clock runs)
            self._time("head", self.head_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        # Stopped again at once by on_message_complete when the request has no body.
        self._time("body", self.body_timeout)

    def on_message_complete(self) -> None:
        self._phase = None
        super().on_message_complete()

    # --- the clock -----------------------------------------------------------------------------

    def _time(self, phase: str, timeout: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + timeout
        if self._timer is None:
            self._timer = self.loop.call_later(timeout, self._clock_fired)

    def _clock_fired(self) -> None:
        self._timer = None
        if self._phase is None or self.transport.is_closing():
            return  # between requests: re-armed by the next one
        left = self._deadline - self.loop.time()
        if left > 0:  # the deadline moved on since the timer was set
            self._timer = self.loop.call_later(left, self._clock_fired)
        elif self._phase == "head":
            self._head_overdue()
        else:
            self._body_overdue()

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

    # --- refusals ------------------------------------------------------------------------------

    def _answering(self) -> bool:
        """Whether a response is on the wire or queued, so that nothing else may be written."""
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse_head(self) -> None:
        if not self._answering():  # nothing else is on the wire, so the client can be told why
            error = InvalidRequest(
                f"The request headers are larger than this gateway accepts ({self.max_head_bytes} bytes).", status=431
            )
            self._write_answer(b"431 Request Header Fields Too Large", error.to_json())
        self.transport.close()

    def _head_overdue(self) -> None:
        if self.flow.read_paused or self._answering():  # the server is busy, not the client slow
            self._time("head", self.head_timeout)
            return
        log.info("closed a connection from %s: no request head within %gs", _peer(self.client), self.head_timeout)
        error = InvalidRequest(
            f"The request headers were not received within {self.head_timeout:g} seconds.",
            status=408,
            code="request_timeout",
        )
        self._write_answer(b"408 Request Timeout", error.to_json())
        self.transport.close()

    def _body_overdue(self) -> None:
        if self.flow.read_paused or self.pipeline:  # held back by the server, or queued behind an answer
            self._time("body", self.body_timeout)
            return
        cycle = self.cycle
        log.info(
            "closed a connection from %s: request body not received within %gs", _peer(self.client), self.body_timeout
        )
        if not cycle.response_started:
            # The app may still be waiting for the body: its answer is dropped (it sees the client
            # gone) and the access line records what the client was told instead.
            error = InvalidRequest(
                f"The request body was not received within {self.body_timeout:g} seconds.",
                status=408,
                code="request_timeout",
            )
            body = error_body_for(cycle.scope["path"], error)
            exchange_of(cycle.scope).answered_by_server = (408, "request_timeout")
            cycle.disconnected = True
            cycle.message_event.set()
            self._write_answer(b"408 Request Timeout", body)
        self.transport.close()

    def _write_answer(self, status: bytes, body: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a unix socket"


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return UvicornConfig(  # uvicorn's, making SIGTERM flush the log lines in every process: see proxy.logs
        "proxy.__main__:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=functools.partial(  # type: ignore[arg-type]
            BoundedHeadProtocol,
            max_head_bytes=settings.max_header_bytes,
            head_timeout=settings.request_head_timeout,
            body_timeout=settings.request_body_timeout,
        ),
        # X-Forwarded-For is believed only from the proxies named (FORWARDED_ALLOW_IPS); uvicorn's own
        # default, when given nothing, would believe any local process.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
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
