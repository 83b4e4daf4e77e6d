"""Stopping work when the client goes away.

uvicorn drops writes to a closed connection silently; only ``receive`` tells that the client has
gone (the request body has been read by then, so the next message is the disconnect). An upstream
call or a streamed body nobody will read is cancelled at once: it costs money, and its `finally`
closes the upstream response and settles the key's usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

_T = TypeVar("_T")


class ClientGone(Exception):
    """The client closed its connection before the work was done."""


async def until_disconnect(receive: Receive, work: Awaitable[_T]) -> _T:
    """``work``'s result, unless the client goes away first: then ``work`` is cancelled and its
    cleanup has run before ``ClientGone`` is raised. What ``work`` raises is raised here; a
    cancellation of the caller itself still propagates."""
    call = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((call, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not call.done():
            call.cancel()
            await asyncio.wait((call,))  # its cleanup runs now; never raises, so our own cancellation is kept
    if call.cancelled():
        raise ClientGone
    return call.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
