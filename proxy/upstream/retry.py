"""When a failed upstream attempt is tried again, and after how long.

An attempt that fails in a way worth retrying raises ``_Retry``, carrying what the client gets if
no retry follows and the wait the failure asks for (a retry hint, a key pool's wake-up), or None for
exponential backoff with full jitter (``upstream.max_backoff``). ``retry_after_failure`` runs the
attempts after a failed first one under tenacity: at most ``upstream.max_attempts`` attempts, and no
sleep that would end past ``upstream.retry_deadline`` or exceed ``upstream.max_retry_after``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from proxy import metrics
from proxy.config import UpstreamSettings
from proxy.errors import ProxyError, RateLimited, UpstreamTimeout, UpstreamUnavailable
from proxy.upstream.keypool import UpstreamKey
from proxy.upstream.reply import UpstreamReply, UpstreamStream

_R = TypeVar("_R", bound="UpstreamReply | UpstreamStream")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})


class _Retry(Exception):
    """One attempt failed in a way worth retrying after ``wait`` seconds (None: exponential backoff).

    ``final`` is what the client gets if no retry follows: the last error reply, or an error."""

    def __init__(self, final: UpstreamReply | ProxyError, wait: float | None = None) -> None:
        super().__init__("retry")
        self.final = final
        self.wait = wait


Attempt = Callable[[UpstreamKey], Awaitable[_R]]


async def retry_after_failure(
    attempt: Attempt[_R],
    failed: _Retry,
    started: float,
    *,
    config: UpstreamSettings,
    acquire: Callable[[], UpstreamKey],
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> _R:
    """The attempts after a failed first one, under tenacity: bounded attempts, and no sleep that
    would outlast the retry deadline or the longest retry-after we honour (that is answered at
    once instead). The final reply may still be an error."""
    up = config

    def wait(state: RetryCallState) -> float:
        planned = _failure(state).wait
        if planned is None:  # exponential backoff with full jitter
            planned = random.random() * min(up.max_backoff, 0.5 * 2 ** (state.attempt_number - 1))
        return planned

    def stop(state: RetryCallState) -> bool:
        upcoming = state.upcoming_sleep  # tenacity computes the wait before asking whether to stop
        time_left = up.retry_deadline - (clock() - started)
        return state.attempt_number >= up.max_attempts or upcoming > min(time_left, up.max_retry_after)

    def count_retry(state: RetryCallState) -> None:
        metrics.series(metrics.UPSTREAM_RETRIES, _retry_reason(_failure(state).final)).inc()

    retrying = AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception_type(_Retry),
        sleep=sleep,
        before_sleep=count_retry,
        reraise=True,
    )
    try:
        async for attempt_state in retrying:
            with attempt_state:
                number = attempt_state.retry_state.attempt_number
                if number == 1:
                    raise failed  # tenacity's attempt 1 is the one already made: its failure decides what follows
                result = await attempt(acquire())
                result.attempts = number
                return result
    except _Retry as exhausted:
        if isinstance(exhausted.final, ProxyError):
            raise exhausted.final from None
        exhausted.final.attempts = retrying.statistics.get("attempt_number", 1)
        return exhausted.final  # type: ignore[return-value]  # an error reply, which every _R admits
    raise AssertionError("unreachable: tenacity either returns or raises")


def _retry_reason(final: UpstreamReply | ProxyError) -> str:
    if isinstance(final, UpstreamReply):
        return str(final.status)
    if isinstance(final, UpstreamTimeout):
        return "timeout"
    if isinstance(final, UpstreamUnavailable):
        return "connect"
    if isinstance(final, RateLimited):
        return "keys_resting"
    return "transport"


def _failure(state: RetryCallState) -> _Retry:
    exc = state.outcome.exception() if state.outcome else None
    assert isinstance(exc, _Retry)
    return exc
