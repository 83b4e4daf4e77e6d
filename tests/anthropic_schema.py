"""Checks an upstream body against the official `anthropic` SDK's request types.

pydantic ignores unknown keys of a TypedDict and checks `Iterable` fields only when they are
consumed, so every iterator is drained here and the key set is checked separately: a field the
SDK does not know (say `temperature` under API version 2026-10-21) is an upstream 400 waiting to happen.
"""

from typing import Any

from anthropic.types.message_create_params import MessageCreateParamsBase, MessageCreateParamsNonStreaming
from pydantic import TypeAdapter

_ADAPTER: TypeAdapter[Any] = TypeAdapter(MessageCreateParamsNonStreaming)
_KNOWN_KEYS = frozenset(MessageCreateParamsBase.__annotations__) | {"stream"}


def _drain(value: Any) -> None:
    # The SDK types use Iterable[...], which pydantic validates lazily: consume every
    # iterator so that each nested block is actually checked.
    if isinstance(value, dict):
        for item in value.values():
            _drain(item)
    elif isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return
    elif hasattr(value, "__iter__"):
        for item in value:
            _drain(item)


def assert_valid_messages_request(body: dict[str, Any]) -> None:
    unknown = set(body) - _KNOWN_KEYS
    assert not unknown, f"fields the Messages API does not know: {sorted(unknown)}"
    without_stream = {k: v for k, v in body.items() if k != "stream"}
    _drain(_ADAPTER.validate_python(without_stream, strict=False))
