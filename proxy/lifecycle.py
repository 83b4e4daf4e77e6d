"""Whether this process is ready to serve, or draining before it stops.

Process-wide on purpose: the signal that starts a drain is delivered to the process, and the
readiness probe of every app in it must see it at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lifecycle:
    ready: bool = False  # config loaded and upstream client built
    draining: bool = False  # SIGTERM received: finish what is in flight, take nothing new

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining


LIFECYCLE = Lifecycle()
