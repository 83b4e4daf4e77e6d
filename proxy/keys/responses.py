"""Stored Responses (``store: true`` on ``POST /v1/responses``): what a later request's
``previous_response_id`` continues from, and what ``GET``/``DELETE /v1/responses/{id}`` reach.

A record is opaque bytes (the caller's JSON: input items, output items, the response object), kept
in the key store the gateway already uses, so replicas sharing Redis share stored responses. Each
record belongs to the client key that made it: another key's id reads exactly as an unknown one.
Records expire after the ``ttl`` given to ``put`` (Redis by its own TTL; SQLite hides expired rows
and purges them a bounded batch at a time on later writes). A failure of the store raises
``proxy.keys.store.StoreError``; the caller maps it to a client error, never a 500.

When ``put`` returns, ``get`` and ``delete`` through the same object see the record: the caller
stores a response before its closing bytes go out, so a client that continues at once finds it.
Redis writes through (replicas share it); SQLite, served by one process, writes behind: puts wait in
memory a few milliseconds and go to the file in batches (see ``SQLiteResponses`` for what a crash
loses), and ``flush`` writes them at once.

The implementations live beside their stores (``SQLiteResponses`` in ``sqlite_store.py``,
``RedisResponses`` in ``redis_store.py``): each uses its store's connection machinery.
"""

from __future__ import annotations

import abc
import math

DEFAULT_RETENTION = 30 * 86400.0  # seconds: OpenAI keeps stored responses 30 days
DEFAULT_MAX_STORED_BYTES = 8 * 1024 * 1024


class StoredResponses(abc.ABC):
    """Response records per owner (the client key's name, ``Principal.name``) and response id."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def put(self, owner: str, response_id: str, record: bytes, *, ttl: float) -> bool:
        """Keeps ``record`` for ``ttl`` seconds (replacing one of the same owner and id). False, and
        nothing stored, when the record is larger than ``max_bytes``: the caller then reports the
        response as not stored."""
        if len(record) > self.max_bytes:
            return False
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"a stored response needs a positive ttl, not {ttl!r}")
        await self._put(owner, response_id, record, ttl)
        return True

    @abc.abstractmethod
    async def _put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None: ...

    @abc.abstractmethod
    async def get(self, owner: str, response_id: str) -> bytes | None:
        """The record; None when it is unknown, expired or another owner's (indistinguishable)."""

    @abc.abstractmethod
    async def delete(self, owner: str, response_id: str) -> bool:
        """Forgets the record. False when this owner has no live record of that id."""

    async def flush(self) -> None:  # noqa: B027  # a hook, empty where puts write through
        """Writes any puts still held in memory to the store."""
