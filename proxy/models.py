"""Model facts as data: aliases and per-model capabilities.

The shipped table lives in ``models.yaml`` beside this file; the operator's config may
override any row or add new ones. Code asks ``ModelTable.capabilities(model)`` and never
compares model names itself.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

SamplingField = Literal["temperature", "top_p", "top_k"]
ThinkingMode = Literal["enabled", "adaptive", "disabled", "between_tools"]
EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]
EFFORT_LEVELS: tuple[EffortLevel, ...] = ("low", "medium", "high", "xhigh", "max")  # lowest first
WebSearchTool = Literal["web_search_20250305", "web_search_20260209", "web_search_20260318"]


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
    retires: str | None = None

    @property
    def thinking_always_on(self) -> bool:
        """Adaptive thinking that no `thinking.type` turns off: only `output_config.effort` steers it."""
        return "adaptive" in self.thinking and not self.thinking & {"disabled", "between_tools"}


CapsRow = dict[str, Any]


def shipped_rows() -> dict[str, CapsRow]:
    text = resources.files("proxy").joinpath("models.yaml").read_text(encoding="utf-8")
    rows = yaml.safe_load(text)
    assert isinstance(rows, dict)
    return rows


def _specificity(pattern: str) -> tuple[int, int]:
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (literal, len(pattern))


class ModelTable:
    """Resolves aliases and answers capability questions for any model id."""

    def __init__(self, rows: dict[str, CapsRow], aliases: dict[str, str] | None = None) -> None:
        self.aliases = dict(aliases or {})
        # Most specific pattern first, so the first row that sets a field decides it.
        self._rows = sorted(rows.items(), key=lambda item: _specificity(item[0]), reverse=True)
        self._lookup = lru_cache(maxsize=1024)(self._compute)
        # Fail at start-up, not on a request, if a row cannot produce valid capabilities.
        for pattern, _ in self._rows:
            self._compute(pattern.replace("*", "x").replace("?", "x"))

    @classmethod
    def with_overrides(
        cls, overrides: dict[str, CapsRow] | None = None, aliases: dict[str, str] | None = None
    ) -> ModelTable:
        rows = shipped_rows()
        for pattern, row in (overrides or {}).items():
            rows[pattern] = {**rows.get(pattern, {}), **row}
        return cls(rows, aliases)

    def resolve(self, model: str) -> str:
        return self.aliases.get(model, model)

    def capabilities(self, model: str) -> ModelCaps:
        return self._lookup(model)

    def _compute(self, model: str) -> ModelCaps:
        merged: CapsRow = {}
        for pattern, row in self._rows:
            if fnmatch.fnmatchcase(model, pattern):
                for key, value in row.items():
                    merged.setdefault(key, value)
        if not merged:
            # A model id outside every pattern (a fine-tune, a new family): use the broadest row.
            merged = dict(self._rows[-1][1])
        return ModelCaps.model_validate(merged)
