"""KeyService against both stores: authentication, allowlists, rpm/tpm, budgets, settling, the
ledger, refresh of created and revoked keys, concurrency and replicas sharing Redis."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from proxy.errors import AuthenticationFailed, PermissionDenied, RateLimited, ServiceUnavailable
from proxy.keys import ANONYMOUS, KeyService, NewKey, QuotaExceeded, any_keys_stored, estimate_tokens, open_store
from proxy.keys.records import hash_secret, new_record
from proxy.keys.service import ConfigKeyReadOnly
from proxy.keys.store import KeyExists, StoreError
from proxy.usage import Usage
from tests.keys_support import redis_dump, sqlite_bytes
from tests.servers import free_port

pytestmark = pytest.mark.anyio

MODEL = "claude-haiku-4-5"
RATE_HEADERS = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
}


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = now if now is not None else time.time()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def opened(url: str, **kwargs: Any) -> AsyncIterator[KeyService]:
    kwargs.setdefault("refresh_interval", 0.05)
    kwargs.setdefault("flush_interval", 0.05)
    service = await KeyService.open(url, **kwargs)
    try:
        yield service
    finally:
        await service.aclose()


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def create(service: KeyService, **fields: Any) -> str:
    _, secret = await service.create_key(NewKey(**fields))
    return secret


async def settle(service: KeyService, admission: Any, input_tokens: int = 0, output_tokens: int = 0) -> None:
    await service.settle(
        admission, model=admission.model, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=0
    )


# --- authentication ---------------------------------------------------------------------------


async def test_no_key_anywhere_means_anonymous(store_url: str) -> None:
    async with opened(store_url) as service:
        assert not service.required
        assert await service.authenticate({}) is ANONYMOUS
        admission = await service.admit(ANONYMOUS, MODEL, 100)
        assert admission.headers == {}
        await settle(service, admission, 10, 10)
        assert await service.usage(None, "2000-01-01", "2999-12-31") == []  # anonymous use is not booked


async def test_static_keys_work_beside_stored_keys(store_url: str) -> None:
    async with opened(store_url, static_keys=[SecretStr("static-secret-1"), SecretStr("static-secret-2")]) as service:
        assert service.required
        secret = await create(service, name="team-a", models="claude-haiku-*", rpm=1)
        static = await service.authenticate({"x-api-key": "static-secret-2"})
        assert (static.name, static.source, static.rpm, static.models) == ("key-2", "static", None, ())
        service.check_model(static, "claude-opus-4-5")  # every model
        for _ in range(3):  # unlimited
            await service.admit(static, "claude-opus-4-5", 10_000)
        stored = await service.authenticate(bearer(secret))
        assert (stored.name, stored.source, stored.rpm) == ("team-a", "store", 1)


async def test_missing_and_unknown_keys_are_refused(store_url: str) -> None:
    async with opened(store_url) as service:
        await create(service, name="team-a")
        with pytest.raises(AuthenticationFailed) as missing:
            await service.authenticate({})
        assert (missing.value.status_code, missing.value.code) == (401, "missing_api_key")
        with pytest.raises(AuthenticationFailed) as unknown:
            await service.authenticate(bearer("sk-cp-not-a-key-at-all-0000000000000000000000"))
        assert unknown.value.code == "invalid_api_key"
        assert "sk-cp-not-a-key" not in unknown.value.message  # redacted
        with pytest.raises(AuthenticationFailed):
            await service.authenticate({"authorization": "Basic abc"})


async def test_revoked_disabled_and_expired_keys_are_refused(store_url: str) -> None:
    clock = Clock()
    async with opened(store_url, clock=clock) as service:
        revoked = await create(service, name="revoked")
        disabled = await create(service, name="disabled")
        expiring = await create(service, name="expiring", expires_at=datetime.fromtimestamp(clock.now + 3600, UTC))
        await service.revoke_key("revoked")
        await service.set_enabled("disabled", False)
        for secret, code in ((revoked, "revoked_api_key"), (disabled, "disabled_api_key")):
            with pytest.raises(AuthenticationFailed) as refused:
                await service.authenticate(bearer(secret))
            assert (refused.value.status_code, refused.value.code) == (401, code)
        assert (await service.authenticate(bearer(expiring))).name == "expiring"
        clock.now += 3601
        with pytest.raises(AuthenticationFailed) as expired:
            await service.authenticate(bearer(expiring))
        assert expired.value.code == "expired_api_key"
        await service.set_enabled("disabled", True)
        assert (await service.authenticate(bearer(disabled))).name == "disabled"
        with pytest.raises(StoreError):
            await service.set_enabled("revoked", True)  # revocation is for good


async def test_revoking_the_last_key_keeps_keys_required(store_url: str) -> None:
    async with opened(store_url) as service:
        await create(service, name="only")
        await service.revoke_key("only")
        assert service.required
        with pytest.raises(AuthenticationFailed):
            await service.authenticate({})


async def test_names_are_unique_and_reserved(store_url: str) -> None:
    async with opened(store_url) as service:
        await create(service, name="team-a")
        with pytest.raises(KeyExists):
            await create(service, name="team-a")
        await service.revoke_key("team-a")
        with pytest.raises(KeyExists):  # names stay taken after revocation
            await create(service, name="team-a")
    with pytest.raises(ValueError, match="reserved"):
        NewKey(name="key-1")


# --- model allowlist ----------------------------------------------------------------------------


async def test_model_allowlist(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="haiku-only", models="claude-haiku-*")
        principal = await service.authenticate(bearer(secret))
        service.check_model(principal, "claude-haiku-4-5")
        with pytest.raises(PermissionDenied) as denied:
            service.check_model(principal, "claude-sonnet-4-6")
        assert denied.value.status_code == 403
        assert "claude-sonnet-4-6" in denied.value.message
        assert (denied.value.param, denied.value.code) == ("model", "model_not_allowed")


# --- rate limits --------------------------------------------------------------------------------


async def test_rpm_5_refuses_the_sixth_with_retry_after_and_headers(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="five", rpm=5, tpm=100_000)
        principal = await service.authenticate(bearer(secret))
        for i in range(5):
            admission = await service.admit(principal, MODEL, 100)
            assert set(admission.headers) == RATE_HEADERS
            assert admission.headers["x-ratelimit-limit-requests"] == "5"
            assert admission.headers["x-ratelimit-remaining-requests"] == str(4 - i)
            await settle(service, admission, 50, 10)
        with pytest.raises(RateLimited) as limited:
            await service.admit(principal, MODEL, 100)
        error = limited.value
        assert (error.status_code, error.code, error.type) == (429, "rate_limit_exceeded", "rate_limit_error")
        assert 1 <= int(error.headers["retry-after"]) <= 60
        assert set(error.headers) >= RATE_HEADERS
        assert error.headers["x-ratelimit-remaining-requests"] == "0"
        assert re.fullmatch(r"(\d+m)?\d+s|\d+ms", error.headers["x-ratelimit-reset-requests"])
        assert "requests per minute" in error.message


async def test_tokens_per_minute_reserve_then_settle(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="tpm", tpm=1000)
        principal = await service.authenticate(bearer(secret))
        first = await service.admit(principal, MODEL, 600)
        assert first.headers["x-ratelimit-remaining-tokens"] == "400"
        assert "x-ratelimit-limit-requests" not in first.headers  # no rpm on this key
        with pytest.raises(RateLimited) as limited:
            await service.admit(principal, MODEL, 600)  # the reservation holds the room
        assert "tokens per minute" in limited.value.message
        assert int(limited.value.headers["retry-after"]) >= 1
        assert limited.value.headers["x-ratelimit-limit-tokens"] == "1000"
        await settle(service, first, 80, 20)  # used 100 of the 600 reserved
        second = await service.admit(principal, MODEL, 600)
        assert second.headers["x-ratelimit-remaining-tokens"] == "300"
        await settle(service, second, 700, 100)  # more than reserved: the window takes it
        with pytest.raises(RateLimited):
            await service.admit(principal, MODEL, 200)


async def test_a_refused_request_gives_back_its_token_reservation(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="both", rpm=1, tpm=1000)
        principal = await service.authenticate(bearer(secret))
        await service.admit(principal, MODEL, 100)
        with pytest.raises(RateLimited) as limited:
            await service.admit(principal, MODEL, 500)  # tokens reserved, then refused on rpm
        assert limited.value.headers["x-ratelimit-remaining-tokens"] == "900"


async def test_a_request_larger_than_the_minute_waits_for_an_empty_window(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="small", tpm=1000)
        principal = await service.authenticate(bearer(secret))
        big = await service.admit(principal, MODEL, 50_000)  # capped at the whole allowance
        assert big.tpm_reserved == 1000
        with pytest.raises(RateLimited):
            await service.admit(principal, MODEL, 1)


# --- budgets ------------------------------------------------------------------------------------


async def test_daily_budget_gives_insufficient_quota(store_url: str) -> None:
    clock = Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp())
    async with opened(store_url, clock=clock) as service:
        secret = await create(service, name="daily", daily_tokens=1000)
        principal = await service.authenticate(bearer(secret))
        first = await service.admit(principal, MODEL, 500)
        assert first.headers == {}  # no rate limits, so no x-ratelimit headers
        await settle(service, first, 600, 200)
        second = await service.admit(principal, MODEL, 500)  # 200 left: admitted, reserves its whole estimate
        assert second.budget_reserved == 500
        with pytest.raises(QuotaExceeded):  # meanwhile the reservation holds the budget spent
            await service.admit(principal, MODEL, 10)
        await settle(service, second, 250, 50)  # 1100 used: one request may run over
        with pytest.raises(QuotaExceeded) as spent:
            await service.admit(principal, MODEL, 10)
        error = spent.value
        assert isinstance(error, RateLimited)
        assert (error.status_code, error.code, error.type) == (429, "insufficient_quota", "insufficient_quota")
        assert "daily" in error.message
        assert int(error.headers["retry-after"]) == 12 * 3600  # until UTC midnight
        clock.now += 12 * 3600  # the next UTC day
        await settle(service, await service.admit(principal, MODEL, 10), 5, 5)


async def test_monthly_budget(store_url: str) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp())
    async with opened(store_url, clock=clock) as service:
        secret = await create(service, name="monthly", monthly_tokens=500, daily_tokens=10_000)
        principal = await service.authenticate(bearer(secret))
        await settle(service, await service.admit(principal, MODEL, 100), 400, 100)
        with pytest.raises(QuotaExceeded) as spent:
            await service.admit(principal, MODEL, 1)
        assert "monthly" in spent.value.message
        assert int(spent.value.headers["retry-after"]) == 3600
        clock.now += 3600  # December
        await service.admit(principal, MODEL, 1)


async def test_budget_reservations_hold_under_concurrency(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="burst", daily_tokens=1000)
        principal = await service.authenticate(bearer(secret))
        results = await asyncio.gather(
            *(service.admit(principal, MODEL, 100) for _ in range(30)), return_exceptions=True
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, QuotaExceeded)]
        assert (len(admitted), len(refused)) == (10, 20)


async def test_budget_survives_a_restart(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="persist", daily_tokens=1000)
        principal = await service.authenticate(bearer(secret))
        await settle(service, await service.admit(principal, MODEL, 10), 900, 100)
    async with opened(store_url) as service:
        principal = await service.authenticate(bearer(secret))
        with pytest.raises(QuotaExceeded):
            await service.admit(principal, MODEL, 10)


# --- settling and the ledger --------------------------------------------------------------------


async def test_settle_is_idempotent_and_books_the_ledger(store_url: str) -> None:
    clock = Clock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC).timestamp())
    async with opened(store_url, clock=clock) as service:
        secret = await create(service, name="ledger", rpm=100)
        principal = await service.authenticate(bearer(secret))
        admission = await service.admit(principal, "claude-sonnet-4-6", 500)
        for _ in range(3):
            await service.settle(
                admission,
                model="claude-sonnet-4-6",
                input_tokens=1_000_000,
                output_tokens=100_000,
                cached_tokens=200_000,
                cache_write_tokens=100_000,
            )
        second = await service.admit(principal, "claude-haiku-4-5", 10)
        await service.settle(second, model="claude-haiku-4-5", input_tokens=10, output_tokens=5, cached_tokens=0)
        clock.now += 86400
        third = await service.admit(principal, "claude-haiku-4-5", 10)
        await service.settle(third, model="claude-haiku-4-5", input_tokens=1, output_tokens=1, cached_tokens=0)
        rows = await service.usage(None, "2026-11-01", "2026-11-30")
        views = {(r.day, r.model): r for r in rows}
        sonnet = views[("2026-11-25", "claude-sonnet-4-6")]
        assert (sonnet.requests, sonnet.input_tokens, sonnet.output_tokens) == (1, 1_000_000, 100_000)
        assert (sonnet.cached_tokens, sonnet.cache_write_tokens) == (200_000, 100_000)
        # 700k uncached x $3 + 200k reads x $0.30 + 100k writes x $3.75 + 100k out x $15, per MTok
        assert sonnet.cost_usd == pytest.approx(2.1 + 0.06 + 0.375 + 1.5)
        assert views[("2026-11-25", "claude-haiku-4-5")].requests == 1
        assert views[("2026-11-26", "claude-haiku-4-5")].tokens == 2
        assert [r.day for r in await service.usage("ledger", "2026-11-26", "2026-11-26")] == ["2026-11-26"]
        assert await service.usage("someone-else", "2026-11-01", "2026-11-30") == []


async def test_settle_usage_takes_the_gateways_usage(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="shapes", tpm=10_000)
        principal = await service.authenticate(bearer(secret))
        read = Usage(input=70, output=20, cache_read=30)  # a chat completion's: 100 prompt tokens, 30 cached
        await service.settle_usage(await service.admit(principal, MODEL, 500), model=MODEL, usage=read)
        anthropic = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 40}
        written = Usage.from_anthropic(anthropic)
        await service.settle_usage(await service.admit(principal, MODEL, 500), model=MODEL, usage=written)
        await service.settle_usage(await service.admit(principal, MODEL, 500), model=MODEL, usage=None)
        [row] = await service.usage("shapes", "2000-01-01", "2999-12-31")
        assert (row.requests, row.input_tokens, row.output_tokens) == (3, 150, 25)
        assert (row.cached_tokens, row.cache_write_tokens) == (30, 40)
        admission = await service.admit(principal, MODEL, 0)
        assert admission.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 175)


async def test_settle_in_a_cancelled_stream_still_books_partial_usage(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="stream", tpm=1000, daily_tokens=10_000)
        principal = await service.authenticate(bearer(secret))
        admitted = anyio.Event()

        async def relay() -> None:
            admission = await service.admit(principal, MODEL, 900)
            try:
                admitted.set()
                await anyio.sleep(30)  # the stream, cut short by the client
            finally:
                # anyio cancellation is level-triggered: every await in here is cancelled too.
                await service.settle(admission, model=MODEL, input_tokens=40, output_tokens=10, cached_tokens=0)

        async with anyio.create_task_group() as group:
            group.start_soon(relay)
            await admitted.wait()
            group.cancel_scope.cancel()
        await asyncio.sleep(0.2)  # the limiter update finishes in its own task
        rows = await service.usage("stream", "2000-01-01", "2999-12-31")
        assert [(r.requests, r.input_tokens, r.output_tokens) for r in rows] == [(1, 40, 10)]
        admission = await service.admit(principal, MODEL, 900)  # the 900 reserved were given back
        assert admission.headers["x-ratelimit-remaining-tokens"] == "50"


async def test_reservations_nobody_settles_are_released(store_url: str) -> None:
    async with opened(store_url, reservation_timeout=0.1) as service:
        secret = await create(service, name="forgotten", daily_tokens=1000)
        principal = await service.authenticate(bearer(secret))
        lost = await service.admit(principal, MODEL, 1000)  # e.g. a response dropped before its stream began
        with pytest.raises(QuotaExceeded):
            await service.admit(principal, MODEL, 1)
        started = time.monotonic()
        while True:
            try:
                admission = await service.admit(principal, MODEL, 1)
                break
            except QuotaExceeded:
                assert time.monotonic() - started < 5
                await asyncio.sleep(0.05)
        await settle(service, admission, 1, 0)
        await settle(service, lost, 300, 0)  # a late settle still books everything
        rows = await service.usage("forgotten", "2000-01-01", "2999-12-31")
        assert sum(r.tokens for r in rows) == 301
        second = await service.admit(principal, MODEL, 1000)  # 301 used: admitted, with its whole estimate
        assert second.budget_reserved == 1000


# --- refresh: other processes' changes ----------------------------------------------------------


async def test_keys_created_and_revoked_elsewhere_are_seen_within_seconds(store_url: str) -> None:
    async with opened(store_url, refresh_interval=0.1) as service:
        assert not service.required
        other = open_store(store_url)  # what the CLI, another replica or the admin API would write through
        record, secret = new_record(NewKey(name="late", rpm=10), time.time())
        await other.create_key(record)
        started = time.monotonic()
        while (principal := await service.authenticate(bearer(secret))).name != "late":
            assert principal is ANONYMOUS  # no key anywhere yet: anonymous, as before
            assert time.monotonic() - started < 5, "the new key was not seen within 5 seconds"
            await asyncio.sleep(0.05)
        assert principal.rpm == 10
        await other.revoke_key("late", datetime.now(UTC))
        await other.aclose()
        started = time.monotonic()
        while True:
            try:
                await service.authenticate(bearer(secret))
            except AuthenticationFailed as exc:
                assert exc.code == "revoked_api_key"
                break
            assert time.monotonic() - started < 5, "the revoked key still worked after 5 seconds"
            await asyncio.sleep(0.05)


# --- concurrency and replicas -------------------------------------------------------------------


async def test_200_concurrent_admits_against_rpm_50_admit_exactly_50(store_url: str) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="crowd", rpm=50)
        principal = await service.authenticate(bearer(secret))
        results = await asyncio.gather(
            *(service.admit(principal, MODEL, 10) for _ in range(200)), return_exceptions=True
        )
        assert sum(1 for r in results if not isinstance(r, BaseException)) == 50
        assert all(isinstance(r, RateLimited) for r in results if isinstance(r, BaseException))


async def test_two_replicas_sharing_redis_allow_rpm_5_not_10(redis_store: str) -> None:
    async with opened(redis_store) as one, opened(redis_store) as two:
        secret = await create(one, name="shared", rpm=5)
        await two.refresh()
        principals = [await one.authenticate(bearer(secret)), await two.authenticate(bearer(secret))]
        admitted = 0
        for i in range(10):
            replica = (one, two)[i % 2]
            try:
                await replica.admit(principals[i % 2], MODEL, 10)
                admitted += 1
            except RateLimited:
                pass
        assert admitted == 5


async def test_two_replicas_200_concurrent_against_rpm_50(redis_store: str) -> None:
    async with opened(redis_store) as one, opened(redis_store) as two:
        secret = await create(one, name="crowd", rpm=50)
        await two.refresh()
        p1, p2 = await one.authenticate(bearer(secret)), await two.authenticate(bearer(secret))
        calls = [one.admit(p1, MODEL, 10) if i % 2 else two.admit(p2, MODEL, 10) for i in range(200)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sum(1 for r in results if not isinstance(r, BaseException)) == 50


async def test_two_replicas_share_budgets_and_tokens(redis_store: str) -> None:
    async with opened(redis_store) as one, opened(redis_store) as two:
        secret = await create(one, name="shared", daily_tokens=1000, tpm=100_000)
        await two.refresh()
        p1, p2 = await one.authenticate(bearer(secret)), await two.authenticate(bearer(secret))
        await settle(one, await one.admit(p1, MODEL, 10), 500, 100)
        await settle(two, await two.admit(p2, MODEL, 10), 300, 100)
        with pytest.raises(QuotaExceeded):
            await one.admit(p1, MODEL, 10)
        with pytest.raises(QuotaExceeded):
            await two.admit(p2, MODEL, 10)
        tokens_secret = await create(one, name="tokens", tpm=1000)
        await two.refresh()
        await one.admit(await one.authenticate(bearer(tokens_secret)), MODEL, 300)
        admission = await two.admit(await two.authenticate(bearer(tokens_secret)), MODEL, 300)
        assert admission.headers["x-ratelimit-remaining-tokens"] == "400"
        await one.ledger.flush()  # (its background writer would, within a second)
        rows = await two.usage("shared", "2000-01-01", "2999-12-31")
        assert sum(r.requests for r in rows) == 2


# --- config keys ---------------------------------------------------------------------------------


async def test_config_keys(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_BOT_KEY", "config-secret-from-the-environment")
    rows = [
        {"name": "ci-bot", "secret_env": "CI_BOT_KEY", "models": ["claude-haiku-*"], "rpm": 1},
        {"name": "hashed", "sha256": hash_secret("hashed-secret"), "enabled": False},
    ]
    async with opened(store_url, config_keys=rows) as service:
        assert service.required
        bot = await service.authenticate(bearer("config-secret-from-the-environment"))
        assert (bot.name, bot.source, bot.rpm) == ("ci-bot", "config", 1)
        with pytest.raises(PermissionDenied):
            service.check_model(bot, "claude-sonnet-4-6")
        await service.admit(bot, MODEL, 1)
        with pytest.raises(RateLimited):
            await service.admit(bot, MODEL, 1)
        with pytest.raises(AuthenticationFailed) as disabled:
            await service.authenticate(bearer("hashed-secret"))
        assert disabled.value.code == "disabled_api_key"
        with pytest.raises(ConfigKeyReadOnly):
            await service.revoke_key("ci-bot")
        with pytest.raises(KeyExists):
            await create(service, name="ci-bot")
        names = [r.name for r in await service.key_records()]
        assert names == ["ci-bot", "hashed"]


# --- secrets stay secret -------------------------------------------------------------------------


async def test_secrets_never_reach_logs_views_or_the_store(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    async with opened(store_url) as service:
        for name in ("one", "two", "three"):
            secrets.append(await create(service, name=name, rpm=1, daily_tokens=10))
        for secret in secrets:
            principal = await service.authenticate(bearer(secret))
            await settle(service, await service.admit(principal, MODEL, 5), 20, 5)
            with pytest.raises(RateLimited) as refused:
                await service.admit(principal, MODEL, 5)
            assert secret not in refused.value.message
        await service.revoke_key("two")
        with pytest.raises(AuthenticationFailed) as wrong:
            await service.authenticate(bearer(secrets[1]))
        views = repr([r.view(time.time()) for r in await service.key_records()]) + wrong.value.message
        await service.ledger.flush()
    stored = redis_dump(store_url) if store_url.startswith("redis") else sqlite_bytes(Path(store_url))
    assert stored  # something was written
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in views
        assert secret.encode() not in stored
        assert hash_secret(secret).encode() in stored  # the digest is what is kept


# --- failures --------------------------------------------------------------------------------------


async def test_unreachable_redis_fails_at_open() -> None:
    with pytest.raises(StoreError) as failed:
        await KeyService.open(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in str(failed.value)


async def test_limits_that_cannot_be_read_answer_503(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with opened(store_url) as service:
        secret = await create(service, name="broken", rpm=5)
        principal = await service.authenticate(bearer(secret))

        async def fail(*args: Any) -> bool:
            raise ConnectionError("store went away")

        monkeypatch.setattr(service.windows, "hit_request", fail)
        with pytest.raises(ServiceUnavailable) as unavailable:
            await service.admit(principal, MODEL, 5)
        assert unavailable.value.status_code == 503


async def test_a_missing_sqlite_file_is_an_empty_store_until_written(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "keys.db"
    async with opened(str(path), static_keys=[SecretStr("s")]) as service:
        assert not path.exists()
        assert await service.key_records() == []
        principal = await service.authenticate({"x-api-key": "s"})
        await settle(service, await service.admit(principal, MODEL, 1), 1, 1)
    assert path.exists()  # the ledger wrote the static key's usage
    assert oct(path.stat().st_mode & 0o777) == "0o600"


# --- the estimate ---------------------------------------------------------------------------------


def test_estimate_tokens() -> None:
    body = {
        "model": MODEL,
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "x" * 400}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "y" * 800}, {"type": "image", "source": {"data": "z" * 10**6}}],
            },
            {"role": "assistant", "content": "w" * 400},
        ],
    }
    assert estimate_tokens(body) == 100 + 200 + 1600 + 100 + 1000
    assert estimate_tokens({"messages": [{"role": "user", "content": "é" * 4}]}) == 2  # UTF-8 bytes / 4


async def test_any_keys_stored(store_url: str) -> None:
    assert not await any_keys_stored(store_url)
    async with opened(store_url) as service:
        await create(service, name="one")
        await service.revoke_key("one")
    assert await any_keys_stored(store_url)  # a revoked key still means keys are in use
