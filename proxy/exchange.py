"""`Exchange`: the typed record of one request, filled as it is served and read by the access line.

The access middleware makes one per HTTP request and keeps it in the ASGI scope's state; the
pipeline and the authenticator fill it; the server protocol notes on it an answer it gave itself;
the middleware writes the access line and the request metrics from it when the last byte has gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from proxy import metrics

if TYPE_CHECKING:
    from proxy.keys import Admission, KeyService
    from proxy.tracing.spans import RequestTrace
    from proxy.upstream import UpstreamReply, UpstreamStream
    from proxy.usage import Usage

_KEY = "exchange"  # its name in the scope's state (what starlette's `request.state` reads)


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    key_name: str | None = None
    model: str | None = None  # the resolved upstream model
    stream: bool | None = None
    admission: Admission | None = None  # the key's reservation, until settled
    usage: Usage | None = None
    attempts: int | None = None  # upstream attempts, retries included
    upstream_request_id: str | None = None
    error: str | None = None  # the error type the client was given, if any
    dropped: tuple[str, ...] = ()  # fields accepted but ignored or adapted (the x-claude-proxy-dropped header)
    model_warning: str | None = None  # the `Warning` header for a deprecated model
    answered_by_server: tuple[int, str] | None = None  # (status, error) the server protocol answered with
    request_body: Any = None  # payloads, only when `log_payloads` is on
    response_body: Any = None
    payloads_logged: bool = False
    trace: RequestTrace | None = None  # the request's span, only when tracing is on

    def note_upstream(self, reply: UpstreamReply | UpstreamStream) -> None:
        self.attempts = reply.attempts
        self.upstream_request_id = reply.request_id

    def note_usage(self, usage: Usage | None) -> None:
        """What the request used: for its key's ledger and limits (`settle`), the metrics and the
        access line."""
        if usage is None:
            return
        self.usage = usage
        metrics.record_tokens(self.key_name or "", self.model or "", usage)

    async def settle(self, keys: KeyService) -> None:
        """Replace the key's token reservation by what was used (none on failure); at most once."""
        admission, self.admission = self.admission, None
        if admission is not None:
            await keys.settle_usage(admission, model=self.model or "", usage=self.usage)


def exchange_of(scope: Scope | Any) -> Exchange:
    """The request's record; made here when the app runs without the access middleware (tests)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    exchange = state.get(_KEY)
    if exchange is None:
        exchange = state[_KEY] = Exchange(request_id="")
    assert isinstance(exchange, Exchange)
    return exchange


def open_exchange(scope: Scope, request_id: str) -> Exchange:
    exchange = Exchange(request_id=request_id)
    scope.setdefault("state", {})[_KEY] = exchange
    return exchange
