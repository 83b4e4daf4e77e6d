"""Client keys as an operator uses them: the CLI against running gateway processes, two replicas
sharing one Redis, the official openai client on the other end."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import servers
from tests.conftest import RedisDatabases
from tests.keys_support import SECRET_RE, keys_cli

pytestmark = pytest.mark.e2e

STATIC_KEY = "sk-static-e2e-0000"
ALLOWED = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]}
FORBIDDEN = {**ALLOWED, "model": "claude-sonnet-4-6"}


def wait_for_status(url: str, secret: str, body: dict[str, object], status: int, within: float = 5.0) -> float:
    """Seconds until ``url`` answers ``status`` for this key; fails after ``within``."""
    started = time.monotonic()
    while True:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"})
        if response.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{url} still answers {response.status_code}: {response.text}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def replicas(redis_databases: RedisDatabases) -> Iterator[tuple[str, list[str]]]:
    store = redis_databases.fresh()  # this module's own, for as long as both replicas run
    with (
        servers.simulator() as upstream,
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as first,
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as second,
    ):
        yield store, [first, second]


def test_cli_key_limited_to_haiku_with_rpm_5_shared_by_two_replicas(replicas: tuple[str, list[str]]) -> None:
    store, urls = replicas
    created = keys_cli(store, "create", "--name", "team-a", "--models", "claude-haiku-*", "--rpm", "5")
    secret = created.strip().splitlines()[-1]
    assert re.fullmatch(SECRET_RE, secret)

    # Seen by both running gateways within 5 s; a model outside the allowlist is 403 naming it.
    for url in urls:
        assert wait_for_status(url, secret, FORBIDDEN, 403) < 5
        denied = httpx.post(f"{url}/v1/chat/completions", json=FORBIDDEN, headers={"authorization": f"Bearer {secret}"})
        assert "claude-sonnet-4-6" in denied.json()["error"]["message"]

    # Ten requests spread over both replicas: together they allow 5, not 10.
    statuses = []
    for i in range(10):
        response = httpx.post(
            f"{urls[i % 2]}/v1/chat/completions", json=ALLOWED, headers={"authorization": f"Bearer {secret}"}
        )
        statuses.append(response.status_code)
        assert response.headers["x-ratelimit-limit-requests"] == "5"
        assert "x-ratelimit-remaining-requests" in response.headers
        assert "x-ratelimit-reset-requests" in response.headers
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert statuses == [200] * 5 + [429] * 5

    # Listing shows no secret; revoked, the key gets 401 on both replicas within 5 s.
    assert secret not in keys_cli(store, "list")
    keys_cli(store, "revoke", "team-a")
    for url in urls:
        assert wait_for_status(url, secret, ALLOWED, 401) < 5


def test_cli_key_on_the_default_sqlite_store_of_a_running_gateway(tmp_path: Path) -> None:
    store = str(tmp_path / "claude-proxy.db")  # the default kind of store: a file, nothing to run
    with servers.simulator() as upstream, servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as url:
        secret = keys_cli(store, "create", "--name", "solo", "--rpm", "5").strip().splitlines()[-1]
        assert wait_for_status(url, secret, ALLOWED, 200) < 5
        statuses = [
            httpx.post(f"{url}/v1/chat/completions", json=ALLOWED, headers={"authorization": f"Bearer {secret}"})
            for _ in range(5)
        ]
        assert [r.status_code for r in statuses] == [200] * 4 + [429]
        assert statuses[-1].headers["x-ratelimit-remaining-requests"] == "0"
        keys_cli(store, "revoke", "solo")
        assert wait_for_status(url, secret, ALLOWED, 401) < 5
        for file in tmp_path.iterdir():  # the database and its WAL
            assert secret.encode() not in file.read_bytes()
