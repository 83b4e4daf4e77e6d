from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import servers


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def key_store_outside_the_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Session-wide first: module-scoped fixtures (a gateway started once per file) build their app
    # before any per-test fixture runs, and the store's default is ./claude-proxy.db in the tree.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROXY_STORE", str(tmp_path_factory.mktemp("store") / "claude-proxy.db"))
        # No start-up model-list fetch: fake upstreams count and fault-inject every call. The tests
        # of the refresh turn it back on (tests/models_support.py).
        patch.setenv("PROXY_MODELS_REFRESH_INTERVAL", "0")
        yield


@pytest.fixture(autouse=True)
def key_store_per_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Every app a test builds books usage in a key store of its own.
    monkeypatch.setenv("PROXY_STORE", str(tmp_path / "claude-proxy.db"))
    yield


# --- key stores ----------------------------------------------------------------------------------
# The one set of store fixtures: a SQLite file of the test's own, or a database of its own on the
# run's one redis-server. `store_url` is either, for tests that hold for both stores.

REDIS_DATABASES = 4096


class RedisDatabases:
    """The run's one redis-server, started when a test first asks for it; each caller of `fresh`
    gets a database number of its own, emptied (FLUSHDB), so tests stay independent."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._handed_out = 0

    def fresh(self) -> str:
        number = self._handed_out % REDIS_DATABASES
        self._handed_out += 1
        url = f"{self.server_url}/{number}"
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        return url


@pytest.fixture(scope="session")
def redis_databases() -> Iterator[RedisDatabases]:
    # Skips every test that asks when redis-server is not installed.
    with servers.redis_server(databases=REDIS_DATABASES) as url:
        yield RedisDatabases(url)


@pytest.fixture
def redis_store(redis_databases: RedisDatabases) -> str:
    """The URL of an empty Redis database, this test's own."""
    return redis_databases.fresh()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    """The path of a SQLite key store that does not exist yet, this test's own."""
    return str(tmp_path / "keys.db")


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_store")
    return url
