"""The in-process rate windows of the SQLite store (`MemoryWindows`): the same answers as the
``limits`` library's windows (`RateWindows`, which the Redis store uses), on a clock the test moves,
and a request log that never holds more than the last minute's admitted requests."""

from __future__ import annotations

import random

import pytest
from limits.aio.storage import MemoryStorage

from proxy.keys.limits import WINDOW, MemoryWindows, RateWindows

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_rpm_admits_exactly_the_limit_then_refuses_until_the_first_request_leaves_the_minute() -> None:
    clock = Clock(1_000_000.0)
    windows = MemoryWindows(clock)
    for _ in range(5):
        assert await windows.hit_request("a", 5)
        clock.now += 1
    assert not await windows.hit_request("a", 5)
    state = await windows.request_state("a", 5, clock.now)
    assert (state.limit, state.remaining) == (5, 0)
    assert state.reset == pytest.approx(WINDOW - 5)  # the first request, 5 s ago, leaves in 55 s
    assert await windows.hit_request("b", 5), "each key has its own window"
    clock.now += state.reset + 0.001
    assert await windows.hit_request("a", 5)
    assert not await windows.hit_request("a", 5)


async def test_the_request_log_holds_only_the_last_minute() -> None:
    clock = Clock(2_000_000.0)
    windows = MemoryWindows(clock)
    for _ in range(1000):
        assert await windows.hit_request("busy", 10**9)
        clock.now += 0.5
    state = await windows.request_state("busy", 10**9, clock.now)
    assert 10**9 - state.remaining == WINDOW * 2, "120 requests in the last 60 s at two a second"


async def test_token_windows_agree_with_the_limits_library_over_random_traffic() -> None:
    """Same hits, same refusals, same state, step by step, as `RateWindows` on limits' own storage."""
    ours = MemoryWindows()
    theirs = RateWindows(MemoryStorage())
    rng = random.Random(7)
    try:
        for _ in range(300):
            cost = rng.choice([1, 50, 400, 2000])
            assert await ours.hit_tokens("k", 5000, cost) == await theirs.hit_tokens("k", 5000, cost)
            delta = rng.choice([-300, -10, 0, 10, 700])
            await ours.adjust_tokens("k", 5000, delta)
            await theirs.adjust_tokens("k", 5000, delta)
            mine, library = await ours.token_state("k", 5000, 0, 100), await theirs.token_state("k", 5000, 0, 100)
            assert mine.remaining == library.remaining
    finally:
        await theirs.aclose()


async def test_tokens_slide_the_previous_minute_out_linearly() -> None:
    clock = Clock(60.0 * 50_000)  # the start of a window
    windows = MemoryWindows(clock)
    assert await windows.hit_tokens("k", 1000, 1000)
    assert not await windows.hit_tokens("k", 1000, 1)
    clock.now += WINDOW + WINDOW / 2  # half-way through the next window: half the old count still weighs
    assert (await windows.token_state("k", 1000, clock.now)).remaining == 500
    assert await windows.hit_tokens("k", 1000, 500)
    assert not await windows.hit_tokens("k", 1000, 1)
    clock.now += WINDOW  # two windows on: all forgotten but the 500 of the last one, half-weighted
    assert (await windows.token_state("k", 1000, clock.now)).remaining == 750


async def test_giving_back_tokens_never_goes_below_zero() -> None:
    windows = MemoryWindows(Clock(60.0 * 70_000))
    assert await windows.hit_tokens("k", 100, 30)
    await windows.adjust_tokens("k", 100, -500)
    assert (await windows.token_state("k", 100, 0)).remaining == 100
    await windows.adjust_tokens("k", 100, 250)  # more than the window holds: it fills it
    assert (await windows.token_state("k", 100, 0)).remaining == 0
