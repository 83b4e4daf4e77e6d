"""The pool of upstream (Anthropic) keys: which key the next attempt uses.

Selection is smooth weighted round-robin (the algorithm nginx uses for upstream weights): over any
window, each healthy key serves in proportion to its weight, interleaved rather than in bursts.
A key that answered 429 rests until its retry-after passes; a key that answered 401 leaves the
rotation for good (until restart) and is logged by its label, never in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proxy import metrics

log = logging.getLogger("proxy.keypool")


def label(secret: str) -> str:
    """A name for a key that is safe to log: its last four characters."""
    return f"…{secret[-4:]}" if len(secret) > 8 else "…"


@dataclass(eq=False)
class UpstreamKey:
    secret: str = field(repr=False)
    weight: int = 1
    label: str = ""
    resting_until: float = 0.0
    disabled: bool = False
    _current: int = 0

    def __post_init__(self) -> None:
        self.label = self.label or label(self.secret)


class NoKeyAvailable(Exception):
    """Every key is resting or disabled. ``retry_in`` is None when none will ever come back."""

    def __init__(self, retry_in: float | None) -> None:
        super().__init__("no upstream key available")
        self.retry_in = retry_in


class KeyPool:
    def __init__(self, keys: Sequence[UpstreamKey], clock: Callable[[], float] = time.monotonic) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self.keys = list(keys)
        self._clock = clock
        for key in self.keys:
            self._publish(key)

    def acquire(self) -> UpstreamKey:
        now = self._clock()
        healthy = [k for k in self.keys if not k.disabled and k.resting_until <= now]
        if not healthy:
            raise NoKeyAvailable(self.retry_in(now))
        total = sum(k.weight for k in healthy)
        for key in healthy:
            key._current += key.weight
        chosen = max(healthy, key=lambda k: k._current)
        chosen._current -= total
        return chosen

    def any_enabled(self) -> bool:
        return any(not k.disabled for k in self.keys)

    def retry_in(self, now: float | None = None) -> float | None:
        """Seconds until some key may serve again, or None if every key is disabled."""
        now = self._clock() if now is None else now
        resting = [k.resting_until for k in self.keys if not k.disabled]
        if not resting:
            return None
        return max(0.0, min(resting) - now)

    def rest(self, key: UpstreamKey, seconds: float) -> None:
        key.resting_until = max(key.resting_until, self._clock() + seconds)
        log.info("upstream key %s rate-limited; resting %.1fs", key.label, seconds)
        self._publish(key)

    def disable(self, key: UpstreamKey) -> None:
        if not key.disabled:
            key.disabled = True
            log.error("upstream key %s was refused (401); removed from rotation until restart", key.label)
            self._publish(key)

    def _publish(self, key: UpstreamKey) -> None:
        # Only on a change (start, a 429, a 401), never per request: the metric is what makes a key's
        # state visible across workers (the console's health page, /metrics).
        now = self._clock()
        until = time.time() + (key.resting_until - now) if key.resting_until > now else 0.0
        metrics.record_upstream_key(key.label, until, key.disabled)

    def state(self) -> list[dict[str, object]]:
        """A loggable snapshot: labels and health, never secrets."""
        now = self._clock()
        return [
            {
                "key": k.label,
                "weight": k.weight,
                "disabled": k.disabled,
                "resting_for": round(max(0.0, k.resting_until - now), 3),
            }
            for k in self.keys
        ]
