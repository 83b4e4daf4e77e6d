from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def key_store_outside_the_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Session-wide first: module-scoped fixtures (a gateway started once per file) build their app
    # before any per-test fixture runs, and the store's default is ./claude-proxy.db in the tree.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROXY_STORE", str(tmp_path_factory.mktemp("store") / "claude-proxy.db"))
        yield


@pytest.fixture(autouse=True)
def key_store_per_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Every app a test builds books usage in a key store of its own.
    monkeypatch.setenv("PROXY_STORE", str(tmp_path / "claude-proxy.db"))
    yield
