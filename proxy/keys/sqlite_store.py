"""The SQLite key store: one file, WAL mode, no server.

Blocking calls run in a worker thread (``asyncio.to_thread``) behind one lock, so the event loop
never waits on the disk; the gateway touches the file only to refresh its key cache (a one-row
version read per second) and to write the usage ledger and stored responses in the background.

Rate windows and budget reservations live in this process's memory, so limits hold for one gateway
process per file: two processes on one file would each admit up to a key's whole rpm, tpm and budget
(they see each other's usage only through the ledger, a second or more late). ``serve`` therefore
claims the file with :func:`claim_for_gateway` at start-up and refuses ``--workers N`` on SQLite,
unless ``allow_per_process_limits`` accepts per-process limits. Limits shared by several processes or
machines need the Redis store. (Exact budgets on a shared file would take a write transaction per
request; the claim costs nothing per request.)
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from proxy.keys.limits import Budgets, MemoryBudgets, MemoryWindows, Windows
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
)

T = TypeVar("T")

log = logging.getLogger("proxy.keys")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', 1), ('keys_version', 0);
CREATE TABLE IF NOT EXISTS client_keys (
    name   TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,   -- SHA-256 of the secret; the secret itself is never stored
    record TEXT NOT NULL           -- the rest of the record, as JSON
);
CREATE TABLE IF NOT EXISTS usage (
    key                TEXT NOT NULL,
    model              TEXT NOT NULL,
    day                TEXT NOT NULL,  -- YYYY-MM-DD, UTC
    requests           INTEGER NOT NULL DEFAULT 0,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cached_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (key, model, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_day ON usage (day);
CREATE TABLE IF NOT EXISTS responses (  -- stored Responses (proxy.keys.responses); a rowid table: records are large
    owner      TEXT NOT NULL,  -- the client key's name
    id         TEXT NOT NULL,
    expires_at REAL NOT NULL,  -- Unix time; later rows are hidden by reads and purged by writes
    record     BLOB NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE INDEX IF NOT EXISTS responses_by_expiry ON responses (expires_at);
"""

# Rows per upsert statement. A flush writes many rows per statement rather than ``executemany``:
# each statement step releases the GIL, and taking it back from a busy event loop can wait up to the
# interpreter's switch interval (5 ms), so a step per row would make a large batch slow to write.
UPSERT_ROWS = 64


@functools.lru_cache(maxsize=UPSERT_ROWS)
def _upsert_responses(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO responses (owner, id, expires_at, record) VALUES {values}"
        " ON CONFLICT (owner, id) DO UPDATE SET expires_at = excluded.expires_at, record = excluded.record"
    )


_GET_RESPONSE = "SELECT record FROM responses WHERE owner = ? AND id = ? AND expires_at > ?"

# An expired row is left to the purge: it is already gone for its owner.
_DELETE_RESPONSE = "DELETE FROM responses WHERE owner = ? AND id = ? AND expires_at > ?"

# The oldest expired rows, a bounded batch through the expiry index: a put never scans the table.
_PURGE_RESPONSES = """
DELETE FROM responses WHERE rowid IN (
    SELECT rowid FROM responses WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
)
"""

# Expired responses a purge removes beyond the rows written since the last one, so the backlog only
# shrinks. A purge runs with a flush, at most every PURGE_INTERVAL seconds (a step, even when nothing
# has expired).
PURGE_BATCH = 256
PURGE_INTERVAL = 1.0

FLUSH_DELAY = 0.02  # seconds a put waits in memory for the puts that follow it into one transaction
RETRY_DELAY = 1.0  # seconds between attempts while the file refuses writes
MAX_PENDING_BYTES = 32 * 1024 * 1024  # past this, a put waits for the disk (raised to a record's bound)

_UPSERT_USAGE = """
INSERT INTO usage (key, model, day, requests, input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_usd)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key, model, day) DO UPDATE SET
    requests = requests + excluded.requests,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
    cost_usd = cost_usd + excluded.cost_usd
"""

_USAGE_COLUMNS = "key, model, day, requests, input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_usd"


class StoreInUse(StoreError):
    """Another gateway process serves from this SQLite file."""


_claims: list[int] = []  # open, locked descriptors: the kernel releases them when the process ends


def claim_for_gateway(path: str | os.PathLike[str]) -> None:
    """Marks the SQLite store at ``path`` as served by this process until it exits (a crash or a
    SIGKILL included: the lock is the kernel's). Raises ``StoreInUse`` naming the process that holds
    it. The CLI never claims: it may write to a file a gateway serves from.

    The lock is ``flock`` on a file beside the store, not on the store itself: closing any descriptor
    of the database would drop the POSIX locks SQLite holds on it in this process."""
    lock_path = Path(f"{path}-gateway.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create the gateway lock {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreInUse(f"another gateway (pid {holder}) serves from the SQLite key store {path}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _claims.append(fd)


class SQLiteStore(KeyStore):
    shared = False

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self.url = str(path)
        self._create = create
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._windows: Windows | None = None
        self._budgets = MemoryBudgets()
        self._responses: list[SQLiteResponses] = []  # flushed by aclose, before the connection goes

    # --- plumbing ------------------------------------------------------------------------

    def _connection(self, write: bool) -> sqlite3.Connection | None:
        if self._closed:
            raise StoreError(f"the key store {self.url} is closed")
        if self._conn is not None:
            return self._conn
        if not write and not self._create and not self.path.exists():
            return None  # no file yet: an empty store; the first write creates it
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Digests only, but nobody else needs to read them either.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the key store {self.url}: {exc}") from exc
        self._conn = conn
        return conn

    async def _run(self, write: bool, fn: Callable[[sqlite3.Connection | None], T]) -> T:
        def call() -> T:
            with self._lock:
                conn = self._connection(write)
                try:
                    return fn(conn)
                except sqlite3.Error as exc:
                    raise StoreError(f"key store {self.url}: {exc}") from exc

        return await asyncio.to_thread(call)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def aclose(self) -> None:
        for responses in self._responses:
            await responses.aclose()

        def close() -> None:
            with self._lock:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)

    # --- keys ----------------------------------------------------------------------------

    async def version(self) -> int:
        def read(conn: sqlite3.Connection | None) -> int:
            if conn is None:
                return 0
            row = conn.execute("SELECT value FROM meta WHERE name = 'keys_version'").fetchone()
            return int(row[0]) if row else 0

        return await self._run(False, read)

    async def list_keys(self) -> list[ClientKeyRecord]:
        def read(conn: sqlite3.Connection | None) -> list[ClientKeyRecord]:
            if conn is None:
                return []
            rows = conn.execute("SELECT record FROM client_keys ORDER BY name").fetchall()
            return [ClientKeyRecord.model_validate_json(row[0]) for row in rows]

        return await self._run(False, read)

    async def get_key(self, name: str) -> ClientKeyRecord | None:
        def read(conn: sqlite3.Connection | None) -> ClientKeyRecord | None:
            return _get(conn, name) if conn is not None else None

        return await self._run(False, read)

    async def create_key(self, record: ClientKeyRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM client_keys WHERE name = ?", (record.name,)).fetchone():
                raise KeyExists(f"a key named {record.name!r} already exists (names stay taken after revocation)")
            try:
                conn.execute(
                    "INSERT INTO client_keys (name, digest, record) VALUES (?, ?, ?)",
                    (record.name, record.digest, record.model_dump_json()),
                )
            except sqlite3.IntegrityError:
                raise KeyExists("another key has the same secret digest") from None
            _bump(conn)

        await self._run(True, lambda conn: self._transaction(_present(conn), write))

    async def revoke_key(self, name: str, at: datetime) -> ClientKeyRecord:
        def write(conn: sqlite3.Connection) -> ClientKeyRecord:
            record = _require(conn, name)
            if record.revoked_at is not None:
                return record
            updated = record.model_copy(update={"revoked_at": at})
            _put(conn, updated)
            return updated

        return await self._run(True, lambda conn: self._transaction(_present(conn), write))

    async def set_enabled(self, name: str, enabled: bool) -> ClientKeyRecord:
        return await self._amend(name, lambda record: enabled_as(record, enabled))

    async def update_key(self, name: str, changes: Mapping[str, Any]) -> ClientKeyRecord:
        return await self._amend(name, lambda record: changed(record, changes))

    async def _amend(self, name: str, change: Callable[[ClientKeyRecord], ClientKeyRecord]) -> ClientKeyRecord:
        def write(conn: sqlite3.Connection) -> ClientKeyRecord:
            record = _require(conn, name)
            updated = amended(record, change)
            if updated is not record:
                _put(conn, updated)
            return updated

        return await self._run(True, lambda conn: self._transaction(_present(conn), write))

    # --- usage ---------------------------------------------------------------------------

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        values = [
            (
                r.key,
                r.model,
                r.day,
                r.requests,
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                r.cost_usd,
            )
            for r in rows
        ]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT_USAGE, values)

        await self._run(True, lambda conn: self._transaction(_present(conn), write))

    async def usage(self, key: str | None, since: str, until: str) -> list[UsageRow]:
        def read(conn: sqlite3.Connection | None) -> list[UsageRow]:
            if conn is None:
                return []
            query = f"SELECT {_USAGE_COLUMNS} FROM usage WHERE day >= ? AND day <= ?"
            args: tuple[str, ...] = (since, until)
            if key is not None:
                query += " AND key = ?"
                args += (key,)
            rows = conn.execute(query + " ORDER BY day, key, model", args).fetchall()
            return [UsageRow(*row) for row in rows]

        return await self._run(False, read)

    async def token_totals(self, day: str) -> dict[str, tuple[int, int]]:
        month = month_of(day)

        def read(conn: sqlite3.Connection | None) -> dict[str, tuple[int, int]]:
            if conn is None:
                return {}
            rows = conn.execute(
                "SELECT key, SUM(CASE WHEN day = ? THEN input_tokens + output_tokens ELSE 0 END),"
                " SUM(input_tokens + output_tokens) FROM usage WHERE day >= ? AND day < ? GROUP BY key",
                (day, f"{month}-01", next_month_start(month)),
            ).fetchall()
            return {row[0]: (int(row[1]), int(row[2])) for row in rows}

        return await self._run(False, read)

    # --- limiter state -------------------------------------------------------------------

    def rate_windows(self) -> Windows:
        if self._windows is None:
            self._windows = MemoryWindows()  # one process per file: its windows live in memory
        return self._windows

    def budgets(self) -> Budgets:
        return self._budgets

    def responses(self, max_bytes: int) -> StoredResponses:
        return SQLiteResponses(self, max_bytes)


class _Pending(NamedTuple):
    record: bytes
    expires_at: float


class SQLiteResponses(StoredResponses):
    """Stored responses in the store's ``responses`` table, written behind: a put lands in memory at
    once and a flusher writes the puts of the next ``flush_delay`` seconds in one transaction, off
    the event loop. ``clock`` decides what has expired (tests move it; production uses the wall clock).

    Why: a transaction per put cost more CPU than the rest of the request (mostly the hop to the
    worker thread and back, ~90 µs, then the commit); batched, a put is a dict insert, and the hop
    and the commit are shared by every put of a batch.

    The caller's guarantee holds: ``put`` returns with the record readable, because ``get`` and
    ``delete`` consult the pending puts first, and one gateway process serves a SQLite file
    (``claim_for_gateway``), so no other process needs to see them yet. Another process on the file
    (the CLI, a test's second store) sees a put once it is flushed, ``flush_delay`` later.

    What a crash costs: a process killed outright (SIGKILL, OOM, power) loses the puts of its last
    ``flush_delay`` seconds, plus a batch being written. That is acceptable for conversation state:
    those clients get the same 404 as for an expired id and resend their context, as they must after
    any lost response; the requests in flight at the crash are lost anyway, and the ledger loses its
    last second of usage the same way. A clean shutdown (``aclose``) writes everything. Pending
    memory is bounded by ``max_pending_bytes``: past it a put waits for a flush (backpressure) and
    fails with ``StoreError`` if the flush does. A failed background flush keeps its rows, logs once
    and retries every ``RETRY_DELAY`` seconds: nothing is dropped while the process lives.
    """

    def __init__(
        self,
        store: SQLiteStore,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
        flush_delay: float = FLUSH_DELAY,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        purge_interval: float = PURGE_INTERVAL,
    ) -> None:
        super().__init__(max_bytes)
        self._store = store
        self._clock = clock
        self._flush_delay = flush_delay
        self._purge_interval = purge_interval
        self._purged_at = -math.inf  # time.monotonic() of the last purge
        self._unpurged = 0  # rows written since then
        self._max_pending_bytes = max(max_pending_bytes, max_bytes)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._pending_bytes = 0
        self._writing: dict[tuple[str, str], _Pending] = {}  # the batch a flush is committing now
        # One writer of the table at a time (a flush or a delete), so a delete cannot land between a
        # batch leaving ``_pending`` and reaching the table, and a flushed row cannot outlive it.
        self._write_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False
        self._closing = False
        store._responses.append(self)

    @property
    def pending_bytes(self) -> int:
        """Bytes of records put and not yet written to the file."""
        return self._pending_bytes

    async def _put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        if self._closing:
            raise StoreError(f"the key store {self._store.url} is closed")
        while self._pending and self._pending_bytes + len(record) > self._max_pending_bytes:
            await self.flush()  # backpressure; a failing store fails this put rather than grow memory
        key = (owner, response_id)
        replaced = self._pending.pop(key, None)
        if replaced is not None:
            self._pending_bytes -= len(replaced.record)
        self._pending[key] = _Pending(record, self._clock() + ttl)
        self._pending_bytes += len(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon(), name="stored-responses-flush")

    async def get(self, owner: str, response_id: str) -> bytes | None:
        key = (owner, response_id)
        pending = self._pending.get(key) or self._writing.get(key)
        if pending is not None:  # the newest put of this id, whatever older row the table holds
            return pending.record if pending.expires_at > self._clock() else None

        def read(conn: sqlite3.Connection | None) -> bytes | None:
            if conn is None:
                return None
            row = conn.execute(_GET_RESPONSE, (owner, response_id, self._clock())).fetchone()
            return bytes(row[0]) if row else None

        return await self._store._run(False, read)

    async def delete(self, owner: str, response_id: str) -> bool:
        def write(conn: sqlite3.Connection | None) -> bool:
            if conn is None:
                return False
            return conn.execute(_DELETE_RESPONSE, (owner, response_id, self._clock())).rowcount > 0

        async with self._write_lock:
            pending = self._pending.pop((owner, response_id), None)
            if pending is not None:
                self._pending_bytes -= len(pending.record)
            # write=False: with no file yet there is nothing to delete, and nothing needs creating.
            in_table = await self._store._run(False, write)
        if pending is not None:  # the newest put decides, not an older row it replaced
            return pending.expires_at > self._clock()
        return in_table

    async def flush(self) -> None:
        """Writes every pending put now, in one transaction. Raises ``StoreError`` when the file
        refuses; the puts then stay pending for the next attempt. A cancelled caller leaves the
        write to finish: a batch is committed or kept, never half-forgotten."""
        write = asyncio.ensure_future(self._write_pending())
        write.add_done_callback(_retrieved)
        await asyncio.shield(write)

    async def _write_pending(self) -> None:
        async with self._write_lock:
            if not self._pending:
                return
            batch, self._pending, self._pending_bytes = self._pending, {}, 0
            self._writing = batch
            rows = [(owner, rid, p.expires_at, p.record) for (owner, rid), p in batch.items()]
            purge = time.monotonic() - self._purged_at >= self._purge_interval
            purge_limit = PURGE_BATCH + self._unpurged + len(rows)

            def write(conn: sqlite3.Connection) -> None:
                for start in range(0, len(rows), UPSERT_ROWS):
                    chunk = rows[start : start + UPSERT_ROWS]
                    conn.execute(_upsert_responses(len(chunk)), [value for row in chunk for value in row])
                if purge:
                    conn.execute(_PURGE_RESPONSES, (self._clock(), purge_limit))

            try:
                await self._store._run(True, lambda conn: self._store._transaction(_present(conn), write))
            except BaseException:
                for key, pending in batch.items():
                    if key not in self._pending:  # a put since then is newer
                        self._pending[key] = pending
                        self._pending_bytes += len(pending.record)
                raise
            finally:
                self._writing = {}
            if purge:
                self._purged_at, self._unpurged = time.monotonic(), 0
            else:
                self._unpurged += len(rows)

    async def _flush_soon(self) -> None:
        delay = self._flush_delay
        while self._pending:
            await asyncio.sleep(delay)
            try:
                await self.flush()
            except Exception as exc:  # never let the flusher die with rows pending; retry
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "cannot write %d stored responses to %s (will retry): %s",
                        len(self._pending),
                        self._store.url,
                        exc,
                    )
                delay = RETRY_DELAY
                continue
            if self._failing:
                self._failing = False
                log.info("stored responses write to %s again", self._store.url)
            delay = self._flush_delay

    async def aclose(self) -> None:
        """Refuses further puts and writes the pending ones (the store calls this before closing)."""
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()  # a write it started finishes (flush shields it)
            await asyncio.wait([self._flusher])
            self._flusher = None
        try:
            await self.flush()
        except StoreError as exc:
            log.error(
                "%d stored responses are lost: cannot write them to %s: %s", len(self._pending), self._store.url, exc
            )


def _retrieved(task: asyncio.Future[None]) -> None:
    # A flush whose caller was cancelled still reports through the flusher's retry; this only keeps
    # asyncio from warning that nobody read the exception.
    if not task.cancelled():
        task.exception()


def _present(conn: sqlite3.Connection | None) -> sqlite3.Connection:
    assert conn is not None  # writes always open (and create) the file
    return conn


def _get(conn: sqlite3.Connection, name: str) -> ClientKeyRecord | None:
    row = conn.execute("SELECT record FROM client_keys WHERE name = ?", (name,)).fetchone()
    return ClientKeyRecord.model_validate_json(row[0]) if row else None


def _require(conn: sqlite3.Connection, name: str) -> ClientKeyRecord:
    record = _get(conn, name)
    if record is None:
        raise KeyNotFound(f"no key named {name!r}")
    return record


def _put(conn: sqlite3.Connection, record: ClientKeyRecord) -> None:
    conn.execute("UPDATE client_keys SET record = ? WHERE name = ?", (record.model_dump_json(), record.name))
    _bump(conn)


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_version'")
