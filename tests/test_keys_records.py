"""Key records, config rows, secrets, prices and the small pure helpers of proxy/keys."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.keys import ClientKeyConfig, NewKey, PriceTable, keys_from_config, keys_stored
from proxy.keys.backends import open_store
from proxy.keys.cli import main
from proxy.keys.limits import MemoryBudgets, _tokens_wait, duration, rate_headers
from proxy.keys.records import MAX_METADATA_BYTES, hash_secret, new_record, new_secret, secret_hint
from proxy.keys.store import (
    StoreError,
    UsageRow,
    redact_url,
    seconds_until_next_day,
    seconds_until_next_month,
    sqlite_path,
)
from proxy.usage import Usage
from tests.keys_support import SECRET_RE

pytestmark = pytest.mark.anyio


def test_secrets_are_long_random_and_stored_as_sha256() -> None:
    drawn = {new_secret() for _ in range(200)}
    assert len(drawn) == 200
    for secret in drawn:
        assert re.fullmatch(SECRET_RE, secret)
    secret = drawn.pop()
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret_hint(secret) == f"sk-cp-…{secret[-4:]}"


def test_new_record_keeps_only_the_digest() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    record, secret = new_record(NewKey(name="a", models="claude-haiku-*, claude-sonnet-4-6", rpm=3), now)
    assert record.models == ("claude-haiku-*", "claude-sonnet-4-6")
    assert record.digest == hash_secret(secret)
    assert secret not in record.model_dump_json()
    assert record.created_at == datetime(2026, 11, 25, tzinfo=UTC)
    assert record.status(now) == "active"
    with pytest.raises(ValueError, match="past"):
        new_record(NewKey(name="b", expires_at="2026-01-01T00:00:00Z"), now)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "key-12"}, "reserved"),
        ({"name": "a", "rpm": 0}, "rpm"),
        ({"name": "a", "tpm": -1}, "tpm"),
        ({"name": "a", "models": ["ok", "not ok"]}, "pattern"),
        ({"name": "a", "metadata": {"x": "y" * MAX_METADATA_BYTES}}, "metadata"),
        ({"name": "a", "colour": "red"}, "colour"),
    ],
)
def test_new_key_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NewKey.model_validate(fields)


def test_naive_expiry_is_utc_and_expires_alias() -> None:
    spec = NewKey.model_validate({"name": "a", "expires": "2027-01-01T00:00:00"})
    assert spec.expires_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_keys_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_SECRET", "  from-the-environment  ")
    digest = hash_secret("hashed")
    records = keys_from_config(
        [
            {"name": "bot", "secret_env": "BOT_SECRET", "models": "claude-haiku-*", "daily_tokens": 10},
            ClientKeyConfig(name="hashed", sha256=digest.upper(), metadata={"team": "x"}),
        ]
    )
    assert [(r.name, r.source, r.digest) for r in records] == [
        ("bot", "config", hash_secret("from-the-environment")),
        ("hashed", "config", digest),
    ]
    assert records[0].models == ("claude-haiku-*",) and records[0].daily_tokens == 10
    assert keys_from_config(None) == [] and keys_from_config([]) == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"name": "a"}], "exactly one"),
        ([{"name": "a", "secret_env": "X", "sha256": "0" * 64}], "exactly one"),
        ([{"name": "a", "secret_env": "UNSET_VARIABLE_FOR_TEST"}], "UNSET_VARIABLE_FOR_TEST"),
        ([{"name": "a", "sha256": "abc"}], "64 hex"),
        ([{"name": "key-1", "sha256": "0" * 64}], "reserved"),
        ([{"name": "a", "sha256": "0" * 64, "secret": "inline"}], "secret"),
        ([{"name": "a", "sha256": "0" * 64}, {"name": "a", "sha256": "1" * 64}], "twice"),
        ([{"name": "a", "sha256": "0" * 64}, {"name": "b", "sha256": "0" * 64}], "same secret"),
    ],
)
def test_bad_config_rows_name_the_row(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message) as failed:
        keys_from_config(rows)
    assert "client_keys[" in str(failed.value)


# --- prices ---------------------------------------------------------------------------------------


def test_shipped_prices_load_and_pick_the_most_specific_row() -> None:
    table = PriceTable.shipped()
    opus45 = table.rates("claude-opus-4-5-20251101")
    assert opus45 is not None and (opus45.input, opus45.output) == (5.0, 25.0)
    opus41 = table.rates("claude-opus-4-1")
    assert opus41 is not None and opus41.input == 15.0
    opus55 = table.rates("claude-opus-5-5")
    assert opus55 is not None and opus55.input == 4.0  # not the claude-opus-5* row
    haiku = table.rates("claude-haiku-4-5")
    assert haiku is not None and (haiku.cache_read, haiku.cache_write) == (0.1, 1.25)
    assert table.rates("gpt-4o") is None


def test_cost_with_cache_and_long_prompts() -> None:
    table = PriceTable.shipped()
    # Haiku 4.5: 1000 prompt tokens of which 300 cache reads and 200 cache writes, 100 out.
    cost = table.cost(
        "claude-haiku-4-5", input_tokens=1000, output_tokens=100, cached_tokens=300, cache_write_tokens=200
    )
    assert cost == pytest.approx((500 * 1.0 + 300 * 0.1 + 200 * 1.25 + 100 * 5.0) / 1e6)
    # Haiku 5.5 above 100k prompt tokens: every token at the long-prompt rates.
    long = table.cost(
        "claude-haiku-5-5", input_tokens=200_000, output_tokens=1000, cached_tokens=0, cache_write_tokens=0
    )
    assert long == pytest.approx((200_000 * 0.5 + 1000 * 2.5) / 1e6)


def test_unknown_models_cost_nothing_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable({"claude-*": {"input": 1, "output": 1, "cache_read": 1, "cache_write": 1}})
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert table.cost("mystery", input_tokens=10, output_tokens=10, cached_tokens=0, cache_write_tokens=0) == 0
    assert caplog.text.count("mystery") == 1


def test_price_overrides() -> None:
    table = PriceTable.shipped({"claude-haiku-4-5*": {"input": 9, "output": 9, "cache_read": 9, "cache_write": 9}})
    rates = table.rates("claude-haiku-4-5")
    assert rates is not None and rates.input == 9
    with pytest.raises(ValueError):
        PriceTable({"x": {"input": -1, "output": 1, "cache_read": 1, "cache_write": 1}})


# --- limits helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.25, "250ms"), (1, "1s"), (17.2, "18s"), (60, "1m0s"), (360, "6m0s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_rate_headers() -> None:
    assert rate_headers(None, None) == {}


def test_tokens_wait() -> None:
    # Room already: no wait.
    assert _tokens_wait(0, 0, 100, 90, 100, 1000) == 0
    # 900 in the previous window weighted by 30 s left of 60 (450) + 500 now: 950; 100 more needs 50 to fall
    # off the previous window, at 900 / 60 tokens a second.
    assert _tokens_wait(900, 30, 500, 90, 100, 1000) == pytest.approx(50 * 60 / 900)
    # Nothing in the previous window: wait for the current window to end and its count to fade.
    assert _tokens_wait(0, 0, 1000, 70, 100, 1000) == pytest.approx(10 + 100 * 60 / 1000)


async def test_memory_budgets_follow_the_ledger() -> None:
    budgets = MemoryBudgets()
    check = await budgets.reserve("k", "2026-11-25", 400, 1000, None)
    assert (check.reserved, check.exhausted) == (400, None)
    await budgets.adjust("k", "2026-11-25", -100)  # settled at 300
    assert budgets.used("k", "2026-11-25") == 300
    budgets.written([UsageRow("k", "m", "2026-11-25", 1, 200, 100)])
    assert budgets.used("k", "2026-11-25") == 300 and budgets.used("k", "2026-11") == 300
    # Another process booked 600 more: the ledger totals say so.
    budgets.totals("2026-11-25", {"k": (900, 900)})
    assert budgets.used("k", "2026-11-25") == 900
    check = await budgets.reserve("k", "2026-11-25", 400, 1000, None)
    assert check.reserved == 400  # the whole estimate, though only 100 are left: see Budgets
    refused = await budgets.reserve("k", "2026-11-25", 1, 1000, None)
    assert (refused.reserved, refused.exhausted, refused.used) == (0, "daily", 1300)


# --- store URLs and calendar -------------------------------------------------------------------------


def test_store_urls() -> None:
    assert sqlite_path("./claude-proxy.db") == "./claude-proxy.db"
    assert sqlite_path("sqlite:///relative.db") == "relative.db"
    assert sqlite_path("sqlite:////abs/keys.db") == "/abs/keys.db"
    assert redact_url("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:pw@host/0") == "redis://user:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    with pytest.raises(StoreError, match="store URL"):
        open_store("   ")
    with pytest.raises(StoreError, match="unsupported"):
        open_store("postgres://db/keys")


def test_calendar() -> None:
    noon = datetime(2026, 12, 31, 12, 0, tzinfo=UTC).timestamp()
    assert seconds_until_next_day(noon) == 12 * 3600
    assert seconds_until_next_month(noon) == 12 * 3600


def test_usage_counts_from_anthropics_usage() -> None:
    zero = Usage()
    assert Usage.from_anthropic(None) == zero and Usage.from_anthropic({}) == zero
    anthropic = {
        "input_tokens": 60,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 10,
        "output_tokens": 20,
    }
    usage = Usage.from_anthropic(anthropic)
    # what settle books: the whole prompt, the output, the cache reads and writes among the prompt
    assert (usage.prompt, usage.output, usage.cache_read, usage.cache_write) == (100, 20, 30, 10)
    nulls = Usage.from_anthropic({"input_tokens": 5, "output_tokens": None, "cache_read_input_tokens": None})
    assert nulls == Usage(input=5)


def test_keys_stored_for_start_up_checks(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    assert not keys_stored(str(path))
    assert not path.exists()
    assert main(["keys", "create", "--name", "first", "--store", str(path)]) == 0
    assert keys_stored(f"sqlite:///{path}")


# --- names and moments at the edges --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["team\n", "key-1\n", "team\nx", "\nteam"])
def test_a_key_name_with_a_newline_is_refused(name: str) -> None:
    # `$` would accept a trailing "\n": "team\n" showed as "team" and no admin URL could reach it.
    with pytest.raises(ValueError, match="a key name is"):
        NewKey(name=name)
    with pytest.raises(ValueError, match="a key name is"):
        ClientKeyConfig(name=name, sha256="0" * 64)


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+05:00"])
def test_an_expiry_beyond_the_calendar_once_in_utc_is_a_validation_error(moment: str) -> None:
    with pytest.raises(ValueError, match="years 1-9999"):
        NewKey(name="far", expires_at=moment)


def test_an_expiry_at_the_end_of_year_9999_utc_is_kept() -> None:
    record, _ = new_record(NewKey(name="far", expires_at="9999-12-31T23:59:59Z"), 0.0)
    assert record.view(0.0)["expires_at"] == "9999-12-31T23:59:59Z"
    assert record.status(0.0) == "active"


def test_redact_url_masks_every_credential_a_url_can_carry() -> None:
    assert redact_url("https://user:s3cret@gateway.internal/anthropic") == "https://user:***@gateway.internal/anthropic"
    assert redact_url("https://tok3n@gateway.internal") == "https://***@gateway.internal"
    assert redact_url("redis://host:6379/0?password=s3cret&db=1") == "redis://host:6379/0?password=***&db=1"
    assert redact_url("sqlite:////abs/keys.db") == "sqlite:////abs/keys.db"
    assert redact_url("/var/lib/a@b/keys.db") == "/var/lib/a@b/keys.db"
