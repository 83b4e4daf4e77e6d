"""Client-key management: stored and configured keys, model allowlists, rate limits, token budgets
and the usage ledger (issue #7).

    model.py          the key record, new secrets, ``client_keys:`` config rows
    store.py          the store interface, chosen by URL; sqlite_store.py, redis_store.py
    limits.py         rpm/tpm windows (the ``limits`` library) and daily/monthly budgets
    ledger.py         usage per key, model and day, with costs from prices.yaml
    service.py        ``KeyService``: authenticate, check_model, admit, settle
    admin.py          the /admin/ HTTP API
    cli.py            ``claude-proxy keys …``
"""

from __future__ import annotations

import asyncio

from proxy.keys.backends import open_store
from proxy.keys.ledger import PriceTable
from proxy.keys.records import ClientKeyConfig, ClientKeyRecord, NewKey, keys_from_config
from proxy.keys.service import (
    ANONYMOUS,
    Admission,
    KeyService,
    Principal,
    QuotaExceeded,
    estimate_tokens,
)
from proxy.keys.store import KeyStore, StoreError


async def any_keys_stored(store_url: str) -> bool:
    """Whether the store holds any key (revoked ones included). Missing SQLite file: False."""
    store = open_store(store_url, create=False)
    try:
        return await store.version() > 0 and bool(await store.list_keys())
    finally:
        await store.aclose()


def keys_stored(store_url: str) -> bool:
    """``any_keys_stored`` for synchronous start-up code (outside any event loop)."""
    return asyncio.run(any_keys_stored(store_url))


__all__ = [
    "ANONYMOUS",
    "Admission",
    "ClientKeyConfig",
    "ClientKeyRecord",
    "KeyService",
    "KeyStore",
    "NewKey",
    "PriceTable",
    "Principal",
    "QuotaExceeded",
    "StoreError",
    "any_keys_stored",
    "estimate_tokens",
    "keys_from_config",
    "keys_stored",
    "open_store",
]
