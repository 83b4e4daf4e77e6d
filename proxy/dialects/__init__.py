"""The front-end dialects: the one list the app's routes (and so the metrics' route labels) are read from.

Adding a client API is one translator package under `proxy/translate/` plus one `Dialect` here.
"""

from __future__ import annotations

from typing import Final

from proxy.dialects.base import Dialect
from proxy.dialects.chat import ChatCompletions
from proxy.dialects.native import NativeMessages
from proxy.dialects.responses import Responses
from proxy.errors import ProxyError

__all__ = ["DIALECTS", "Dialect", "error_body_for"]

DIALECTS: Final[tuple[Dialect, ...]] = (ChatCompletions(), Responses(), NativeMessages())


def error_body_for(path: str, error: ProxyError) -> bytes:
    """An error for a request to ``path`` in the shape of the dialect that serves it (OpenAI's when
    none does): for answers given before routing, such as the server's own 408."""
    for dialect in DIALECTS:
        if dialect.owns(path):
            return dialect.error_body(error)
    return error.to_json()
