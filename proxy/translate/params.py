"""The parameter-table engine every dialect's request translator runs (design §2).

A dialect describes its top-level parameters as a table, name → `Param`: the upstream field the
parameter fills (`target`), the function that checks and converts the client's value (`convert`,
which may return `OMIT`), the parameter that wins when both are sent (`yields_to`) and the value
used when it is absent (`default`). `apply_params` runs the table in order. A name may be dotted
(``reasoning.effort``): it is read inside nested objects, and a parent that is not an object is
the client's error, named. JSON null means "not given", as in the OpenAI API; fields not in the
table are ignored.

Converters get a `ClaudeContext` (or a dialect's subclass of it): the model's capabilities, the
upstream body built so far, and what converters learn for the steps after the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from proxy.errors import InvalidRequest
from proxy.models import ModelCaps
from proxy.translate.checks import invalid_type

__all__ = [
    "DEFAULT_MAX_TOOLS",
    "OMIT",
    "ClaudeContext",
    "Convert",
    "Param",
    "apply_params",
    "lookup",
    "refuse",
]

OMIT: Final = object()
"""Returned by a converter when the parameter adds nothing to the upstream body."""

# Tool definitions a request may carry. Real clients send tens, agents with many MCP servers a few
# hundred, and Anthropic documents catalogues of thousands (for its tool search): 10,000 leaves room.
DEFAULT_MAX_TOOLS: Final = 10_000


@dataclass(slots=True)
class ClaudeContext:
    """What converters may consult: the model's capabilities and the upstream body built so far,
    and what a converter learns for the steps after the table. A dialect adds its own fields in a
    subclass."""

    model: str
    caps: ModelCaps
    upstream: dict[str, Any]
    max_tools: int = DEFAULT_MAX_TOOLS
    max_tokens_given: bool = False  # the client named its output token limit
    cache_ttl: str | None = None  # "1h" when the client asked for a longer-lived prompt cache
    cache_implicit: bool = True  # the gateway may place its own cache breakpoints


C = TypeVar("C", bound=ClaudeContext)

Convert = Callable[[Any, str, C], Any]
"""(the client's value, the parameter's name as the client wrote it, the context) → the upstream
value, or `OMIT`. A converter written for `ClaudeContext` serves every dialect's table."""


@dataclass(frozen=True, slots=True)
class Param(Generic[C]):
    """How one client parameter reaches the upstream body. `Param()` alone: accepted and dropped."""

    target: str | None = None  # the upstream field it fills, if any
    convert: Convert[C] | None = None  # checks the client's value, returns the upstream one or OMIT
    yields_to: str | None = None  # a parameter that wins over this one when both are sent
    default: Callable[[ModelCaps], Any] | None = None  # fills `target` when the parameter is absent


def apply_params(table: Mapping[str, Param[C]], body: Mapping[str, Any], context: C) -> None:
    """Run `table` over the client's `body` in order, filling `context.upstream`."""
    upstream = context.upstream
    for name, param in table.items():
        value = lookup(body, name)
        if value is None:
            if param.default is not None and param.target is not None and param.target not in upstream:
                upstream[param.target] = param.default(context.caps)
            continue
        if param.yields_to is not None and lookup(body, param.yields_to) is not None:
            continue
        result = value if param.convert is None else param.convert(value, name, context)
        if param.target is not None and result is not OMIT:
            upstream[param.target] = result


def lookup(body: Mapping[str, Any], name: str) -> Any:
    """The value at `name` in `body`, a dotted name read through nested objects; None when it or
    a parent is absent or null. A parent that is not an object is a 400 naming the parent."""
    if "." not in name:
        return body.get(name)
    value: Any = body
    path = ""
    for key in name.split("."):
        if path and not isinstance(value, dict):
            invalid_type(path, "an object", value)
        value = value.get(key)
        if value is None:
            return None
        path = f"{path}.{key}" if path else key
    return value


def refuse(reason: str, *, harmless: Callable[[Any], bool] = lambda value: False) -> Convert[ClaudeContext]:
    """A parameter whose answer would be wrong without it: 400 unless its value is `harmless`."""

    def convert(value: Any, name: str, context: ClaudeContext) -> Any:
        if harmless(value):
            return OMIT
        raise InvalidRequest(f"Unsupported parameter: '{name}' {reason}", param=name, code="unsupported_parameter")

    return convert
