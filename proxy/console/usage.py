"""The usage page's data: the ledger's rows for the last 30 days as charts, a table and CSV.

Pure: ledger rows in, plain data out. The rows come from `KeyService.usage`, the query the admin
API's ``/admin/usage`` answers from.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from proxy.keys.store import UsageRow

DAYS = 30
CSV_FIELDS = (
    "day",
    "key",
    "model",
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "total_tokens",
    "cost_usd",
)


def window(today: str, days: int = DAYS) -> list[str]:
    """The ``days`` UTC days ending with ``today``, oldest first."""
    last = date.fromisoformat(today)
    return [(last - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]


def chart(rows: list[UsageRow], days: list[str]) -> dict[str, Any]:
    """Tokens and cost per day, one series per model (stacked by the page), with the totals."""
    models = sorted({row.model for row in rows})
    tokens: dict[str, dict[str, int]] = {model: defaultdict(int) for model in models}
    cost: dict[str, dict[str, float]] = {model: defaultdict(float) for model in models}
    for row in rows:
        tokens[row.model][row.day] += row.tokens
        cost[row.model][row.day] += row.cost_usd
    return {
        "days": days,
        "models": models,
        "tokens": {model: [tokens[model][day] for day in days] for model in models},
        "cost": {model: [round(cost[model][day], 6) for day in days] for model in models},
    }


def table(rows: list[UsageRow]) -> list[dict[str, Any]]:
    """One line per day and model (keys summed), newest first: the numbers behind the charts."""
    merged: dict[tuple[str, str], UsageRow] = {}
    for row in rows:
        line = merged.setdefault((row.day, row.model), UsageRow(key="*", model=row.model, day=row.day))
        line.add(row)
    ordered = sorted(merged.values(), key=lambda row: (row.day, row.model), reverse=True)
    return [row.view() for row in ordered]


def to_csv(rows: list[UsageRow]) -> str:
    """Every ledger row (per key, model and day), oldest first, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda row: (row.day, row.key, row.model)):
        writer.writerow(row.view())
    return out.getvalue()


def budget_use(view: dict[str, Any], today: int, month: int) -> list[dict[str, Any]]:
    """A key's budgets against their use: [{"period", "used", "limit", "percent"}], only the set ones."""
    out = []
    for period, used, limit in (
        ("today", today, view.get("daily_tokens")),
        ("this month", month, view.get("monthly_tokens")),
    ):
        if limit:
            out.append({"period": period, "used": used, "limit": limit, "percent": min(100, round(100 * used / limit))})
    return out
