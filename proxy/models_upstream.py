"""The upstream's Models API (``GET /v1/models``) read as capability rows: pure, no I/O.

Each ``ModelInfo`` the API lists carries ``capabilities`` (effort levels, thinking types, structured
outputs, image and PDF input, citations, server tools), ``lifecycle``, ``retires_at``, ``max_tokens``
and ``max_input_tokens`` (the anthropic SDK's ``types/model_info.py`` and ``model_capabilities.py``).
``upstream_rows`` maps them to ``ModelCaps`` fields keyed by model id, for
``ModelTable.with_upstream``. What the Models API does not say (prefill, sampling fields,
``between_tools`` beyond its flag, a forced ``tool_choice`` refusal, ``effort_without_thinking``,
``fast``, ``successor``, the web search tool version) is left out, so it comes from the shipped table.

The data is read defensively: a field that is missing or of the wrong shape is left out of the row
(the table then decides), never an error, so a change in the API's answer cannot take the gateway down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, get_args

from proxy.models import EFFORT_LEVELS, CapsRow, Lifecycle

THINKING_TYPES: Final = ("adaptive", "enabled", "disabled", "between_tools")  # ThinkingTypes' keys
LIFECYCLES: Final = frozenset(get_args(Lifecycle))
_DATED: Final = re.compile(r"(?P<alias>.+)-\d{8}")  # claude-haiku-4-5-20251001 → claude-haiku-4-5


def upstream_rows(infos: Iterable[Mapping[str, Any]]) -> dict[str, CapsRow]:
    """Rows keyed by model id. A dated id (``claude-haiku-4-5-20251001``) is also filed under its
    undated alias (``claude-haiku-4-5``), the name clients send, unless the list has that id itself."""
    rows: dict[str, CapsRow] = {}
    aliases: dict[str, CapsRow] = {}
    for info in infos:
        model_id = info.get("id")
        if not isinstance(model_id, str) or not model_id:
            continue
        row = caps_row(info)
        rows[model_id] = row
        dated = _DATED.fullmatch(model_id)
        if dated:
            aliases.setdefault(dated["alias"], row)  # the list is newest first: the newest snapshot wins
    return {**aliases, **rows}


def caps_row(info: Mapping[str, Any]) -> CapsRow:
    """One ``ModelInfo`` as the ``ModelCaps`` fields it determines."""
    row: CapsRow = {}
    max_tokens = info.get("max_tokens")
    if _positive_int(max_tokens):
        row["max_output_tokens"] = max_tokens
    max_input = info.get("max_input_tokens")
    if _positive_int(max_input):
        row["max_input_tokens"] = max_input
    lifecycle = info.get("lifecycle")
    if lifecycle in LIFECYCLES:
        row["lifecycle"] = lifecycle
    retires = _iso_date(info.get("retires_at"))
    if retires is not None:
        row["retires"] = retires
    capabilities = info.get("capabilities")
    if isinstance(capabilities, Mapping):
        row.update(_capabilities(capabilities))
    return row


def _capabilities(capabilities: Mapping[str, Any]) -> CapsRow:
    row: CapsRow = {}
    for field in ("structured_outputs", "image_input", "pdf_input", "citations"):
        supported = _supported(capabilities.get(field))
        if supported is not None:
            row[field] = supported
    effort = capabilities.get("effort")
    if isinstance(effort, Mapping) and isinstance(effort.get("supported"), bool):
        # Levels the API adds later (not in EffortLevel) are not ours to send, so they are skipped.
        levels = [level for level in EFFORT_LEVELS if effort["supported"] and _supported(effort.get(level))]
        row["effort"] = levels
    thinking = capabilities.get("thinking")
    types = thinking.get("types") if isinstance(thinking, Mapping) else None
    if isinstance(types, Mapping):
        known = {mode: _supported(types.get(mode)) for mode in THINKING_TYPES}
        if all(flag is not None for flag in known.values()):  # a partial answer could drop a mode wrongly
            row["thinking"] = [mode for mode, flag in known.items() if flag]
    server_tools = capabilities.get("server_tools")
    if isinstance(server_tools, Mapping) and _supported(server_tools.get("web_search")) is False:
        # Only "no" is ours to take: which version to send when it is supported stays in the table.
        row["web_search"] = None
    return row


def _supported(entry: Any) -> bool | None:
    """A ``CapabilitySupport``'s flag, or None when it is absent or malformed."""
    if isinstance(entry, Mapping) and isinstance(entry.get("supported"), bool):
        return bool(entry["supported"])
    return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _iso_date(rfc3339: Any) -> str | None:
    """``2026-11-30T00:00:00Z`` → ``2026-11-30`` (the UTC date), or None."""
    if not isinstance(rfc3339, str):
        return None
    try:
        moment = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date().isoformat()
