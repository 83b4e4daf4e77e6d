"""Slowing down key guessing: repeated bad keys from one address.

After ``max_failures`` bad keys from one address within ``window`` seconds, that address is
*throttled* until the oldest of those failures is ``window`` seconds old: at most ``max_failures``
guesses per address per window get an answer. Meanwhile every key the address sends that the
gateway cannot vouch for gets 429 and ``Retry-After`` instead, whether it is valid or not, so the
answers reveal nothing about the guesses.

Vouching is how innocent neighbours behind the same address (one NAT, one stale CI job) keep
working: a valid key that has already been used from that address is still served while the
address is throttled, because a guesser cannot have learnt it from this throttle's answers. A
valid key new to a throttled address waits like a guess; when it has been used from this address
before it does not. A success never wipes the address's failures: that would let a client holding
one valid key interleave it with guesses forever.

An address is an IP address as the server reports it. IPv6 addresses are grouped by their /64
network, which one host can usually draw from at will. The caller answers the bare, unchecked
key (a missing one) as it likes: without a key there is nothing to guess.

Memory is bounded: each address keeps at most ``max_failures`` timestamps and at most
``max_addresses`` addresses are tracked (beyond that the one whose last failure is oldest is
forgotten); each key remembers at most ``HOSTS_PER_KEY`` hosts, for at most ``max_addresses``
keys. A valid key from a host it was already used from costs two dict lookups and allocates
nothing. Bookkeeping only: no I/O, no locks (one event loop per process), an injectable clock.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from proxy.errors import RateLimited

__all__ = ["HOSTS_PER_KEY", "BadKeyThrottle", "refuse_if_throttled"]

HOSTS_PER_KEY = 16  # the most recent hosts a key is remembered to have been used from


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
        # key name → the hosts (as reported, not bucketed) it was served to, oldest first.
        self._hosts_of_key: dict[str, dict[str, None]] = {}

    def __len__(self) -> int:
        """Addresses tracked right now."""
        return len(self._failures)

    # --- what a caller asks, once it has checked the presented key ------------------------------

    def refuse_bad_key(self, address: str | None) -> float | None:
        """A bad key came from `address`: the seconds to wait (answer 429) when the address is
        throttled, else None (answer 401) after counting the failure."""
        wait = self.check(address)
        if wait is None:
            self.record_failure(address)
        return wait

    def refuse_valid_key(self, address: str | None, name: str) -> float | None:
        """The key called `name` matched: the seconds to wait (answer 429) when `address` is
        throttled and this key was never used from it, else None (serve it)."""
        hosts = self._hosts_of_key.get(name)
        if hosts is not None and address in hosts:
            return None  # the usual case: used from here before, so served even while throttled
        wait = self.check(address)
        if wait is not None and not self._used_from_bucket(hosts, _bucket(address)):
            return wait
        if address:
            self._remember(name, address)
        return None

    # --- the bookkeeping underneath -------------------------------------------------------------

    def check(self, address: str | None) -> float | None:
        """Seconds `address` stays throttled, or None when it is not."""
        if not self._failures:  # the usual case: nobody has failed lately
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

    def _remember(self, name: str, host: str) -> None:
        # Popped and put back last, so that the key forgotten first is the one longest without a new host.
        hosts = self._hosts_of_key.pop(name, None)
        if hosts is None:
            if len(self._hosts_of_key) >= self.max_addresses:
                del self._hosts_of_key[next(iter(self._hosts_of_key))]
            hosts = {}
        elif len(hosts) >= HOSTS_PER_KEY:
            del hosts[next(iter(hosts))]
        hosts[host] = None
        self._hosts_of_key[name] = hosts

    @staticmethod
    def _used_from_bucket(hosts: dict[str, None] | None, bucket: str | None) -> bool:
        """Whether one of `hosts` falls in `bucket` (another address of the same IPv6 /64)."""
        return bucket is not None and hosts is not None and any(_bucket(host) == bucket for host in hosts)

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


def refuse_if_throttled(wait: float | None) -> None:
    """Raise the one answer a throttled address gets for any key that is not vouched for."""
    if wait is not None:
        raise RateLimited(
            "Too many requests with an invalid API key from this address; retry later.",
            code="too_many_invalid_keys",
            headers={"retry-after": str(max(math.ceil(wait), 1))},
        )


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
