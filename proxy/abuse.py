"""Slowing down key guessing: repeated bad client keys from one address.

After ``max_failures`` bad keys from one address within ``window`` seconds, that address is refused
(before its key is even looked at) until the oldest of those failures is ``window`` seconds old: at
most ``max_failures`` guesses per address per window, whatever the address sends meanwhile. The
caller answers a refused address with 429 and ``Retry-After``.

An address is an IP address as the server reports it. IPv6 addresses are grouped by their /64
network, which one host can usually draw from at will. A successful authentication clears the
address's record, so a client that mistyped its key is not held back once it gets it right.

Memory is bounded: each address keeps at most ``max_failures`` timestamps, and at most
``max_addresses`` addresses are tracked; beyond that the one whose last failure is oldest is
forgotten. Pure bookkeeping: no I/O, no locks (one event loop per process), an injectable clock.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["BadKeyThrottle"]


class BadKeyThrottle:
    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if not window > 0:
            raise ValueError("window must be positive")
        if max_addresses < 1:
            raise ValueError("max_addresses must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        # address bucket → times of its recent failures, oldest first; least recently failed first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Addresses tracked right now."""
        return len(self._failures)

    def check(self, address: str | None) -> float | None:
        """Seconds `address` must wait before its next attempt, or None when it may go ahead."""
        if not self._failures:  # the usual case, checked on every request: nobody has failed lately
            return None
        bucket = _bucket(address)
        if bucket is None:
            return None
        times = self._recent(bucket)
        if times is None or len(times) < self.max_failures:
            return None
        return times[0] + self.window - self._clock()  # > 0: an expired failure would have been dropped

    def failures(self, address: str | None) -> int:
        """Bad keys counted against `address` within the window."""
        bucket = _bucket(address)
        times = None if bucket is None else self._recent(bucket)
        return 0 if times is None else len(times)

    def record_failure(self, address: str | None) -> None:
        bucket = _bucket(address)
        if bucket is None:
            return
        times = self._recent(bucket)
        if times is None:
            while len(self._failures) >= self.max_addresses:
                self._failures.popitem(last=False)
            times = self._failures[bucket] = deque(maxlen=self.max_failures)
        else:
            self._failures.move_to_end(bucket)
        times.append(self._clock())

    def record_success(self, address: str | None) -> None:
        if not self._failures:
            return
        bucket = _bucket(address)
        if bucket is not None:
            self._failures.pop(bucket, None)

    def _recent(self, bucket: str) -> deque[float] | None:
        """The bucket's failures still inside the window (expired ones dropped), or None."""
        times = self._failures.get(bucket)
        if times is None:
            return None
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[bucket]
            return None
        return times


def _bucket(address: str | None) -> str | None:
    if not address:
        return None  # no peer address (a unix socket): nothing to attribute failures to
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
