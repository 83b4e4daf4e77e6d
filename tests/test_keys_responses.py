"""Stored Responses (``store: true``) in the key store, against both stores: round trip, scoping to
the owning key, delete, expiry, the size bound, the SQLite purge bound, SQLite's write-behind
(readable at once, batched, bounded, retried, flushed on close), failures as StoreError, and the
``responses`` settings."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.config import ConfigError, load_settings
from proxy.keys import KeyService, open_store
from proxy.keys import sqlite_store as sqlite_store_module
from proxy.keys.responses import DEFAULT_MAX_STORED_BYTES, DEFAULT_RETENTION, StoredResponses
from proxy.keys.sqlite_store import (
    _DELETE_RESPONSE,
    _GET_RESPONSE,
    _PURGE_RESPONSES,
    _SCHEMA,
    PURGE_BATCH,
    SQLiteResponses,
    SQLiteStore,
)
from proxy.keys.store import StoreError
from tests.polling import eventually_async
from tests.servers import free_port

pytestmark = pytest.mark.anyio

DAY = 86400.0
# Not UTF-8 on purpose: a record is opaque bytes, whatever the store's client decodes.
RECORD = b'{"id": "resp_1", "output": []}\xff\x00'


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def stored(url: str, max_bytes: int = DEFAULT_MAX_STORED_BYTES) -> AsyncIterator[StoredResponses]:
    store = open_store(url)
    try:
        yield store.responses(max_bytes)
    finally:
        await store.aclose()


@asynccontextmanager
async def sqlite_responses(
    path: str, clock: Clock | None = None, max_bytes: int = 1024, **options: Any
) -> AsyncIterator[SQLiteResponses]:
    store = SQLiteStore(path)
    try:
        yield SQLiteResponses(store, max_bytes, clock=clock or Clock(), **options)
    finally:
        await store.aclose()


def row_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    conn.close()
    return count


class WriteCounter:
    """Wraps a SQLite store's worker-thread calls: counts the writes, can make them fail, and can
    hold them until ``gate`` is set."""

    def __init__(self, store: SQLiteStore, failures: int = 0, gate: asyncio.Event | None = None) -> None:
        self.writes = 0
        self.failures = failures
        self.gate = gate
        self._run = store._run
        store._run = self  # type: ignore[method-assign]

    async def __call__(self, write: bool, fn: Callable[[Any], Any]) -> Any:
        if write:
            self.writes += 1
            if self.failures > 0:
                self.failures -= 1
                raise StoreError("disk I/O error (injected)")
            if self.gate is not None:
                await self.gate.wait()
        return await self._run(write, fn)


# --- both stores ---------------------------------------------------------------------------------


async def test_a_stored_response_reads_back_byte_for_byte(store_url: str) -> None:
    async with stored(store_url) as responses:
        assert await responses.put("team-a", "resp_1", RECORD, ttl=DAY) is True
        assert await responses.get("team-a", "resp_1") == RECORD


async def test_an_unknown_id_reads_as_none_and_deletes_nothing(store_url: str) -> None:
    async with stored(store_url) as responses:
        assert await responses.get("team-a", "resp_missing") is None
        assert await responses.delete("team-a", "resp_missing") is False


async def test_another_key_cannot_read_or_delete_a_stored_response(store_url: str) -> None:
    async with stored(store_url) as responses:
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
        assert await responses.get("team-b", "resp_1") is None
        assert await responses.delete("team-b", "resp_1") is False
        assert await responses.get("team-a", "resp_1") == RECORD


async def test_a_deleted_response_is_gone_and_deletes_once(store_url: str) -> None:
    async with stored(store_url) as responses:
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
        assert await responses.delete("team-a", "resp_1") is True
        assert await responses.get("team-a", "resp_1") is None
        assert await responses.delete("team-a", "resp_1") is False


async def test_a_second_put_of_an_id_replaces_the_record(store_url: str) -> None:
    async with stored(store_url) as responses:
        await responses.put("team-a", "resp_1", b"first", ttl=DAY)
        await responses.put("team-a", "resp_1", b"second", ttl=DAY)
        assert await responses.get("team-a", "resp_1") == b"second"


async def test_a_stored_response_disappears_after_its_ttl(store_url: str) -> None:
    async with stored(store_url) as responses:
        await responses.put("team-a", "resp_short", RECORD, ttl=0.05)
        await responses.put("team-a", "resp_long", RECORD, ttl=DAY)

        async def expired() -> bool:
            return await responses.get("team-a", "resp_short") is None

        gone: bool = await eventually_async(expired, within=5, what="the short-lived response expires")
        assert gone
        assert await responses.delete("team-a", "resp_short") is False
        assert await responses.get("team-a", "resp_long") == RECORD


async def test_a_record_over_the_size_bound_is_not_stored(store_url: str) -> None:
    async with stored(store_url, max_bytes=2048) as responses:
        assert await responses.put("team-a", "resp_fits", b"x" * 2048, ttl=DAY) is True
        assert await responses.put("team-a", "resp_big", b"x" * 2049, ttl=DAY) is False
        assert await responses.get("team-a", "resp_big") is None
        assert await responses.get("team-a", "resp_fits") == b"x" * 2048


@pytest.mark.parametrize("ttl", [0.0, -1.0, math.inf, math.nan])
async def test_a_ttl_that_is_not_a_positive_number_of_seconds_is_refused(store_url: str, ttl: float) -> None:
    async with stored(store_url) as responses:
        with pytest.raises(ValueError, match="positive ttl"):
            await responses.put("team-a", "resp_1", RECORD, ttl=ttl)


async def test_key_services_on_one_store_share_stored_responses(store_url: str) -> None:
    # Replicas sharing Redis (or one SQLite file) continue each other's conversations.
    first = await KeyService.open(store_url, refresh_interval=0.05, flush_interval=0.05)
    second = await KeyService.open(store_url, refresh_interval=0.05, flush_interval=0.05)
    try:
        await first.responses.put("team-a", "resp_1", RECORD, ttl=first.response_retention)

        async def seen() -> bool:  # SQLite: once the first one's write-behind reaches the file
            return await second.responses.get("team-a", "resp_1") == RECORD

        found: bool = await eventually_async(seen, within=5, what="the second service reads the first one's put")
        assert found
    finally:
        await first.aclose()
        await second.aclose()


async def test_key_service_builds_stored_responses_from_its_settings(store_url: str) -> None:
    service = await KeyService.open(store_url, responses_retention=60.0, responses_max_bytes=4096)
    try:
        assert service.response_retention == 60.0
        assert service.responses.max_bytes == 4096
        assert await service.responses.put("team-a", "resp_big", b"x" * 4097, ttl=60.0) is False
    finally:
        await service.aclose()
    default = await KeyService.open(store_url)
    try:
        assert default.response_retention == DEFAULT_RETENTION == 30 * DAY
        assert default.responses.max_bytes == DEFAULT_MAX_STORED_BYTES == 8 * 1024 * 1024
    finally:
        await default.aclose()


# --- SQLite --------------------------------------------------------------------------------------


async def test_sqlite_hides_an_expired_response_before_it_is_purged(sqlite_store: str) -> None:
    clock = Clock()
    async with sqlite_responses(sqlite_store, clock) as responses:
        await responses.put("team-a", "resp_1", RECORD, ttl=60)
        await responses.flush()
        clock.now += 60
        assert await responses.get("team-a", "resp_1") is None
        assert await responses.delete("team-a", "resp_1") is False
    assert row_count(sqlite_store) == 1  # still there: only later puts purge


async def test_sqlite_writes_purge_expired_responses_in_bounded_batches(sqlite_store: str) -> None:
    # Each flush removes up to PURGE_BATCH expired rows more than it adds, so the backlog shrinks.
    clock = Clock()
    expired = 2 * PURGE_BATCH + 10
    async with sqlite_responses(sqlite_store, clock, flush_delay=60, purge_interval=0) as responses:
        for i in range(expired):
            await responses.put("team-a", f"resp_old_{i}", b"old", ttl=60)
        await responses.flush()
        clock.now += 61
        await responses.put("team-a", "resp_new_0", b"new", ttl=60)
        await responses.flush()
        assert row_count(sqlite_store) == expired - (PURGE_BATCH + 1) + 1
        await responses.put("team-a", "resp_new_1", b"new", ttl=60)
        await responses.put("team-a", "resp_new_2", b"new", ttl=60)
        await responses.flush()
        assert row_count(sqlite_store) == expired - (PURGE_BATCH + 1) - (PURGE_BATCH + 2) + 3
        await responses.put("team-a", "resp_new_3", b"new", ttl=60)
        await responses.flush()
        assert row_count(sqlite_store) == 4  # the backlog is gone; the live rows stay
        assert await responses.get("team-a", "resp_new_0") == b"new"


async def test_sqlite_purges_at_most_once_per_interval(sqlite_store: str) -> None:
    clock = Clock()
    async with sqlite_responses(sqlite_store, clock, flush_delay=60, purge_interval=3600) as responses:
        await responses.put("team-a", "resp_old", b"old", ttl=60)
        await responses.flush()  # the first flush purges (nothing yet)
        clock.now += 61
        await responses.put("team-a", "resp_new", b"new", ttl=60)
        await responses.flush()
        assert row_count(sqlite_store) == 2  # expired, hidden, and left to the next purge
        assert await responses.get("team-a", "resp_old") is None


async def test_sqlite_put_is_readable_at_once_and_reaches_the_file_soon_after(sqlite_store: str) -> None:
    async with sqlite_responses(sqlite_store, flush_delay=0.01) as responses:
        await responses.put("team-a", "resp_0", RECORD, ttl=DAY)
        await responses.flush()  # creates the file and the table
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
        assert row_count(sqlite_store) == 1  # not written yet: nothing has yielded to the flusher
        assert await responses.get("team-a", "resp_1") == RECORD
        await eventually_async(lambda: row_count(sqlite_store) == 2, within=5, what="the put is written behind")
        assert responses.pending_bytes == 0
        assert await responses.get("team-a", "resp_1") == RECORD


async def test_sqlite_writes_a_burst_of_puts_in_one_transaction(sqlite_store: str) -> None:
    async with sqlite_responses(sqlite_store, flush_delay=0.05) as responses:
        writes = WriteCounter(responses._store)
        await asyncio.gather(*(responses.put("team-a", f"resp_{i}", RECORD, ttl=DAY) for i in range(100)))
        await eventually_async(lambda: writes.writes > 0, within=5, what="the burst is written")
        await responses.flush()  # waits for that write; nothing is left to write
        assert writes.writes == 1
        assert row_count(sqlite_store) == 100


async def test_sqlite_hides_an_expired_put_still_in_memory(sqlite_store: str) -> None:
    clock = Clock()
    async with sqlite_responses(sqlite_store, clock, flush_delay=60) as responses:
        await responses.put("team-a", "resp_1", b"first", ttl=DAY)
        await responses.flush()
        await responses.put("team-a", "resp_1", b"second", ttl=60)  # replaces it, still in memory
        clock.now += 60
        assert await responses.get("team-a", "resp_1") is None  # the newest put decides
        assert await responses.delete("team-a", "resp_1") is False


async def test_sqlite_get_and_delete_while_a_flush_writes_the_record(sqlite_store: str) -> None:
    async with sqlite_responses(sqlite_store, flush_delay=60) as responses:
        await responses.put("team-a", "resp_0", RECORD, ttl=DAY)
        await responses.flush()  # creates the file and the table
        gate = asyncio.Event()
        writes = WriteCounter(responses._store, gate=gate)
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
        flushing = asyncio.create_task(responses.flush())
        await eventually_async(lambda: writes.writes == 1, within=5, what="the flush holds the batch")
        assert await responses.get("team-a", "resp_1") == RECORD  # neither pending nor in the file yet
        deleting = asyncio.create_task(responses.delete("team-a", "resp_1"))
        await asyncio.sleep(0.01)  # let a delete that did not wait for the flush run first
        gate.set()
        await flushing
        assert await deleting is True
        assert await responses.get("team-a", "resp_1") is None
        assert row_count(sqlite_store) == 1  # resp_0 alone


async def test_sqlite_put_past_the_pending_bound_waits_for_a_flush(sqlite_store: str) -> None:
    async with sqlite_responses(sqlite_store, max_bytes=1024, flush_delay=60, max_pending_bytes=1024) as responses:
        await responses.put("team-a", "resp_1", b"x" * 600, ttl=DAY)
        assert responses.pending_bytes == 600
        await responses.put("team-a", "resp_2", b"x" * 600, ttl=DAY)  # 1,200 > 1,024: resp_1 goes first
        assert responses.pending_bytes == 600
        assert row_count(sqlite_store) == 1
        assert await responses.get("team-a", "resp_2") == b"x" * 600


async def test_sqlite_put_past_the_bound_fails_when_the_file_refuses_writes(sqlite_store: str) -> None:
    async with sqlite_responses(sqlite_store, max_bytes=1024, flush_delay=60, max_pending_bytes=1024) as responses:
        WriteCounter(responses._store, failures=1)
        await responses.put("team-a", "resp_1", b"x" * 600, ttl=DAY)
        with pytest.raises(StoreError, match="injected"):
            await responses.put("team-a", "resp_2", b"x" * 600, ttl=DAY)
        assert await responses.get("team-a", "resp_1") == b"x" * 600  # kept for the next attempt
        assert await responses.get("team-a", "resp_2") is None
    assert row_count(sqlite_store) == 1  # written on close


async def test_sqlite_failed_flush_keeps_the_puts_logs_once_and_retries(
    sqlite_store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_store_module, "RETRY_DELAY", 0.01)
    caplog.set_level(logging.INFO, logger="proxy.keys")
    async with sqlite_responses(sqlite_store, flush_delay=0.01) as responses:
        writes = WriteCounter(responses._store, failures=3)
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
        await eventually_async(lambda: writes.writes >= 4, within=5, what="three retries")
        assert await responses.get("team-a", "resp_1") == RECORD
        await responses.flush()  # waits for the fourth write; nothing is left to write
        assert writes.writes == 4
        assert row_count(sqlite_store) == 1

        def messages() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "proxy.keys"]

        await eventually_async(lambda: any("again" in m for m in messages()), within=5, what="the recovery is logged")
    warned = [m for m in messages() if "cannot write 1 stored responses" in m and "will retry" in m]
    assert warned == messages()[:1]  # once, not once per attempt


async def test_closing_a_sqlite_store_writes_the_pending_puts(sqlite_store: str) -> None:
    store = SQLiteStore(sqlite_store)
    responses = SQLiteResponses(store, 1024, flush_delay=60)
    await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
    await store.aclose()
    assert row_count(sqlite_store) == 1
    with pytest.raises(StoreError, match="closed"):
        await responses.put("team-a", "resp_2", RECORD, ttl=DAY)


@pytest.mark.parametrize(
    ("statement", "args", "index"),
    [
        (_GET_RESPONSE, ("a", "b", 1.0), "sqlite_autoindex_responses_1"),
        (_DELETE_RESPONSE, ("a", "b", 1.0), "sqlite_autoindex_responses_1"),
        (_PURGE_RESPONSES, (1.0, PURGE_BATCH), "responses_by_expiry"),
    ],
    ids=["get", "delete", "purge"],
)
def test_sqlite_response_statements_search_an_index_never_scan_the_table(
    statement: str, args: tuple[object, ...], index: str
) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        steps = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", args)]
    finally:
        conn.close()
    assert any(index in step for step in steps), steps
    assert not any(step.startswith("SCAN") for step in steps), steps


async def test_sqlite_store_from_before_stored_responses_gains_the_table(sqlite_store: str) -> None:
    async with stored(sqlite_store) as responses:
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)
    with sqlite3.connect(sqlite_store) as conn:
        conn.execute("DROP TABLE responses")  # as a file written by an older gateway
    conn.close()
    async with stored(sqlite_store) as responses:
        assert await responses.get("team-a", "resp_1") is None
        assert await responses.put("team-a", "resp_1", RECORD, ttl=DAY) is True


async def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = open_store(str(path), create=False)
    try:
        responses = store.responses(1024)
        assert await responses.get("team-a", "resp_1") is None
        assert await responses.delete("team-a", "resp_1") is False
        assert not path.exists()
    finally:
        await store.aclose()


async def test_a_closed_sqlite_store_fails_as_a_store_error(sqlite_store: str) -> None:
    store = open_store(sqlite_store)
    responses = store.responses(1024)
    await store.aclose()
    with pytest.raises(StoreError):
        await responses.get("team-a", "resp_1")
    with pytest.raises(StoreError):
        await responses.put("team-a", "resp_1", RECORD, ttl=DAY)


# --- Redis ---------------------------------------------------------------------------------------


async def test_redis_keeps_a_response_under_the_store_prefix_with_its_ttl(redis_store: str) -> None:
    async with stored(f"{redis_store}?prefix=tenant1:") as responses:
        await responses.put("team-a", "resp_1", RECORD, ttl=3600)
    with redis.Redis.from_url(redis_store) as client:
        assert client.keys("*") == [b"tenant1:response:team-a:resp_1"]
        assert 0 < client.pttl("tenant1:response:team-a:resp_1") <= 3600 * 1000


async def test_an_unreachable_redis_fails_as_a_store_error() -> None:
    async with stored(f"redis://127.0.0.1:{free_port()}/0") as responses:
        for call in (
            responses.get("team-a", "resp_1"),
            responses.put("team-a", "resp_1", RECORD, ttl=DAY),
            responses.delete("team-a", "resp_1"),
        ):
            with pytest.raises(StoreError, match="ConnectionError"):
                await call


# --- settings ------------------------------------------------------------------------------------


def test_responses_settings_default_to_thirty_days_and_eight_mebibytes() -> None:
    settings = load_settings()
    assert settings.responses.retention == 30 * DAY
    assert settings.responses.max_stored_bytes == 8 * 1024 * 1024


def test_responses_settings_come_from_the_file_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("responses:\n  retention: 3600\n  max_stored_bytes: 65536\n")
    from_file = load_settings(config)
    assert (from_file.responses.retention, from_file.responses.max_stored_bytes) == (3600.0, 65536)
    monkeypatch.setenv("PROXY_RESPONSES", json.dumps({"retention": 60}))
    from_env = load_settings(config)
    assert (from_env.responses.retention, from_env.responses.max_stored_bytes) == (60.0, 65536)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"retention": 0}, "responses.retention"),
        ({"retention": "inf"}, "responses.retention"),
        ({"max_stored_bytes": 10}, "responses.max_stored_bytes"),
        ({"keep": 1}, "responses.keep"),
    ],
)
def test_invalid_responses_settings_are_refused_naming_the_setting(
    tmp_path: Path, section: dict[str, object], field: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"responses": section}))
    with pytest.raises(ConfigError, match=f"invalid configuration: {field}:"):
        load_settings(config)
