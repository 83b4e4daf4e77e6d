"""The key store for a store URL: SQLite for a path, Redis for ``redis://``.

Its own module, above the two backends, so that ``proxy.keys.store`` (the interface both implement)
imports neither of them.
"""

from __future__ import annotations

from proxy.keys.store import KeyStore, StoreError, is_redis_url, sqlite_path


def open_store(url: str, *, create: bool = True) -> KeyStore:
    """The store for ``url``. Nothing is contacted yet; the first call connects. With
    ``create=False`` a missing SQLite file reads as an empty store and is created by the first write."""
    url = url.strip()
    if not url:
        raise StoreError("the store URL is empty: set PROXY_STORE to a file path or redis://host:port/db")
    if is_redis_url(url):
        from proxy.keys.redis_store import RedisStore

        return RedisStore(url)
    from proxy.keys.sqlite_store import SQLiteStore

    return SQLiteStore(sqlite_path(url), create=create)
