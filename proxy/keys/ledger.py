"""The usage ledger: requests, tokens and an estimated cost per key, per model, per UTC day.

Settling a request adds to an in-memory buffer at once (no I/O, so it survives a cancelled stream);
a background task writes the buffer to the store every second and on shutdown. A crash loses at most
that last second of usage.

Prices are data, in ``prices.yaml`` beside this file (overridable from the config file).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from proxy.keys.limits import Budgets
from proxy.keys.store import KeyStore, StoreError, UsageRow, day_of
from proxy.usage import Usage

log = logging.getLogger("proxy.keys")


class Rates(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    cache_write: float = Field(ge=0)


class LongPrompt(Rates):
    threshold: int = Field(ge=1, description="prompt tokens (input + cache reads + writes) above which these apply")


class PriceRow(Rates):
    long_prompt: LongPrompt | None = None


def _specificity(pattern: str) -> tuple[int, int]:
    return (sum(1 for ch in pattern if ch not in "*?[]"), len(pattern))


class PriceTable:
    """Model glob → prices; the most specific matching pattern wins."""

    def __init__(self, rows: Mapping[str, PriceRow | Mapping[str, Any]]) -> None:
        parsed = {p: r if isinstance(r, PriceRow) else PriceRow.model_validate(r) for p, r in rows.items()}
        self._rows = sorted(parsed.items(), key=lambda item: _specificity(item[0]), reverse=True)
        self._lookup = lru_cache(maxsize=512)(self._find)
        self._warned: set[str] = set()

    @classmethod
    def shipped(cls, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> PriceTable:
        """The table in ``prices.yaml``, with ``overrides`` (rows from the config file) on top."""
        text = resources.files("proxy.keys").joinpath("prices.yaml").read_text(encoding="utf-8")
        rows: dict[str, Any] = yaml.safe_load(text) or {}
        rows.update(overrides or {})
        return cls(rows)

    def _find(self, model: str) -> PriceRow | None:
        for pattern, row in self._rows:
            if fnmatch.fnmatchcase(model, pattern):
                return row
        return None

    def rates(self, model: str) -> PriceRow | None:
        return self._lookup(model)

    def cost(
        self, model: str, *, input_tokens: int, output_tokens: int, cached_tokens: int, cache_write_tokens: int
    ) -> float:
        """USD for one request. ``input_tokens`` is the whole prompt, cache reads and writes included."""
        row = self.rates(model)
        if row is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model %s: its usage is recorded at $0 (add a row to prices)", model)
            return 0.0
        rates: Rates = row
        if row.long_prompt is not None and input_tokens > row.long_prompt.threshold:
            rates = row.long_prompt
        uncached = max(input_tokens - cached_tokens - cache_write_tokens, 0)
        return (
            uncached * rates.input
            + cached_tokens * rates.cache_read
            + cache_write_tokens * rates.cache_write
            + output_tokens * rates.output
        ) / 1_000_000


class Ledger:
    """Buffers usage rows and writes them to the store in the background."""

    def __init__(self, store: KeyStore, budgets: Budgets, clock: Callable[[], float]) -> None:
        self._store = store
        self._budgets = budgets
        self._clock = clock
        self._buffer: dict[tuple[str, str, str], UsageRow] = {}
        self._lock = asyncio.Lock()
        self._failing = False

    def book(self, key: str, model: str, day: str, usage: Usage, cost: float) -> None:
        """One request's usage: the whole prompt as input, with its cache reads and writes apart."""
        self.add(UsageRow(key, model, day, 1, usage.prompt, usage.output, usage.cache_read, usage.cache_write, cost))

    def add(self, row: UsageRow) -> None:
        existing = self._buffer.get((row.key, row.model, row.day))
        if existing is None:
            self._buffer[(row.key, row.model, row.day)] = row
        else:
            existing.add(row)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> None:
        """Writes what is buffered; with in-process budgets, then re-reads the ledger's totals."""
        async with self._lock:
            rows = list(self._buffer.values())
            self._buffer = {}
            try:
                if rows:
                    await self._store.record_usage(rows)
            except (StoreError, OSError) as exc:
                for row in rows:  # keep them for the next attempt
                    self.add(row)
                self._report(exc)
                return
            self._budgets.written(rows)
            if self._budgets.needs_totals:
                day = day_of(self._clock())
                try:
                    totals = await self._store.token_totals(day)
                except (StoreError, OSError) as exc:
                    self._report(exc)
                    return
                self._budgets.totals(day, totals)
            if self._failing:
                self._failing = False
                log.info("usage ledger writes to %s work again", self._store.url)

    def _report(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("cannot write the usage ledger to %s (will retry): %s", self._store.url, exc)
