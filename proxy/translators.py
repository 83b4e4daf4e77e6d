"""The stream translators' shape: pure state machines, upstream SSE events in, client bytes out.

A module of its own, importing nothing of the gateway, so that the dialects that make translators,
the pipeline that drives them and the tracing that watches them all name one definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.errors import ProxyError
    from proxy.usage import Usage

__all__ = ["ChoiceTranslator", "StreamTranslator"]


class StreamTranslator(Protocol):
    """One upstream stream → the client's stream (pure)."""

    @property
    def done(self) -> bool: ...  # the closing bytes have been produced: stop reading

    @property
    def tokens(self) -> Usage | None: ...  # usage so far

    def feed(self, event: str, data: bytes) -> bytes: ...

    def end(self) -> bytes: ...  # the upstream closed: the closing bytes, or the early-end failure

    def fail(self, error: ProxyError) -> bytes: ...


class ChoiceTranslator(Protocol):
    """n upstream streams, one per choice, → one client stream (pure)."""

    @property
    def done(self) -> bool: ...

    @property
    def tokens(self) -> Usage | None: ...

    def feed(self, choice: int, event: str, data: bytes) -> bytes: ...

    def end(self, choice: int) -> bytes: ...

    def fail(self, error: ProxyError) -> bytes: ...
