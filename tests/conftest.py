from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def key_store_per_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Every app a test builds books usage in a key store: keep it out of the working tree.
    monkeypatch.setenv("PROXY_STORE", str(tmp_path / "claude-proxy.db"))
    yield
