"""Model facts as data: aliases, per-model capabilities, and whether a model is served.

Three sources, lowest first: what the upstream's Models API reports for a model id (installed by
``ModelTable.with_upstream``, see ``proxy.models_upstream``), the shipped table in ``models.yaml``
beside this file, and the operator's ``models:`` rows. Code asks ``ModelTable.capabilities(model)``
and ``ModelTable.check_serving(model)`` and never compares model names itself.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from typing import Any, Final, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.errors import NotFound

log = logging.getLogger("proxy")

SamplingField = Literal["temperature", "top_p", "top_k"]
ThinkingMode = Literal["enabled", "adaptive", "disabled", "between_tools"]
EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]
EFFORT_LEVELS: tuple[EffortLevel, ...] = ("low", "medium", "high", "xhigh", "max")  # lowest first
WebSearchTool = Literal["web_search_20250305", "web_search_20260209", "web_search_20260318"]
Lifecycle = Literal["active", "deprecated", "retired"]


class ModelCaps(BaseModel):
    """What one model accepts. The first five fields are required; the later ones have defaults so
    that an operator's row written before they existed still loads. Rows in YAML may be partial."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefill: bool
    sampling: frozenset[SamplingField]
    thinking: frozenset[ThinkingMode]
    max_output_tokens: int = Field(gt=0)
    default_max_tokens: int = Field(gt=0)
    effort: frozenset[EffortLevel] = frozenset()  # levels `output_config.effort` accepts; empty: none
    fast: bool = False  # accepts `speed: "fast"` without a beta header
    structured_outputs: bool = True  # accepts `output_config.format`
    web_search: WebSearchTool | None = "web_search_20250305"  # the web search tool version to send
    retires: str | None = None  # scheduled retirement (ISO date), informational
    # Forced tool use (`tool_choice` any / tool); some models refuse it with a 400.
    forced_tool_choice: bool = True
    # Effort levels accepted while thinking is disabled, when narrower than `effort` (None: the same).
    effort_without_thinking: frozenset[EffortLevel] | None = None
    lifecycle: Lifecycle = "active"  # as the upstream's Models API reports it
    successor: str | None = None  # the model to move to, when this one is deprecated or retired
    max_input_tokens: int | None = Field(default=None, gt=0)  # the context window, when known
    image_input: bool = True
    pdf_input: bool = True
    citations: bool = True

    @property
    def thinking_always_on(self) -> bool:
        """Adaptive thinking that no `thinking.type` turns off: only `output_config.effort` steers it."""
        return "adaptive" in self.thinking and not self.thinking & {"disabled", "between_tools"}


CapsRow = dict[str, Any]

# The shipped catch-all row: the defaults for any Claude model. It ranks below the upstream's own
# report of a model, so that a model the shipped table has never heard of gets the upstream's
# capabilities rather than these guesses.
CATCH_ALL: Final = "claude-*"
# Fields the upstream reports as facts that change over time (a retirement can be brought forward
# or postponed): its word beats the shipped table's, which is only the fallback before a fetch.
# The operator's rows still beat it.
UPSTREAM_AUTHORITATIVE: Final = frozenset({"lifecycle", "retires"})


def shipped_rows() -> dict[str, CapsRow]:
    text = resources.files("proxy").joinpath("models.yaml").read_text(encoding="utf-8")
    rows = yaml.safe_load(text)
    assert isinstance(rows, dict)
    return rows


def _specificity(pattern: str) -> tuple[int, int]:
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (literal, len(pattern))


class _Row(NamedTuple):
    pattern: str
    above_upstream: CapsRow  # fields that beat the upstream's report
    below_upstream: CapsRow  # fields the upstream's report beats


def _split(pattern: str, shipped: CapsRow, operator: CapsRow) -> _Row:
    above: CapsRow = dict(operator)
    below: CapsRow = {}
    for key, value in shipped.items():
        if key in operator:
            continue
        if pattern == CATCH_ALL or key in UPSTREAM_AUTHORITATIVE:
            below[key] = value
        else:
            above[key] = value
    return _Row(pattern, above, below)


class _Verdict(NamedTuple):
    kind: Literal["active", "deprecated", "retired", "unknown"]
    text: str  # the Warning header value (deprecated) or the error message (retired, unknown)


class ModelTable:
    """Resolves aliases and answers capability questions for any model id.

    A table is immutable: ``with_upstream`` returns a new one, which the gateway swaps in whole, so a
    request sees one consistent table and lookups stay cached."""

    def __init__(
        self,
        rows: Mapping[str, CapsRow],
        aliases: Mapping[str, str] | None = None,
        *,
        operator: Mapping[str, CapsRow] | None = None,
        upstream: Mapping[str, CapsRow] | None = None,
    ) -> None:
        self.aliases = dict(aliases or {})
        self._shipped = dict(rows)
        self._operator = dict(operator or {})
        self._upstream = dict(upstream) if upstream is not None else None
        patterns = dict.fromkeys([*self._shipped, *self._operator])  # a set's order would vary run to run
        split = [_split(p, self._shipped.get(p, {}), self._operator.get(p, {})) for p in patterns]
        # Most specific pattern first, so the first row that sets a field decides it.
        self._rows = sorted(split, key=lambda row: _specificity(row.pattern), reverse=True)
        self._fallback = next((row for row in self._rows if row.pattern == CATCH_ALL), self._rows[-1])
        self._lookup = lru_cache(maxsize=1024)(self._compute)
        self._verdicts = lru_cache(maxsize=1024)(self._judge)
        # Fail at start-up, not on a request, if a row cannot produce valid capabilities.
        for row in self._rows:
            self._compute(row.pattern.replace("*", "x").replace("?", "x"))

    @classmethod
    def with_overrides(
        cls, overrides: Mapping[str, CapsRow] | None = None, aliases: Mapping[str, str] | None = None
    ) -> ModelTable:
        """The shipped table with the operator's rows (``models:``) and aliases (``model_aliases:``)."""
        return cls(shipped_rows(), aliases, operator=overrides)

    def with_rows(self, rows: Mapping[str, CapsRow]) -> ModelTable:
        """This table with more operator-level rows, merged field by field into any of the same pattern."""
        operator = dict(self._operator)
        for pattern, row in rows.items():
            operator[pattern] = {**operator.get(pattern, {}), **row}
        return ModelTable(self._shipped, self.aliases, operator=operator, upstream=self._upstream)

    def with_upstream(self, rows: Mapping[str, CapsRow]) -> ModelTable:
        """This table with the upstream's report of each model id it serves (``proxy.models_upstream``),
        replacing any earlier report. A row that would make a model's capabilities invalid is left out
        (and logged), never a failure: the upstream's data must not take the gateway down."""
        table = ModelTable(self._shipped, self.aliases, operator=self._operator, upstream=rows)
        bad: dict[str, Any] = {}
        for model_id in rows:
            try:
                table._compute(model_id)
            except ValidationError as exc:
                bad[model_id] = exc.errors(include_url=False, include_input=False)[:1]
        if not bad:
            return table
        log.warning("ignored the upstream's capabilities of %d models: %s", len(bad), list(bad.items())[:3])
        kept = {model_id: row for model_id, row in rows.items() if model_id not in bad}
        return ModelTable(self._shipped, self.aliases, operator=self._operator, upstream=kept)

    @property
    def upstream_ids(self) -> frozenset[str] | None:
        """The model ids the upstream reported, or None before its first report."""
        return frozenset(self._upstream) if self._upstream is not None else None

    def resolve(self, model: str) -> str:
        return self.aliases.get(model, model)

    def capabilities(self, model: str) -> ModelCaps:
        return self._lookup(model)

    def check_serving(self, model: str) -> str | None:
        """Whether the resolved ``model`` is served: None when it is; a ``Warning`` header value
        (``299 - "…"``) when it is deprecated, logged once per model per UTC day; ``NotFound`` when it
        is retired (``code`` model_retired, naming its successor when known) or unknown
        (``code`` model_not_found, saying how to add an alias)."""
        verdict = self._verdicts(model)
        if verdict.kind == "active":
            return None
        if verdict.kind == "deprecated":
            if DEPRECATION_NOTICES.first_today(model):
                log.warning("deprecated model requested: %s", verdict.text)
            return f'299 - "{_header_safe(verdict.text)}"'
        if verdict.kind == "retired":
            raise NotFound(verdict.text, param="model", code="model_retired")
        raise model_not_found(model)

    def _known(self, model: str) -> bool:
        """Named by the operator (an alias), reported by the upstream, or matched by a row more
        specific than the catch-all. Before the upstream's first report, any ``claude-*`` id is let
        through: the upstream decides."""
        if model in self.aliases or model in self.aliases.values():
            return True
        if self._upstream is not None and model in self._upstream:
            return True
        if any(row.pattern != CATCH_ALL and fnmatch.fnmatchcase(model, row.pattern) for row in self._rows):
            return True
        return self._upstream is None and fnmatch.fnmatchcase(model, CATCH_ALL)

    def _judge(self, model: str) -> _Verdict:
        if not self._known(model):
            return _Verdict("unknown", "")
        caps = self._lookup(model)
        instead = f"; use '{caps.successor}' instead" if caps.successor else ""
        if caps.lifecycle == "retired":
            when = f"was retired on {caps.retires}" if caps.retires else "has been retired"
            return _Verdict("retired", f"The model '{model}' {when} and no longer serves requests{instead}.")
        if caps.lifecycle == "deprecated":
            when = f"retires on {caps.retires}" if caps.retires else "will be retired"
            return _Verdict("deprecated", f"The model '{model}' is deprecated and {when}{instead}.")
        return _Verdict("active", "")

    def _compute(self, model: str) -> ModelCaps:
        matching = [row for row in self._rows if fnmatch.fnmatchcase(model, row.pattern)]
        if self._fallback not in matching:
            # A model id outside the catch-all (a fine-tune, an operator's own pattern): what its rows
            # leave out still comes from the catch-all.
            matching.append(self._fallback)
        layers = [row.above_upstream for row in matching]
        if self._upstream is not None and model in self._upstream:
            layers.append(self._upstream[model])
        layers += [row.below_upstream for row in matching]
        merged: CapsRow = {}
        for layer in layers:
            for key, value in layer.items():
                merged.setdefault(key, value)
        default, ceiling = merged.get("default_max_tokens"), merged.get("max_output_tokens")
        if isinstance(default, int) and isinstance(ceiling, int):
            # A ceiling learned from the upstream may be lower than the table's default.
            merged["default_max_tokens"] = min(default, ceiling)
        return ModelCaps.model_validate(merged)


def model_not_found(model: str) -> NotFound:
    """The 404 for a model this gateway does not serve, with how to serve it under that name (the
    chat/Responses endpoints and ``GET /v1/models/{id}`` answer it alike)."""
    shown = model if len(model) <= 200 else model[:200] + "…"
    return NotFound(
        f"The model '{shown}' does not exist or is not served by this gateway. To send requests for it to a "
        f'Claude model, add an alias: `model_aliases: {{"{shown}": "<a Claude model id>"}}` in the config '
        f'file, or PROXY_MODEL_ALIASES=\'{{"{shown}": "<a Claude model id>"}}\' in the environment. '
        "GET /v1/models lists the models served.",
        param="model",
        code="model_not_found",
    )


def _header_safe(text: str) -> str:
    """Printable ASCII without quotes or backslashes: the inside of a header's quoted-string."""
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in text)


class OncePerDay:
    """Says yes to the first ``first_today(key)`` per key per UTC day (a log rate limit)."""

    MAX_KEYS: Final = 1024  # model ids come from clients; forget them all rather than grow without bound

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._seen: dict[str, date] = {}

    def first_today(self, key: str) -> bool:
        today = self._clock().astimezone(UTC).date()
        if self._seen.get(key) == today:
            return False
        if len(self._seen) >= self.MAX_KEYS:
            self._seen.clear()
        self._seen[key] = today
        return True


DEPRECATION_NOTICES: Final = OncePerDay()
