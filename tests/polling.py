"""Wait for a condition instead of sleeping a fixed time: tests stay fast when the machine is idle
and keep passing when it is loaded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], *, within: float = 10.0, every: float = 0.02, what: str = "") -> T:
    """``probe()``'s first truthy answer; fails with ``what`` (and the last answer) after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what or probe!r} (last: {answer!r})")
        time.sleep(every)


async def eventually_async(
    probe: Callable[[], T | Awaitable[T]], *, within: float = 10.0, every: float = 0.02, what: str = ""
) -> T:
    """The same, for a test on the event loop; ``probe`` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        answer = probe()
        if isinstance(answer, Awaitable):
            answer = await answer
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what or probe!r} (last: {answer!r})")
        await asyncio.sleep(every)
