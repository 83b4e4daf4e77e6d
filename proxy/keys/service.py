"""Client-key enforcement: who is calling, may they use this model, may they call now — decided
before any upstream call — and what did it cost, recorded after.

The chat route does, per request::

    principal = await keys.authenticate(request.headers)        # 401
    keys.check_model(principal, translated.model)                # 403 (model after alias resolution)
    admission = await keys.admit(principal, translated.model, estimate_tokens(translated.upstream))  # 429
    try:
        ...upstream call...; headers |= admission.headers
    finally:
        await keys.settle_usage(admission, model=..., usage=...)  # a proxy.usage.Usage; None: nothing came back

Key records are cached in memory and refreshed every second (a one-value version check), so the hot
path does no store I/O for authentication; rate and budget checks use the ``limits`` library's
in-memory windows (SQLite store) or Redis (Redis store).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hmac
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr

from proxy.auth import digest, matching_name, presented_key, redact
from proxy.errors import AuthenticationFailed, PermissionDenied, ProxyError, RateLimited, ServiceUnavailable
from proxy.keys.backends import open_store
from proxy.keys.ledger import Ledger, PriceTable
from proxy.keys.limits import WindowState, duration, rate_headers
from proxy.keys.records import ClientKeyConfig, ClientKeyRecord, NewKey, iso, keys_from_config, new_record
from proxy.keys.responses import DEFAULT_MAX_STORED_BYTES, DEFAULT_RETENTION
from proxy.keys.store import (
    KeyExists,
    KeyNotFound,
    KeyStore,
    StoreError,
    UsageRow,
    day_of,
    seconds_until_next_day,
    seconds_until_next_month,
)
from proxy.usage import Usage

log = logging.getLogger("proxy.keys")

PrincipalSource = Literal["anonymous", "static", "config", "store"]


class QuotaExceeded(RateLimited):
    """429 ``insufficient_quota``: a daily or monthly token budget is spent (OpenAI's shape)."""

    type = "insufficient_quota"
    default_code = "insufficient_quota"


class ConfigKeyReadOnly(StoreError):
    """The key is declared in the config file; change it there."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. ``name`` is safe to log; the secret is never kept."""

    name: str
    source: PrincipalSource
    models: tuple[str, ...] = ()  # globs; empty: every model
    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def budgeted(self) -> bool:
        return self.daily_tokens is not None or self.monthly_tokens is not None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budgeted

    @classmethod
    def of(cls, record: ClientKeyRecord) -> Principal:
        return cls(
            name=record.name,
            source=record.source,
            models=record.models,
            rpm=record.rpm,
            tpm=record.tpm,
            daily_tokens=record.daily_tokens,
            monthly_tokens=record.monthly_tokens,
            metadata=record.metadata,
        )


ANONYMOUS = Principal(name="anonymous", source="anonymous")


@dataclass(slots=True, eq=False)
class Admission:
    """A request let through: what it reserved, and the rate-limit headers for its response."""

    principal: Principal
    model: str
    estimated_tokens: int
    day: str  # the UTC day its usage is booked on
    tpm_reserved: int = 0
    budget_reserved: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


def estimate_tokens(upstream_body: Mapping[str, Any]) -> int:
    """A cheap upper-ish estimate of a Messages API request's tokens: UTF-8 bytes of its text / 4,
    a flat 1,600 per image and 3,000 per document, plus ``max_tokens`` (the most it can answer)."""
    counter = _Counter()
    counter.walk(upstream_body.get("system"))
    counter.walk(upstream_body.get("messages"))
    tools = upstream_body.get("tools")
    if tools:
        counter.walk(tools)
    max_tokens = upstream_body.get("max_tokens")
    answer = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    return math.ceil(counter.text_bytes / 4) + counter.fixed + answer


_SKIPPED = frozenset({"type", "role", "cache_control", "id", "tool_use_id"})


class _Counter:
    __slots__ = ("fixed", "text_bytes")

    def __init__(self) -> None:
        self.text_bytes = 0
        self.fixed = 0

    def walk(self, value: Any, depth: int = 0) -> None:
        if depth > 64:
            return
        if isinstance(value, str):
            self.text_bytes += len(value.encode("utf-8", "replace"))
        elif isinstance(value, list):
            for item in value:
                self.walk(item, depth + 1)
        elif isinstance(value, dict):
            kind = value.get("type")
            if kind == "image":
                self.fixed += 1600
                return
            if kind == "document":
                source = value.get("source")
                if isinstance(source, dict) and source.get("type") == "text":
                    self.walk(source.get("data"), depth + 1)
                else:
                    self.fixed += 3000
                return
            for key, item in value.items():
                if key not in _SKIPPED:
                    self.walk(item, depth + 1)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self.text_bytes += 4


class KeyService:
    """Authentication, model allowlists, rate limits, budgets and the usage ledger for client keys."""

    def __init__(
        self,
        store: KeyStore,
        *,
        static_keys: Iterable[SecretStr] = (),
        config_keys: Sequence[ClientKeyRecord] = (),
        clock: Callable[[], float] = time.time,
        admin_key: SecretStr | None = None,
        prices: PriceTable | None = None,
        refresh_interval: float = 1.0,
        flush_interval: float = 1.0,
        reservation_timeout: float = 900.0,
        responses_retention: float = DEFAULT_RETENTION,
        responses_max_bytes: int = DEFAULT_MAX_STORED_BYTES,
    ) -> None:
        self.store = store
        self.clock = clock
        self.prices = prices or PriceTable.shipped()
        self.refresh_interval = refresh_interval
        self.flush_interval = flush_interval
        self.reservation_timeout = reservation_timeout
        self._unsettled: dict[int, tuple[float, Admission]] = {}
        self._static = [(f"key-{i + 1}", digest(k.get_secret_value())) for i, k in enumerate(static_keys)]
        self._static_principals = {name: Principal(name=name, source="static") for name, _ in self._static}
        self._config = list(config_keys)
        self._admin_digest = digest(admin_key.get_secret_value()) if admin_key is not None else None
        self._by_digest: dict[bytes, tuple[ClientKeyRecord, Principal]] = {}
        self._stored = 0
        self._version: int | None = None
        self._shadowed: set[str] = set()
        self._refresh_failing = False
        self.windows = store.rate_windows()
        self.budgets = store.budgets()
        self.ledger = Ledger(store, self.budgets, clock)
        # Stored Responses (``store: true``), in the same store; put them with ``ttl=response_retention``.
        self.responses = store.responses(responses_max_bytes)
        self.response_retention = responses_retention
        self._background: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._install([], None)

    @classmethod
    async def open(
        cls,
        store_url: str,
        static_keys: Iterable[SecretStr] = (),
        config_keys: Sequence[ClientKeyRecord | ClientKeyConfig | Mapping[str, Any]] = (),
        clock: Callable[[], float] = time.time,
        *,
        admin_key: SecretStr | None = None,
        prices: PriceTable | None = None,
        refresh_interval: float = 1.0,
        flush_interval: float = 1.0,
        reservation_timeout: float = 900.0,
        responses_retention: float = DEFAULT_RETENTION,
        responses_max_bytes: int = DEFAULT_MAX_STORED_BYTES,
    ) -> KeyService:
        """Opens the store, loads the keys (failing if the store cannot be read: no guessing who may
        call) and starts the refresh and ledger tasks. A missing SQLite file is an empty store."""
        records = [r for r in config_keys if isinstance(r, ClientKeyRecord)]
        records += keys_from_config([r for r in config_keys if not isinstance(r, ClientKeyRecord)])
        store = open_store(store_url, create=False)
        service = cls(
            store,
            static_keys=static_keys,
            config_keys=records,
            clock=clock,
            admin_key=admin_key,
            prices=prices,
            refresh_interval=refresh_interval,
            flush_interval=flush_interval,
            reservation_timeout=reservation_timeout,
            responses_retention=responses_retention,
            responses_max_bytes=responses_max_bytes,
        )
        try:
            await service.refresh(force=True)
            if service.budgets.needs_totals:
                await service.ledger.flush()  # loads today's and this month's totals
        except BaseException:
            await service.windows.aclose()
            await store.aclose()
            raise
        service.start()
        return service

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._every(self.refresh_interval, self._refresh_once), name="client-keys-refresh"),
            asyncio.create_task(self._every(self.flush_interval, self.ledger.flush), name="client-keys-ledger"),
        ]

    async def _every(self, interval: float, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # Stopped by an event rather than by cancellation: the Redis client may swallow a
        # cancellation that lands while it waits on the network, which would leave aclose() hanging.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            if self._stopping.is_set():
                return
            try:
                await action()
            except Exception:  # never let a background loop die; the next round retries
                log.exception("client keys background task failed")

    async def aclose(self) -> None:
        """Stops the background tasks, writes the last usage and closes the store."""
        self._stopping.set()
        if self._loops:
            _, late = await asyncio.wait(self._loops, timeout=15)
            for task in late:
                task.cancel()
        self._loops = []
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.ledger.flush()
        finally:
            await self.windows.aclose()
            await self.store.aclose()

    # --- the key cache -----------------------------------------------------------------------

    @property
    def required(self) -> bool:
        """True once any client key exists anywhere (environment, config file or store — a revoked
        one counts too, so revoking the last key never opens the gateway)."""
        return bool(self._static or self._config or self._stored)

    @property
    def shared_limits(self) -> bool:
        """Whether rate limits hold across processes (Redis) or per process (SQLite)."""
        return self.store.shared

    @property
    def admin_enabled(self) -> bool:
        return self._admin_digest is not None

    async def refresh(self, force: bool = False) -> bool:
        """Reloads the key records when the store's version changed. True when it reloaded."""
        version = await self.store.version()
        if not force and version == self._version:
            return False
        records = await self.store.list_keys()
        self._install(records, version)
        return True

    def _install(self, stored: list[ClientKeyRecord], version: int | None) -> None:
        by_name = {record.name: record for record in stored}
        for record in self._config:
            if by_name.get(record.name, record).source == "store" and record.name not in self._shadowed:
                self._shadowed.add(record.name)
                log.warning("config key %s shadows the stored key of the same name", record.name)
            by_name[record.name] = record
        self._by_digest = {bytes.fromhex(r.digest): (r, Principal.of(r)) for r in by_name.values()}
        self._stored = len(stored)
        self._version = version

    async def _refresh_once(self) -> None:
        try:
            await self._release_stale()
            await self.refresh()
        except Exception as exc:
            if not self._refresh_failing:
                self._refresh_failing = True
                log.warning("cannot refresh client keys from %s (keeping the last ones): %s", self.store.url, exc)
        else:
            if self._refresh_failing:
                self._refresh_failing = False
                log.info("client keys refresh from %s works again", self.store.url)

    # --- per request -------------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller behind ``Authorization: Bearer …`` or ``x-api-key``. 401 when the key is
        missing, unknown, revoked, expired or disabled. With no client key anywhere: anonymous."""
        if not self.required:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                code="missing_api_key",
            )
        candidate = digest(key)
        static = matching_name(candidate, self._static)
        if static is not None:
            return self._static_principals[static]
        # Stored and config keys: looked up by the SHA-256 of the presented key. Whatever timing
        # the lookup leaks is about a hash of the attacker's own guess, which says nothing usable
        # about any real key (the usual practice for hashed API tokens).
        found = self._by_digest.get(candidate)
        if found is None:
            raise AuthenticationFailed(f"Incorrect API key provided: {redact(key)}.")
        record, principal = found
        status = record.status(self.clock())
        if status == "revoked":
            raise AuthenticationFailed(f"The API key '{record.name}' has been revoked.", code="revoked_api_key")
        if status == "disabled":
            raise AuthenticationFailed(f"The API key '{record.name}' is disabled.", code="disabled_api_key")
        if status == "expired":
            raise AuthenticationFailed(
                f"The API key '{record.name}' expired at {iso(record.expires_at)}.", code="expired_api_key"
            )
        return principal

    def check_model(self, principal: Principal, model: str) -> None:
        """403 unless ``model`` (after alias resolution) matches one of the key's globs."""
        if not principal.models:
            return
        for pattern in principal.models:
            if fnmatch.fnmatchcase(model, pattern):
                return
        raise PermissionDenied(
            f"The API key '{principal.name}' is not allowed to use the model '{model}'.",
            param="model",
            code="model_not_allowed",
        )

    async def admit(self, principal: Principal, model: str, estimated_tokens: int) -> Admission:
        """Reserves the request against the key's budgets and rate limits, or raises 429:
        ``rate_limit_exceeded`` for rpm/tpm (with ``Retry-After`` and ``x-ratelimit-*``) and
        ``insufficient_quota`` for a spent daily/monthly budget. 503 when the limits cannot be read."""
        now = self.clock()
        admission = Admission(principal, model, max(int(estimated_tokens), 0), day_of(now))
        if not principal.limited:
            return admission
        try:
            refusal = await self._reserve(admission, now)
        except ProxyError:
            raise
        except Exception as exc:
            log.error("client key limits unavailable (%s): %s", self.store.url, exc)
            raise ServiceUnavailable(
                "The gateway cannot check this key's limits right now; try again shortly.",
                code="limits_unavailable",
                headers={"retry-after": "1"},
            ) from None
        if refusal is not None:
            raise refusal
        if admission.budget_reserved or admission.tpm_reserved:
            self._unsettled[id(admission)] = (time.monotonic(), admission)
        return admission

    async def _release_stale(self) -> None:
        """Gives back the reservations of admissions nobody settled within ``reservation_timeout``
        (a response dropped before its stream started, a bug in a caller). A late ``settle`` still
        books the full usage: it then settles against a reservation of zero."""
        cutoff = time.monotonic() - self.reservation_timeout
        stale = [admission for since, admission in self._unsettled.values() if since < cutoff]
        for admission in stale:
            del self._unsettled[id(admission)]
            reserved, admission.budget_reserved = admission.budget_reserved, 0
            admission.tpm_reserved = 0  # the minute window has forgotten it by now
            log.warning("released the reservation of an unsettled request of key %s", admission.principal.name)
            if reserved:
                await self.budgets.adjust(admission.principal.name, admission.day, -reserved)

    async def _reserve(self, admission: Admission, now: float) -> ProxyError | None:
        p = admission.principal
        estimate = admission.estimated_tokens
        if p.budgeted:
            check = await self.budgets.reserve(p.name, admission.day, estimate, p.daily_tokens, p.monthly_tokens)
            if check.exhausted is not None:
                return await self._quota_error(p, check.exhausted, check.used, now)
            admission.budget_reserved = check.reserved
        if p.tpm is not None:
            # A request larger than the whole minute's allowance waits for an empty window.
            need = min(estimate, p.tpm)
            if not await self.windows.hit_tokens(p.name, p.tpm, need):
                await self._undo(admission)
                tokens = await self.windows.token_state(p.name, p.tpm, now, need)
                requests = await self._request_state(p, now)
                return _rate_error(
                    f"Rate limit reached for key '{p.name}' on tokens per minute: limit {p.tpm}, "
                    f"this request needs about {need}. Try again in {duration(tokens.reset)}.",
                    tokens.reset,
                    requests,
                    tokens,
                )
            admission.tpm_reserved = need
        if p.rpm is not None and not await self.windows.hit_request(p.name, p.rpm):
            await self._undo(admission)
            window = await self.windows.request_state(p.name, p.rpm, now)
            return _rate_error(
                f"Rate limit reached for key '{p.name}' on requests per minute: limit {p.rpm}. "
                f"Try again in {duration(window.reset)}.",
                window.reset,
                window,
                await self._token_state(p, now),
            )
        # One after the other: two tasks for a gather cost more than the second Redis round trip saves.
        requests_state, tokens_state = await self._request_state(p, now), await self._token_state(p, now)
        admission.headers = rate_headers(requests_state, tokens_state)
        return None

    async def _request_state(self, p: Principal, now: float) -> WindowState | None:
        return await self.windows.request_state(p.name, p.rpm, now) if p.rpm is not None else None

    async def _token_state(self, p: Principal, now: float) -> WindowState | None:
        return await self.windows.token_state(p.name, p.tpm, now) if p.tpm is not None else None

    async def _undo(self, admission: Admission) -> None:
        p = admission.principal
        if admission.tpm_reserved and p.tpm is not None:
            await self.windows.adjust_tokens(p.name, p.tpm, -admission.tpm_reserved)
            admission.tpm_reserved = 0
        if admission.budget_reserved:
            await self.budgets.adjust(p.name, admission.day, -admission.budget_reserved)
            admission.budget_reserved = 0

    async def _quota_error(self, p: Principal, period: str, used: int, now: float) -> ProxyError:
        if period == "daily":
            limit, wait, when = p.daily_tokens, seconds_until_next_day(now), "UTC day"
        else:
            limit, wait, when = p.monthly_tokens, seconds_until_next_month(now), "UTC month"
        requests, tokens = await self._request_state(p, now), await self._token_state(p, now)
        headers = {"retry-after": str(max(math.ceil(wait), 1)), **rate_headers(requests, tokens)}
        return QuotaExceeded(
            f"You exceeded your current quota: the API key '{p.name}' has used {used} of its {period} budget "
            f"of {limit} tokens. It renews at the start of the next {when}.",
            headers=headers,
        )

    async def settle(
        self,
        admission: Admission,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        cache_write_tokens: int = 0,
    ) -> None:
        """``settle_usage`` from OpenAI-style counts: ``input_tokens`` is the whole prompt (OpenAI's
        ``prompt_tokens``: cache reads and writes included), ``cached_tokens`` the cache reads among
        them, ``cache_write_tokens`` the cache writes; pass zeros when nothing came back."""
        prompt = max(int(input_tokens or 0), 0)
        cached = min(max(int(cached_tokens or 0), 0), prompt)
        written = min(max(int(cache_write_tokens or 0), 0), prompt - cached)
        usage = Usage(
            input=prompt - cached - written,
            output=max(int(output_tokens or 0), 0),
            cache_read=cached,
            cache_write=written,
        )
        await self.settle_usage(admission, model=model, usage=usage)

    async def settle_usage(self, admission: Admission, *, model: str, usage: Usage | None) -> None:
        """Books the request's real usage and replaces its reservations by it; ``None`` (nothing
        came back) settles at zero. Idempotent: only the first call counts. Safe in a ``finally`` of
        a cancelled stream: the ledger entry is made before the first await, and the limiter update
        runs to completion in its own task. Limits and budgets count the whole prompt + output."""
        if admission.settled:
            return
        admission.settled = True
        self._unsettled.pop(id(admission), None)
        usage = usage if usage is not None else Usage()
        p = admission.principal
        if p.source != "anonymous":
            cost = self.prices.cost(
                model,
                input_tokens=usage.prompt,
                output_tokens=usage.output,
                cached_tokens=usage.cache_read,
                cache_write_tokens=usage.cache_write,
            )
            self.ledger.book(p.name, model, admission.day, usage, cost)
        used = usage.total
        tpm_delta = used - admission.tpm_reserved if p.tpm is not None else 0
        budget_delta = used - admission.budget_reserved if p.budgeted else 0
        if tpm_delta or budget_delta:
            task = self._spawn(self._settle_limits(admission, tpm_delta, budget_delta))
            await asyncio.shield(task)

    async def _settle_limits(self, admission: Admission, tpm_delta: int, budget_delta: int) -> None:
        p = admission.principal
        try:
            if tpm_delta and p.tpm is not None:
                await self.windows.adjust_tokens(p.name, p.tpm, tpm_delta)
            if budget_delta:
                await self.budgets.adjust(p.name, admission.day, budget_delta)
        except Exception as exc:
            log.warning("cannot settle the limits of key %s: %s", p.name, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- administration (admin API; the CLI uses the store directly) ---------------------------

    def _config_names(self) -> set[str]:
        return {record.name for record in self._config}

    async def create_key(self, spec: NewKey) -> tuple[ClientKeyRecord, str]:
        """Creates a stored key; returns it with its secret, which is not kept anywhere."""
        if spec.name in self._config_names():
            raise KeyExists(f"a key named {spec.name!r} is declared in the config file")
        record, secret = new_record(spec, self.clock())
        await self.store.create_key(record)
        log.info("created client key %s", record.name)
        await self._refresh_now()
        return record, secret

    async def revoke_key(self, name: str) -> ClientKeyRecord:
        if name in self._config_names():
            raise ConfigKeyReadOnly(f"the key {name!r} is declared in the config file; remove it there")
        record = await self.store.revoke_key(name, datetime.fromtimestamp(self.clock(), UTC))
        log.info("revoked client key %s", name)
        await self._refresh_now()
        return record

    async def set_enabled(self, name: str, enabled: bool) -> ClientKeyRecord:
        if name in self._config_names():
            raise ConfigKeyReadOnly(f"the key {name!r} is declared in the config file; change it there")
        record = await self.store.set_enabled(name, enabled)
        log.info("%s client key %s", "enabled" if enabled else "disabled", name)
        await self._refresh_now()
        return record

    async def update_key(self, name: str, changes: Mapping[str, Any]) -> ClientKeyRecord:
        """Changes a stored key's models, limits, budgets, expiry or metadata (``None`` clears one).
        Raises ``ValueError`` (pydantic's ``ValidationError`` is one) for an invalid change."""
        if name in self._config_names():
            raise ConfigKeyReadOnly(f"the key {name!r} is declared in the config file; change it there")
        record = await self.store.update_key(name, changes)
        log.info("changed client key %s: %s", name, ", ".join(sorted(changes)))
        await self._refresh_now()
        return record

    async def _refresh_now(self) -> None:
        try:
            await self.refresh(force=True)
        except Exception as exc:  # the refresh loop will catch up
            log.warning("cannot refresh client keys from %s: %s", self.store.url, exc)

    async def key_records(self) -> list[ClientKeyRecord]:
        """Stored and config keys, config first where a name is both."""
        by_name = {r.name: r for r in await self.store.list_keys()}
        by_name.update({r.name: r for r in self._config})
        return [by_name[name] for name in sorted(by_name)]

    async def key_record(self, name: str) -> ClientKeyRecord:
        for config in self._config:
            if config.name == name:
                return config
        record = await self.store.get_key(name)
        if record is None:
            raise KeyNotFound(f"no key named {name!r}")
        return record

    def static_views(self) -> list[dict[str, Any]]:
        return [
            {"object": "client_key", "name": name, "status": "active", "source": "environment", "models": []}
            for name, _ in self._static
        ]

    async def usage(self, key: str | None, since: str, until: str) -> list[UsageRow]:
        await self.ledger.flush()  # include this process's latest requests
        return await self.store.usage(key, since, until)

    async def spent(self, name: str) -> tuple[int, int]:
        """Tokens booked for ``name`` today and this month (UTC), from the ledger."""
        await self.ledger.flush()
        day = day_of(self.clock())
        totals = await self.store.token_totals(day)
        return totals.get(name, (0, 0))

    def is_admin(self, headers: Mapping[str, str]) -> bool | None:
        """True for the admin key; False for a client key; None for anything else."""
        key = presented_key(headers)
        if key is None:
            return None
        candidate = digest(key)
        if self._admin_digest is not None and hmac.compare_digest(candidate, self._admin_digest):
            return True
        if candidate in self._by_digest or matching_name(candidate, self._static) is not None:
            return False
        return None


def _rate_error(message: str, wait: float, requests: WindowState | None, tokens: WindowState | None) -> RateLimited:
    headers = {"retry-after": str(max(math.ceil(round(wait, 2)), 1)), **rate_headers(requests, tokens)}
    return RateLimited(message, headers=headers)


__all__ = [
    "ANONYMOUS",
    "Admission",
    "KeyService",
    "Principal",
    "QuotaExceeded",
    "estimate_tokens",
]
