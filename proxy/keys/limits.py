"""Per-key rate limits and token budgets.

Two kinds of window, with the same rules wherever they live:

- requests per minute: **moving window** — a log of request timestamps, exact: with ``rpm: 50``,
  200 concurrent requests admit exactly 50, across any number of replicas sharing Redis.
- tokens per minute: **sliding window counter** — two fixed-window counters weighted by overlap.
  Token costs run to tens of thousands per request, which a moving window would store one entry per
  token for; the counter takes any cost in O(1). A reservation is a hit costing the estimate;
  settling hits again with the difference (negative to give back what was not used).

With the Redis store they come from the ``limits`` library (https://limits.readthedocs.io: atomic
Lua scripts, shared by replicas), `RateWindows`. With the SQLite store they live in this process,
`MemoryWindows`: the library's in-memory storage inserts each request at the front of a list (O(n)
in the requests of the last minute) and schedules an expiry task that hops to a thread on every
hit — measured at ~160 µs of CPU per request, half a request's whole cost — where a deque and two
counters do the same in O(1) without leaving the event loop.

Daily and monthly budgets are calendar (UTC) counters, not windows: in Redis an atomic check-and-add
script over two counters; with SQLite, the ledger's totals (re-read every second, so several
processes on one file see each other's usage within a second or two) plus this process's own
reservations and not-yet-written usage.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from limits import RateLimitItemPerMinute
from limits.aio.storage import SlidingWindowCounterSupport
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from proxy.keys.store import BudgetCheck, Budgets, Windows, WindowState, month_of

if TYPE_CHECKING:
    import redis.asyncio
    from limits.aio.storage import Storage

    from proxy.keys.store import UsageRow

__all__ = [
    "BudgetCheck",
    "Budgets",
    "MemoryBudgets",
    "MemoryWindows",
    "RateWindows",
    "RedisBudgets",
    "WindowState",
    "Windows",
]

WINDOW = 60  # seconds: both rate limits are per minute


class RateWindows:
    """`Windows` in a ``limits`` storage (Redis: shared by every replica)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._requests = MovingWindowRateLimiter(storage)
        self._tokens = SlidingWindowCounterRateLimiter(storage)

    async def hit_request(self, name: str, rpm: int) -> bool:
        return await self._requests.hit(RateLimitItemPerMinute(rpm), "rpm", name)

    async def request_state(self, name: str, rpm: int, now: float) -> WindowState:
        stats = await self._requests.get_window_stats(RateLimitItemPerMinute(rpm), "rpm", name)
        remaining = max(stats.remaining, 0)
        # Room now: 0. Full: until the oldest request in the window leaves it.
        return WindowState(rpm, remaining, max(stats.reset_time - now, 0.0) if remaining == 0 else 0.0)

    async def hit_tokens(self, name: str, tpm: int, cost: int) -> bool:
        if cost <= 0:
            return True
        return await self._tokens.hit(RateLimitItemPerMinute(tpm), "tpm", name, cost=cost)

    async def adjust_tokens(self, name: str, tpm: int, delta: int) -> None:
        """Settles a reservation: adds usage beyond it (as far as the window holds — a full window
        then refuses until it slides) or gives back what was not used."""
        item = RateLimitItemPerMinute(tpm)
        if delta > 0:
            if await self._tokens.hit(item, "tpm", name, cost=delta):
                return
            stats = await self._tokens.get_window_stats(item, "tpm", name)
            if stats.remaining > 0:
                await self._tokens.hit(item, "tpm", name, cost=min(delta, stats.remaining))
        elif delta < 0:
            # Give back at most what the current window holds: the reservation may already have
            # slid into the previous window, and the counter must never go below zero.
            _, _, current, _ = await self._sliding(item, name)
            refund = min(-delta, current)
            if refund > 0:
                await self._tokens.hit(item, "tpm", name, cost=-refund)

    async def token_state(self, name: str, tpm: int, now: float, need: int = 0) -> WindowState:
        """The tokens window; with ``need``, ``reset`` is the wait until ``need`` tokens fit."""
        item = RateLimitItemPerMinute(tpm)
        previous, previous_ttl, current, current_ttl = await self._sliding(item, name)
        used = previous * previous_ttl / WINDOW + current
        remaining = max(tpm - math.floor(used), 0)
        wait = _tokens_wait(previous, previous_ttl, current, current_ttl, max(need, 1), tpm)
        return WindowState(tpm, remaining, wait)

    async def _sliding(self, item: RateLimitItemPerMinute, name: str) -> tuple[int, float, int, float]:
        storage = cast(SlidingWindowCounterSupport, self.storage)
        return await storage.get_sliding_window(item.key_for("tpm", name), item.get_expiry())

    async def aclose(self) -> None:
        timer = getattr(self.storage, "timer", None)  # MemoryStorage's expiry task
        if timer is not None and not timer.done():
            timer.cancel()


class _Counter:
    """One key's sliding-window counter: the counts of the current fixed window and the one before."""

    __slots__ = ("current", "previous", "window")

    def __init__(self, window: int) -> None:
        self.window, self.current, self.previous = window, 0, 0

    def roll(self, window: int) -> None:
        if window != self.window:
            self.previous = self.current if window == self.window + 1 else 0
            self.window, self.current = window, 0


class MemoryWindows:
    """`Windows` in this process's memory, O(1) per hit, with the same rules as `RateWindows`: an
    exact moving window for requests (a deque of the last minute's request times, at most ``rpm``
    long) and ``limits``' sliding-window counter arithmetic for tokens. `clock` is wall time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, _Counter] = {}

    async def hit_request(self, name: str, rpm: int) -> bool:
        now = self._clock()
        log = self._recent(name, now)
        if len(log) >= rpm:
            return False
        log.append(now)
        return True

    async def request_state(self, name: str, rpm: int, now: float) -> WindowState:
        log = self._recent(name, self._clock())
        remaining = max(rpm - len(log), 0)
        # Full: until the request that makes it full leaves the window.
        reset = max(log[len(log) - rpm] + WINDOW - now, 0.0) if remaining == 0 and rpm > 0 else 0.0
        return WindowState(rpm, remaining, reset)

    def _recent(self, name: str, now: float) -> deque[float]:
        log = self._requests.get(name)
        if log is None:
            log = self._requests[name] = deque()
        cutoff = now - WINDOW
        while log and log[0] < cutoff:  # a request exactly a minute old still counts, as in limits
            log.popleft()
        return log

    async def hit_tokens(self, name: str, tpm: int, cost: int) -> bool:
        if cost <= 0:
            return True
        return self._hit(name, tpm, cost)

    async def adjust_tokens(self, name: str, tpm: int, delta: int) -> None:
        """As `RateWindows.adjust_tokens`."""
        if delta > 0:
            if not self._hit(name, tpm, delta):
                previous, previous_ttl, current, _ = self._sliding(name)
                remaining = tpm - math.floor(previous * previous_ttl / WINDOW + current)
                if remaining > 0:
                    self._hit(name, tpm, min(delta, remaining))
        elif delta < 0:
            counter = self._counter(name, self._clock())
            counter.current -= min(-delta, counter.current)

    async def token_state(self, name: str, tpm: int, now: float, need: int = 0) -> WindowState:
        previous, previous_ttl, current, current_ttl = self._sliding(name)
        used = previous * previous_ttl / WINDOW + current
        remaining = max(tpm - math.floor(used), 0)
        wait = _tokens_wait(previous, previous_ttl, current, current_ttl, max(need, 1), tpm)
        return WindowState(tpm, remaining, wait)

    def _hit(self, name: str, tpm: int, cost: int) -> bool:
        if cost > tpm:
            return False
        previous, previous_ttl, current, _ = self._sliding(name)
        if math.floor(previous * previous_ttl / WINDOW + current) + cost > tpm:
            return False
        self._tokens[name].current += cost
        return True

    def _counter(self, name: str, now: float) -> _Counter:
        window = int(now // WINDOW)
        counter = self._tokens.get(name)
        if counter is None:
            counter = self._tokens[name] = _Counter(window)
        counter.roll(window)
        return counter

    def _sliding(self, name: str) -> tuple[int, float, int, float]:
        """(previous count, its weight in seconds, current count, seconds until it is forgotten),
        as ``limits``' ``get_sliding_window``."""
        now = self._clock()
        counter = self._counter(name, now)
        left = WINDOW - now % WINDOW  # seconds left in the current window
        return counter.previous, left if counter.previous else 0.0, counter.current, left + WINDOW

    async def aclose(self) -> None:
        self._requests.clear()
        self._tokens.clear()


def _tokens_wait(previous: int, previous_ttl: float, current: int, current_ttl: float, need: int, limit: int) -> float:
    """Seconds until a sliding-window counter holding (previous, current) has room for ``need``.

    Within the current window the previous count's weight falls linearly to zero; after it, the
    current count becomes the previous one and falls the same way."""
    rest = max(current_ttl - WINDOW, 0.0)  # seconds left in the current window
    deficit = previous * previous_ttl / WINDOW + current + need - limit
    if deficit <= 0:
        return 0.0
    if previous > 0:
        wait = deficit * WINDOW / previous
        if wait <= min(previous_ttl, rest):
            return wait
    deficit = current + need - limit
    if deficit <= 0:
        return rest
    if current > 0:
        return rest + min(deficit * WINDOW / current, WINDOW)
    return rest + WINDOW


# --- budgets ---------------------------------------------------------------------------


class MemoryBudgets(Budgets):
    """For the SQLite store: ledger totals plus this process's reservations and unwritten usage."""

    def __init__(self) -> None:
        self._base: dict[tuple[str, str], int] = {}  # (key, period) → tokens in the ledger
        self._pending: defaultdict[tuple[str, str], int] = defaultdict(int)  # not in the ledger yet

    def used(self, name: str, period: str) -> int:
        return self._base.get((name, period), 0) + self._pending.get((name, period), 0)

    async def reserve(self, name: str, day: str, amount: int, daily: int | None, monthly: int | None) -> BudgetCheck:
        month = month_of(day)
        room = amount
        for label, period, limit in (("daily", day, daily), ("monthly", month, monthly)):
            if limit is None:
                continue
            used = self.used(name, period)
            if used >= limit:
                return BudgetCheck(0, label, used)
        # The whole estimate, not capped at what is left: see `Budgets`.
        room = max(room, 0)
        self._pending[(name, day)] += room
        self._pending[(name, month)] += room
        return BudgetCheck(room, None, 0)

    async def adjust(self, name: str, day: str, delta: int) -> None:
        self._pending[(name, day)] += delta
        self._pending[(name, month_of(day))] += delta

    def written(self, rows: list[UsageRow]) -> None:
        for row in rows:
            for period in (row.day, month_of(row.day)):
                self._pending[(row.key, period)] -= row.tokens
                self._base[(row.key, period)] = self._base.get((row.key, period), 0) + row.tokens

    def totals(self, day: str, totals: dict[str, tuple[int, int]]) -> None:
        month = month_of(day)
        base = {k: v for k, v in self._base.items() if k[1] not in (day, month)}
        for name, (day_tokens, month_tokens) in totals.items():
            base[(name, day)] = day_tokens
            base[(name, month)] = month_tokens
        self._base = base
        # Periods left behind hold nothing worth keeping.
        for key in [k for k, v in self._pending.items() if v == 0 and k[1] not in (day, month)]:
            del self._pending[key]

    @property
    def needs_totals(self) -> bool:
        return True


# KEYS: day counter, month counter. ARGV: amount, daily limit (0: none), monthly limit (0: none),
# day ttl, month ttl. Returns {reserved, exhausted (0 none, 1 daily, 2 monthly), used}. The whole amount is
# reserved, even past a limit (see `Budgets` in proxy/keys/store.py).
_RESERVE = """
local amount = tonumber(ARGV[1])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local room = amount
for i = 1, 2 do
  if limits[i] > 0 then
    local used = tonumber(redis.call('get', KEYS[i]) or '0')
    if used >= limits[i] then
      return {0, i, used}
    end
  end
end
if room < 0 then room = 0 end
redis.call('incrby', KEYS[1], room)
redis.call('expire', KEYS[1], tonumber(ARGV[4]))
redis.call('incrby', KEYS[2], room)
redis.call('expire', KEYS[2], tonumber(ARGV[5]))
return {room, 0, 0}
"""

_DAY_TTL = 3 * 86400
_MONTH_TTL = 33 * 86400


class RedisBudgets(Budgets):
    """Shared counters: every replica reserves against the same two numbers, atomically."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)

    def _keys(self, name: str, day: str) -> list[str]:
        return [f"{self._prefix}budget:{{{name}}}:{day}", f"{self._prefix}budget:{{{name}}}:{month_of(day)}"]

    async def reserve(self, name: str, day: str, amount: int, daily: int | None, monthly: int | None) -> BudgetCheck:
        reply = await self._reserve(
            keys=self._keys(name, day), args=[amount, daily or 0, monthly or 0, _DAY_TTL, _MONTH_TTL]
        )
        reserved, exhausted, used = (int(x) for x in reply)
        return BudgetCheck(reserved, {1: "daily", 2: "monthly"}.get(exhausted), used)

    async def adjust(self, name: str, day: str, delta: int) -> None:
        if delta == 0:
            return
        day_key, month_key = self._keys(name, day)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrby(day_key, delta)
            pipe.expire(day_key, _DAY_TTL)
            pipe.incrby(month_key, delta)
            pipe.expire(month_key, _MONTH_TTL)
            await pipe.execute()

    def written(self, rows: list[UsageRow]) -> None:
        return None  # the counters already hold the usage

    def totals(self, day: str, totals: dict[str, tuple[int, int]]) -> None:
        return None

    @property
    def needs_totals(self) -> bool:
        return False


# --- headers -------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: ``250ms``, ``17s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 1)}ms"
    whole = math.ceil(round(seconds, 2))
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_headers(requests: WindowState | None, tokens: WindowState | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = duration(requests.reset)
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = duration(tokens.reset)
    return headers
