"""Where client keys and their usage live, chosen by the store URL.

    ./claude-proxy.db, /var/lib/proxy/keys.db    SQLite file (a plain path)
    sqlite:///relative.db, sqlite:////abs.db     SQLite file (SQLAlchemy's spelling: three slashes, then the path)
    redis://host:6379/0, rediss://…, unix://…    Redis; every replica shares keys, limits, budgets and usage

The gateway and the CLI read the same setting (``PROXY_STORE``), so a key created from the command
line reaches every running gateway on its next refresh.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from proxy.keys.records import ClientKeyRecord
from proxy.keys.responses import StoredResponses


class StoreError(Exception):
    """The store cannot be used; the message says which store and why (never a password)."""


class KeyExists(StoreError):
    pass


class KeyNotFound(StoreError):
    pass


class KeyRevoked(StoreError):
    pass


@dataclass(slots=True)
class UsageRow:
    """Usage of one key with one model on one UTC day. ``input_tokens`` counts every prompt token
    (cache reads and writes included, as OpenAI's ``prompt_tokens``); ``cached_tokens`` and
    ``cache_write_tokens`` are the parts of it read from and written to the prompt cache."""

    key: str
    model: str
    day: str  # YYYY-MM-DD, UTC
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: UsageRow) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd

    def view(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["cost_usd"] = round(self.cost_usd, 6)
        out["total_tokens"] = self.tokens
        return out


def day_of(moment: float) -> str:
    """The UTC day of a Unix time, ``YYYY-MM-DD``. Unix time has no leap seconds, so every UTC day
    is 86400 of its seconds; asked on every admitted request, so the few recent days are remembered."""
    return _day(int(moment // 86400))


@functools.lru_cache(maxsize=8)
def _day(days_since_epoch: int) -> str:
    return (_EPOCH + timedelta(days=days_since_epoch)).isoformat()


_EPOCH = date(1970, 1, 1)


def month_of(day: str) -> str:
    return day[:7]


def next_month_start(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return f"{year:04d}-{mon:02d}-01"


def seconds_until_next_day(moment: float) -> float:
    now = datetime.fromtimestamp(moment, UTC)
    tomorrow = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return max(tomorrow.timestamp() - moment, 0.0)


def seconds_until_next_month(moment: float) -> float:
    start = date.fromisoformat(next_month_start(month_of(day_of(moment))))
    return max(datetime(start.year, start.month, 1, tzinfo=UTC).timestamp() - moment, 0.0)


# --- what a store offers besides keys and usage: the budget counters (kept by proxy.keys.limits) ---


@dataclass(frozen=True, slots=True)
class WindowState:
    limit: int
    remaining: int
    reset: float  # seconds until the window has room again: 0 while it has (x-ratelimit-reset-*)


class Windows(Protocol):
    """The per-minute request and token windows of every key, keyed by key name
    (`proxy.keys.limits`: in memory, or in Redis)."""

    async def hit_request(self, name: str, rpm: int) -> bool: ...

    async def request_state(self, name: str, rpm: int, now: float) -> WindowState: ...

    async def hit_tokens(self, name: str, tpm: int, cost: int) -> bool: ...

    async def adjust_tokens(self, name: str, tpm: int, delta: int) -> None: ...

    async def token_state(self, name: str, tpm: int, now: float, need: int = 0) -> WindowState: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    reserved: int  # tokens reserved (0 when refused)
    exhausted: str | None  # "daily" or "monthly" when refused
    used: int  # tokens used in the exhausted period (when refused)


class Budgets(abc.ABC):
    """Daily and monthly token counters per key, including reservations of calls in flight.

    A request is admitted while its key has budget left in both periods; it reserves its whole
    estimate (an upper bound of its usage: prompt bytes / 4 plus ``max_tokens``), even past the
    limit, and settling replaces the reservation by the real usage. The counter thus never holds
    less than what the calls admitted so far will use, so the last request admitted saw less than
    the limit behind it, and the budget is overrun by at most that one request's usage.

    (A reservation capped at what is left would not hold that bound under concurrency: while a
    capped call is in flight, another call's settling gives tokens back, a third call is admitted
    against them with a capped reservation too, and each capped call overruns by its part beyond
    what it reserved.)"""

    @abc.abstractmethod
    async def reserve(
        self, name: str, day: str, amount: int, daily: int | None, monthly: int | None
    ) -> BudgetCheck: ...

    @abc.abstractmethod
    async def adjust(self, name: str, day: str, delta: int) -> None: ...

    @abc.abstractmethod
    def written(self, rows: list[UsageRow]) -> None:
        """The ledger wrote ``rows`` to the store."""

    @abc.abstractmethod
    def totals(self, day: str, totals: dict[str, tuple[int, int]]) -> None:
        """Fresh ledger totals for ``day`` and its month, per key."""

    @property
    @abc.abstractmethod
    def needs_totals(self) -> bool:
        """Whether the ledger should pass ``totals`` after each write."""


class KeyStore(abc.ABC):
    """Persistence for key records and the usage ledger, plus the shared state the limiter needs.

    Every method is async; the SQLite store runs its blocking calls in a worker thread."""

    url: str  # safe to log: any password is masked
    shared: bool  # True when limits are enforced across processes (Redis)

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    @abc.abstractmethod
    async def version(self) -> int:
        """A number that changes whenever any key record changes: cheap change detection."""

    @abc.abstractmethod
    async def list_keys(self) -> list[ClientKeyRecord]: ...

    @abc.abstractmethod
    async def get_key(self, name: str) -> ClientKeyRecord | None: ...

    @abc.abstractmethod
    async def create_key(self, record: ClientKeyRecord) -> None:
        """Raises ``KeyExists`` when the name (or, astronomically unlikely, the digest) is taken."""

    @abc.abstractmethod
    async def revoke_key(self, name: str, at: datetime) -> ClientKeyRecord:
        """Marks the key revoked (for good: the name stays taken, its usage stays attributable).
        Revoking a revoked key changes nothing. Raises ``KeyNotFound``."""

    @abc.abstractmethod
    async def set_enabled(self, name: str, enabled: bool) -> ClientKeyRecord:
        """Raises ``KeyNotFound``, or ``KeyRevoked`` for a revoked key."""

    @abc.abstractmethod
    async def update_key(self, name: str, changes: Mapping[str, Any]) -> ClientKeyRecord:
        """The record with ``changes`` (fields of `KeyFields`) applied and validated, stored.
        Raises ``KeyNotFound``, ``KeyRevoked`` for a revoked key, ``ValueError`` for an invalid change."""

    @abc.abstractmethod
    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        """Adds the rows to the ledger (summing with what is there for the same key, model and day)."""

    @abc.abstractmethod
    async def usage(self, key: str | None, since: str, until: str) -> list[UsageRow]:
        """Ledger rows for one key (or all) from ``since`` to ``until``, both inclusive (YYYY-MM-DD)."""

    @abc.abstractmethod
    async def token_totals(self, day: str) -> dict[str, tuple[int, int]]:
        """Tokens used per key on ``day`` and in its month, from the ledger."""

    @abc.abstractmethod
    def rate_windows(self) -> Windows:
        """The request and token windows of every key."""

    @abc.abstractmethod
    def budgets(self) -> Budgets:
        """The daily and monthly token counters."""

    @abc.abstractmethod
    def responses(self, max_bytes: int) -> StoredResponses:
        """Stored Responses (``store: true``), each record at most ``max_bytes``."""


def is_redis_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in {"redis", "rediss", "unix"}


def sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if "://" in url:
        raise StoreError(
            f"unsupported store URL scheme in {redact_url(url)!r}: use a file path, sqlite:///path or redis://host:port/db"
        )
    return url


_SECRET_QUERY_WORDS = ("pass", "secret", "token", "key", "auth", "cred")


def redact_url(url: str) -> str:
    """The URL safe to print or log: a password (``user:pw@``, or a lone ``token@``) becomes ``***``,
    and so does the value of any query parameter named like a secret (redis-py reads ``?password=``).
    A plain file path comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or "://" not in url:
        return url
    masked = parts
    host = parts.netloc.rpartition("@")[2]
    if parts.password is not None:
        masked = masked._replace(netloc=f"{parts.username or ''}:***@{host}")
    elif "@" in parts.netloc:
        masked = masked._replace(netloc=f"***@{host}")
    if parts.query:
        masked = masked._replace(query="&".join(_redact_param(pair) for pair in parts.query.split("&")))
    # Rebuilt only when something was masked: urlunsplit would drop the empty host of sqlite:////abs.db.
    return url if masked == parts else urlunsplit(masked)


def _redact_param(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    secret = equals and any(word in name.lower() for word in _SECRET_QUERY_WORDS)
    return f"{name}=***" if secret else pair


EDITABLE = frozenset({"models", "rpm", "tpm", "daily_tokens", "monthly_tokens", "expires_at", "metadata"})


def enabled_as(record: ClientKeyRecord, enabled: bool) -> ClientKeyRecord:
    """``record`` enabled or disabled (itself when it already is: nothing to write)."""
    return record if record.enabled == enabled else record.model_copy(update={"enabled": enabled})


def amended(record: ClientKeyRecord, change: Callable[[ClientKeyRecord], ClientKeyRecord]) -> ClientKeyRecord:
    """``change`` applied to a stored key; a revoked key cannot be changed (`KeyRevoked`)."""
    if record.revoked_at is not None:
        raise KeyRevoked(f"the key {record.name!r} is revoked; create a new key instead")
    return change(record)


def changed(record: ClientKeyRecord, changes: Mapping[str, Any]) -> ClientKeyRecord:
    """``record`` with ``changes`` applied, validated as a new record would be (``ValueError`` if not)."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValueError(
            f"cannot change {', '.join(sorted(unknown))} of a key (editable: {', '.join(sorted(EDITABLE))})"
        )
    return ClientKeyRecord.model_validate({**record.model_dump(), **changes})
