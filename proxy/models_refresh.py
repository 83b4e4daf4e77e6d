"""Keeps the gateway's model table current with the upstream's Models API, in the background.

Started in the app's lifespan: the first read gets a short bound (``models_startup_wait``), after
which the gateway serves with its shipped table while the read goes on; then one read every
``models_refresh_interval`` seconds. A failed read keeps the last good data, logs one line and is
retried sooner (``RETRY_AFTER_FAILURE``). The task is cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger("proxy")

RETRY_AFTER_FAILURE: Final = 60.0  # seconds; the schedule's interval when that is shorter


class ModelsRefresher:
    """The background reader of the upstream's model list for one gateway."""

    def __init__(self, gateway: Gateway, *, interval: float, startup_wait: float) -> None:
        self.gateway = gateway
        self.interval = interval
        self.startup_wait = startup_wait
        self.refreshed = 0  # successful reads, for tests and operators
        self.failed = 0
        self._attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the schedule and wait for the first read, at most ``startup_wait`` seconds."""
        if self.interval <= 0:
            return
        self._task = asyncio.create_task(self._run(), name="models-refresh")
        try:
            await asyncio.wait_for(self._attempted.wait(), self.startup_wait)
        except TimeoutError:
            log.warning(
                "the upstream's model list did not arrive within %gs; serving with the shipped model table "
                "while the read goes on in the background",
                self.startup_wait,
            )

    async def aclose(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def refresh_once(self) -> bool:
        """One read; a failure keeps the table as it is and logs one line."""
        try:
            await self.gateway.refresh_models()
        except Exception as exc:  # whatever went wrong, the gateway keeps serving with what it has
            self.failed += 1
            kept = "the last model list read" if self.refreshed else "the shipped model table"
            log.warning("could not read the upstream's model list (%s); serving with %s", _reason(exc), kept)
            return False
        self.refreshed += 1
        return True

    async def _run(self) -> None:
        while True:
            succeeded = await self.refresh_once()
            self._attempted.set()
            await asyncio.sleep(self.interval if succeeded else min(self.interval, RETRY_AFTER_FAILURE))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
