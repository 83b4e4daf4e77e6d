"""The Redis key store: every replica shares keys, rate windows, budgets and the usage ledger.

Layout (prefix ``claude-proxy:`` unless the URL says ``?prefix=…``):

    {p}keys                hash   name → record JSON (digest, never the secret)
    {p}digests             hash   digest → name (keeps digests unique)
    {p}keys:version        int    bumped by every key change: what gateways poll
    {p}usage:{day}         hash   ["key","model","metric"] → count (cost_usd as a float)
    {p}usage:days          zset   days that have usage, scored by ordinal
    {p}budget:{key}:{day}  int    tokens used and reserved that UTC day (and :{YYYY-MM} for the month)
    {p}limits:…                   the ``limits`` library's request and token windows
    {p}response:{key}:{id}  bytes  a stored Response (``store: true``), expiring by its own TTL
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis.asyncio
from redis.client import NEVER_DECODE
from redis.exceptions import RedisError

from proxy.keys.limits import Budgets, RateWindows, RedisBudgets, Windows
from proxy.keys.records import ClientKeyRecord
from proxy.keys.responses import StoredResponses
from proxy.keys.store import (
    KeyExists,
    KeyNotFound,
    KeyStore,
    StoreError,
    UsageRow,
    amended,
    changed,
    enabled_as,
    month_of,
    next_month_start,
    redact_url,
)

DEFAULT_PREFIX = "claude-proxy:"
MAX_CONNECTIONS = 64  # per process; `?max_connections=N` in the URL overrides it
_METRICS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens")

# KEYS: keys hash, digests hash, version. ARGV: name, digest, record JSON. 0 ok, 1 name taken, 2 digest taken.
_CREATE = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('hexists', KEYS[2], ARGV[2]) == 1 then return 2 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
redis.call('hset', KEYS[2], ARGV[2], ARGV[1])
redis.call('incr', KEYS[3])
return 0
"""

# KEYS: keys hash, version. ARGV: name, record JSON. 1 replaced, 0 no such key.
_REPLACE = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('incr', KEYS[2])
return 1
"""


def _split_prefix(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


class RedisStore(KeyStore):
    shared = True

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        connect_url, self.prefix = _split_prefix(url)
        try:
            # A bounded pool that makes callers wait for a connection rather than fail under bursts.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                connect_url,
                max_connections=MAX_CONNECTIONS,
                timeout=5.0,
                decode_responses=True,
                socket_timeout=5.0,
                socket_connect_timeout=5.0,
            )
            self.client: redis.asyncio.Redis = redis.asyncio.Redis.from_pool(pool)
        except ValueError as exc:
            raise StoreError(f"invalid Redis store URL {self.url!r}: {exc}") from None
        self._keys = f"{self.prefix}keys"
        self._digests = f"{self.prefix}digests"
        self._version = f"{self.prefix}keys:version"
        self._days = f"{self.prefix}usage:days"
        self._create = self.client.register_script(_CREATE)
        self._replace = self.client.register_script(_REPLACE)
        self._windows: Windows | None = None
        self._budgets: RedisBudgets | None = None

    def _error(self, exc: Exception) -> StoreError:
        return StoreError(f"key store {self.url}: {type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- keys ----------------------------------------------------------------------------

    async def version(self) -> int:
        try:
            value = await self.client.get(self._version)
        except RedisError as exc:
            raise self._error(exc) from exc
        return int(value or 0)

    async def list_keys(self) -> list[ClientKeyRecord]:
        try:
            rows = cast(dict[str, str], await self.client.hgetall(self._keys))
        except RedisError as exc:
            raise self._error(exc) from exc
        return sorted((ClientKeyRecord.model_validate_json(v) for v in rows.values()), key=lambda r: r.name)

    async def get_key(self, name: str) -> ClientKeyRecord | None:
        try:
            raw = cast(str | None, await self.client.hget(self._keys, name))
        except RedisError as exc:
            raise self._error(exc) from exc
        return ClientKeyRecord.model_validate_json(raw) if raw else None

    async def create_key(self, record: ClientKeyRecord) -> None:
        try:
            outcome = await self._create(
                keys=[self._keys, self._digests, self._version],
                args=[record.name, record.digest, record.model_dump_json()],
            )
        except RedisError as exc:
            raise self._error(exc) from exc
        if int(outcome) == 1:
            raise KeyExists(f"a key named {record.name!r} already exists (names stay taken after revocation)")
        if int(outcome) == 2:
            raise KeyExists("another key has the same secret digest")

    async def _replace_record(self, record: ClientKeyRecord) -> None:
        try:
            outcome = await self._replace(
                keys=[self._keys, self._version], args=[record.name, record.model_dump_json()]
            )
        except RedisError as exc:
            raise self._error(exc) from exc
        if int(outcome) == 0:
            raise KeyNotFound(f"no key named {record.name!r}")

    async def _require(self, name: str) -> ClientKeyRecord:
        record = await self.get_key(name)
        if record is None:
            raise KeyNotFound(f"no key named {name!r}")
        return record

    async def revoke_key(self, name: str, at: datetime) -> ClientKeyRecord:
        record = await self._require(name)
        if record.revoked_at is not None:
            return record
        updated = record.model_copy(update={"revoked_at": at})
        await self._replace_record(updated)
        return updated

    async def set_enabled(self, name: str, enabled: bool) -> ClientKeyRecord:
        return await self._amend(name, lambda record: enabled_as(record, enabled))

    async def update_key(self, name: str, changes: Mapping[str, Any]) -> ClientKeyRecord:
        return await self._amend(name, lambda record: changed(record, changes))

    async def _amend(self, name: str, change: Callable[[ClientKeyRecord], ClientKeyRecord]) -> ClientKeyRecord:
        record = await self._require(name)
        updated = amended(record, change)
        if updated is not record:
            await self._replace_record(updated)
        return updated

    # --- usage ---------------------------------------------------------------------------

    def _usage_key(self, day: str) -> str:
        return f"{self.prefix}usage:{day}"

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for row in rows:
                    hash_key = self._usage_key(row.day)
                    for metric in _METRICS:
                        value = getattr(row, metric)
                        if value:
                            pipe.hincrby(hash_key, _field(row.key, row.model, metric), value)
                    if row.cost_usd:
                        pipe.hincrbyfloat(hash_key, _field(row.key, row.model, "cost_usd"), row.cost_usd)
                    pipe.zadd(self._days, {row.day: date.fromisoformat(row.day).toordinal()}, nx=True)
                await pipe.execute()
        except RedisError as exc:
            raise self._error(exc) from exc

    async def _days_between(self, since: str, until: str) -> list[str]:
        low, high = date.fromisoformat(since).toordinal(), date.fromisoformat(until).toordinal()
        try:
            days = cast(list[str], await self.client.zrangebyscore(self._days, low, high))
        except RedisError as exc:
            raise self._error(exc) from exc
        return days

    async def _read_days(self, days: list[str]) -> list[tuple[str, dict[str, str]]]:
        if not days:
            return []
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self._usage_key(day))
                hashes: list[dict[str, str]] = await pipe.execute()
        except RedisError as exc:
            raise self._error(exc) from exc
        return list(zip(days, hashes, strict=True))

    async def usage(self, key: str | None, since: str, until: str) -> list[UsageRow]:
        rows: dict[tuple[str, str, str], UsageRow] = {}
        for day, fields in await self._read_days(await self._days_between(since, until)):
            for field, value in fields.items():
                name, model, metric = orjson.loads(field)
                if key is not None and name != key:
                    continue
                row = rows.setdefault((day, name, model), UsageRow(key=name, model=model, day=day))
                if metric == "cost_usd":
                    row.cost_usd = float(value)
                elif metric in _METRICS:
                    setattr(row, metric, int(value))
        return [rows[k] for k in sorted(rows)]

    async def token_totals(self, day: str) -> dict[str, tuple[int, int]]:
        month = month_of(day)
        totals: dict[str, list[int]] = {}
        last = (date.fromisoformat(next_month_start(month)) - timedelta(days=1)).isoformat()
        for row in await self.usage(None, f"{month}-01", last):
            entry = totals.setdefault(row.key, [0, 0])
            entry[1] += row.tokens
            if row.day == day:
                entry[0] += row.tokens
        return {name: (v[0], v[1]) for name, v in totals.items()}

    # --- limiter state -------------------------------------------------------------------

    def rate_windows(self) -> Windows:
        if self._windows is None:
            from limits.aio.storage import RedisStorage

            # Shares this store's connection pool; the URI only names the client flavour.
            storage = RedisStorage(
                "async+redis://localhost:6379",
                implementation="redispy",
                key_prefix=f"{self.prefix}limits",
                connection_pool=self.client.connection_pool,  # type: ignore[arg-type]
            )
            self._windows = RateWindows(storage)
        return self._windows

    def budgets(self) -> Budgets:
        if self._budgets is None:
            self._budgets = RedisBudgets(self.client, self.prefix)
        return self._budgets

    def responses(self, max_bytes: int) -> StoredResponses:
        return RedisResponses(self, max_bytes)


class RedisResponses(StoredResponses):
    """One string per stored response, ``SET … PX ttl``: Redis forgets it by itself. The owner is in
    the key, so another key's id is simply absent. Key names never hold ``:`` (records.py), so
    ``{owner}:{id}`` cannot be read as another owner's key."""

    def __init__(self, store: RedisStore, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._store = store
        self._client = store.client

    def _key(self, owner: str, response_id: str) -> str:
        return f"{self._store.prefix}response:{owner}:{response_id}"

    async def _put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        try:
            await self._client.set(self._key(owner, response_id), record, px=max(math.ceil(ttl * 1000), 1))
        except RedisError as exc:
            raise self._store._error(exc) from exc

    async def get(self, owner: str, response_id: str) -> bytes | None:
        try:
            # The pool decodes replies to str; a record is bytes, so this reply is read undecoded.
            raw = await self._client.execute_command(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                "GET", self._key(owner, response_id), **{NEVER_DECODE: True}
            )
        except RedisError as exc:
            raise self._store._error(exc) from exc
        return cast(bytes | None, raw)

    async def delete(self, owner: str, response_id: str) -> bool:
        try:
            removed = await self._client.delete(self._key(owner, response_id))
        except RedisError as exc:
            raise self._store._error(exc) from exc
        return int(removed) > 0


def _field(key: str, model: str, metric: str) -> str:
    return orjson.dumps([key, model, metric]).decode()
