"""What a front-end dialect is: the shapes of one client API, and nothing of the lifecycle.

The request pipeline (`proxy.pipeline`) runs every request the same way — authenticate, read the
body, check the model, admit, call the upstream, answer or relay, settle — and asks the dialect
only for shapes:

    load(body, ...)             what the request needs from the gateway's stores first (optional)
    parse(body, inbound)        the client's body → an `Outbound` (the Messages API call to make)   pure
    answer(replies, outbound)   the upstream's Message(s) → an `Answer` for the client             pure
    relay(outbound)             a `StreamTranslator` for one upstream stream                       pure
    relay_choices(outbound)     the same over n streams (only dialects whose `Outbound.n` can be > 1)
    upstream_failure(reply)     a non-200 upstream reply → the error to raise, or an `Answer` to pass on
    error_body(error)           a gateway error in the family's shape (OpenAI's, Anthropic's)
    keep(outbound, result, ...) what to store once the answer is complete (optional)

Stream translators are pure state machines: upstream SSE events in, client bytes out, plus their
end (the closing bytes, or the one "ended too early" failure) and their failure bytes. The
pipeline decodes the upstream's bytes and times the first token; a dialect that forwards bytes as
they came (the native passthrough) says so with ``passthrough``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from proxy.translators import ChoiceTranslator, StreamTranslator

if TYPE_CHECKING:
    from proxy.config import Settings
    from proxy.errors import ProxyError
    from proxy.gateway import Gateway
    from proxy.keys import Principal
    from proxy.models import ModelTable
    from proxy.upstream import UpstreamReply
    from proxy.usage import Usage


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which every request pays.
@dataclass(slots=True)
class Inbound:
    """What `parse` may read besides the body: the model table, the settings, the client's headers."""

    models: ModelTable
    settings: Settings
    headers: Mapping[str, str]
    loaded: Any = None  # what the dialect's `load` fetched before parsing (None when it has no `load`)


@dataclass(slots=True)
class Outbound:
    """The upstream call a client request becomes."""

    path: str  # the Messages API path to call
    payload: bytes  # the serialised upstream body
    model: str  # the resolved upstream model id
    stream: bool
    body: Mapping[str, Any]  # the upstream body as a dict: the token estimate is read from it
    n: int = 1  # upstream calls to make (choices); the pipeline fans out and the dialect merges
    reserves_tokens: bool = True  # False: counted as a request only (count_tokens is free upstream)
    headers: Mapping[str, str] = field(default_factory=dict)  # client headers forwarded upstream
    hints: Any = None  # the dialect's own record of the request, for `answer` and `relay`
    dropped: tuple[str, ...] = ()  # fields the client sent that did not reach the upstream as sent


@dataclass(slots=True)
class Answer:
    """A complete (non-streamed) answer for the client."""

    body: bytes
    usage: Usage | None = None  # what the request used, when the reply says
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    result: Any = None  # the answer as the dialect built it, for its `keep`


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route the dialect serves through the pipeline."""

    path: str
    name: str  # for logs and the route table
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to `parse` as `inbound` extras


class Dialect(abc.ABC):
    """One client API. Subclasses hold no per-request state: one instance serves every request."""

    #: The routes served through the pipeline.
    endpoints: Sequence[Endpoint] = ()
    #: Forward the upstream's stream bytes unchanged (the translator only watches the events).
    passthrough: bool = False
    #: `keep` stores something: the pipeline calls it with `Answer.result`, or with
    #: `streamed_result` when the stream ends.
    keeps: bool = False

    def owns(self, path: str) -> bool:
        """Whether errors for ``path`` belong in this dialect's shape (also before routing)."""
        return any(path == endpoint.path for endpoint in self.endpoints)

    def routes(self) -> Sequence[BaseRoute]:
        """Routes of the dialect's own beside its pipeline endpoints (stored objects, say)."""
        return ()

    async def load(self, endpoint: Endpoint, body: Any, gateway: Gateway, principal: Principal) -> Any:
        """What `parse` needs from the gateway's stores (it gets it as ``inbound.loaded``)."""
        return None

    @abc.abstractmethod
    def parse(self, endpoint: Endpoint, body: Any, inbound: Inbound) -> Outbound: ...

    @abc.abstractmethod
    def answer(self, replies: Sequence[UpstreamReply], outbound: Outbound) -> Answer: ...

    @abc.abstractmethod
    def relay(self, outbound: Outbound) -> StreamTranslator: ...

    def relay_choices(self, outbound: Outbound) -> ChoiceTranslator:
        raise NotImplementedError(f"{type(self).__name__} does not fan out")

    @abc.abstractmethod
    def upstream_failure(self, reply: UpstreamReply) -> ProxyError | Answer: ...

    @abc.abstractmethod
    def error_body(self, error: ProxyError) -> bytes: ...

    def streamed_result(self, translator: StreamTranslator) -> Any:
        """What a completed stream leaves for `keep` (None: nothing, or it did not complete)."""
        return None

    async def keep(self, outbound: Outbound, result: Any, gateway: Gateway, principal: Principal) -> None:
        """Store what a completed answer leaves behind (``result``: `Answer.result` or
        `streamed_result`)."""
        return None
