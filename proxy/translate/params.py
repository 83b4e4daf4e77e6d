"""The parameter-table engine every dialect's request translator runs (design §2).

A dialect describes its top-level parameters as a table, name → `Param`: the upstream field the
parameter fills (`target`), the function that checks and converts the client's value (`convert`,
which may return `OMIT`), the parameter that wins when both are sent (`yields_to`) and the value
used when it is absent (`default`). `apply_params` runs the table in order. A name may be dotted
(``reasoning.effort``): it is read inside nested objects, and a parent that is not an object is
the client's error, named. JSON null means "not given", as in the OpenAI API.

Converters get a `ClaudeContext` (or a dialect's subclass of it): the model's capabilities, the
upstream body built so far, and what converters learn for the steps after the table.

Saying what was dropped (issue 16): every field the client sent that does not reach the upstream as
sent is recorded with `ClaudeContext.drop`, where the decision is made: here for an ignored entry
(`Param()`, `ignore`) and for a field no table names (an unknown field is ignored too, and is just
what a user comparing answers with OpenAI's needs to see), in the converters for an adaptation
(a temperature above Claude's range, an effort level the model lacks). Values that change nothing
on OpenAI either (its defaults: `presence_penalty: 0`, `logprobs: false`) are not recorded, nor is
a parameter that yields to another the client also sent (OpenAI ignores it the same way). With
`strict` (the `strict_fields` setting) a drop is a 400 naming the field instead.
`dropped_fields` gives the record as the response header and the access line show it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from proxy.errors import InvalidRequest
from proxy.models import ModelCaps
from proxy.translate.checks import invalid_type, unsupported_value

__all__ = [
    "DEFAULT_MAX_TOOLS",
    "IGNORED",
    "MAX_DROPPED",
    "OMIT",
    "UNKNOWN",
    "UNNAMED",
    "ClaudeContext",
    "Convert",
    "Drop",
    "Param",
    "apply_params",
    "dropped_fields",
    "ignore",
    "lookup",
    "refuse",
]

OMIT: Final = object()
"""Returned by a converter when the parameter adds nothing to the upstream body."""

# Tool definitions a request may carry. Real clients send tens, agents with many MCP servers a few
# hundred, and Anthropic documents catalogues of thousands (for its tool search): 10,000 leaves room.
DEFAULT_MAX_TOOLS: Final = 10_000

# Why a field was dropped, as `ClaudeContext.drop` words it under strict_fields.
IGNORED: Final = "it is ignored by this gateway"
UNKNOWN: Final = "it is not a field this gateway knows, so it is ignored by this gateway"

Drop = Callable[[str, str], None]
"""(the field's path as the client wrote it, why) → None: `ClaudeContext.drop`, handed to the
code that converts content (which has no context)."""


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
    strict: bool = False  # strict_fields: a dropped field is a 400 instead
    dropped: list[str] = field(default_factory=list)  # paths of the fields dropped, as recorded

    def drop(self, name: str, why: str = IGNORED) -> None:
        """The client's field `name` (its path) does not reach the upstream as sent: it is ignored,
        or adapted (`why` says how, completing "Unsupported value for 'name': …"). Recorded for the
        response header; under strict_fields a 400 naming the field instead."""
        if self.strict:
            unsupported_value(name, f"{why} (strict_fields is on).")
        self.dropped.append(name)


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


def apply_params(
    table: Mapping[str, Param[C]], body: Mapping[str, Any], context: C, *, core: Collection[str] = ()
) -> None:
    """Run `table` over the client's `body` in order, filling `context.upstream`; then drop the
    fields neither the table nor `core` (those the dialect converts itself) names."""
    upstream = context.upstream
    for name, top, param in _plan(table).entries:
        # Most of a table is absent from any one body: a dict lookup skips an entry whose top-level
        # field is not sent, before the dotted read.
        value = lookup(body, name) if top in body else None
        if value is None:
            if param.default is not None and param.target is not None and param.target not in upstream:
                upstream[param.target] = param.default(context.caps)
            continue
        if param.yields_to is not None and lookup(body, param.yields_to) is not None:
            continue
        if param.convert is None and param.target is None:
            context.drop(name)  # Param(): accepted and ignored
            continue
        result = value if param.convert is None else param.convert(value, name, context)
        if param.target is not None and result is not OMIT:
            upstream[param.target] = result
    _drop_unknown(_plan(table), body, context, core)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `apply_params` reads off a table, worked out once per table (tables are constants)."""

    entries: tuple[tuple[str, str, Param[Any]], ...]  # (name, its top-level field, the entry)
    known: frozenset[str]  # the top-level fields the table names
    children: Mapping[str, frozenset[str]]  # a parent read through dotted names → the children named


_PLANS: dict[int, tuple[Mapping[str, Any], _Plan]] = {}


def _plan(table: Mapping[str, Param[Any]]) -> _Plan:
    cached = _PLANS.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    children: dict[str, set[str]] = {}
    for name in table:
        parent, dot, child = name.partition(".")
        if dot:
            children.setdefault(parent, set()).add(child.partition(".")[0])
    plan = _Plan(
        entries=tuple((name, name.partition(".")[0], param) for name, param in table.items()),
        known=frozenset(name.partition(".")[0] for name in table),
        children={parent: frozenset(names) for parent, names in children.items()},
    )
    _PLANS[id(table)] = (table, plan)  # the table is kept alive with it, so its id is never reused
    return plan


def _drop_unknown(plan: _Plan, body: Mapping[str, Any], context: ClaudeContext, core: Collection[str]) -> None:
    """Drop the top-level fields no table entry names, and the fields of a parent object the table
    reads dotted names in (``reasoning``, ``text``) that it does not name. Null is not given."""
    for key, value in body.items():
        if value is None or key in core:
            continue
        if key not in plan.known:
            context.drop(key, UNKNOWN)
        elif key in plan.children and isinstance(value, dict):
            named = plan.children[key]
            for child, nested in value.items():
                if nested is not None and child not in named:
                    context.drop(f"{key}.{child}", UNKNOWN)


_INDEX: Final = re.compile(r"\[\d+\]")
# The names the client chose (unknown fields) go into a response header and the access line: only
# plain ones are repeated, and only so many, whatever the body holds.
_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_$-]{1,64}")
UNNAMED: Final = "(unknown field)"
MAX_DROPPED: Final = 32


def dropped_fields(dropped: Sequence[str], body: Mapping[str, Any]) -> tuple[str, ...]:
    """The dropped fields as the client is told them: list positions left out
    (``messages[].content[].image_url.detail``, so a long conversation names each field once and
    the header stays short), without duplicates, in the order of the body's top-level fields. An
    unknown field whose name is not plain (``[A-Za-z0-9_$-]``, at most 64) is `UNNAMED`; past
    `MAX_DROPPED` fields the last entry says how many more there are."""
    if not dropped:
        return ()
    order = {key: position for position, key in enumerate(body)}
    in_order = sorted(dropped, key=lambda path: order.get(_top_level(path), len(order)))
    shown = list(dict.fromkeys(_shown(_INDEX.sub("[]", path)) for path in in_order))
    if len(shown) > MAX_DROPPED:
        shown[MAX_DROPPED - 1 :] = [f"(+{len(shown) - MAX_DROPPED + 1} more)"]
    return tuple(shown)


def _shown(path: str) -> str:
    # Every path the gateway writes is made of plain names, `.` and `[]`; a client's own key may not be.
    return path if all(_PLAIN_NAME.fullmatch(part) for part in path.replace("[]", "").split(".")) else UNNAMED


def _top_level(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


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


def ignore(*, harmless: Callable[[Any], bool]) -> Convert[ClaudeContext]:
    """A parameter with no upstream equivalent whose answer is still right without it: dropped
    (`ClaudeContext.drop`) unless its value is `harmless`, one that changes nothing on OpenAI
    either (its default). `Param()` is the same with no harmless value."""

    def convert(value: Any, name: str, context: ClaudeContext) -> Any:
        if not harmless(value):
            context.drop(name)
        return OMIT

    return convert


def refuse(reason: str, *, harmless: Callable[[Any], bool] = lambda value: False) -> Convert[ClaudeContext]:
    """A parameter whose answer would be wrong without it: 400 unless its value is `harmless`
    (a value that asks for nothing, which is not reported as dropped)."""

    def convert(value: Any, name: str, context: ClaudeContext) -> Any:
        if harmless(value):
            return OMIT
        raise InvalidRequest(f"Unsupported parameter: '{name}' {reason}", param=name, code="unsupported_parameter")

    return convert
