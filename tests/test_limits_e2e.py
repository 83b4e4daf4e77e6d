"""Client-key limits under concurrency, through running gateway processes.

- 200 requests sent at once on a key with ``rpm 50``: exactly 50 answered, 150 refused with 429, on
  the SQLite store (one gateway) and on Redis (two gateways sharing it).
- A daily token budget driven to its end by bursts of concurrent requests: the tokens used end
  between the budget and the budget plus one request's usage (each request reserves its whole
  estimate, so only the last one admitted can take the budget past its limit), and the ledger holds
  exactly what clients received.
- A gateway killed with SIGKILL mid-traffic while the CLI writes to the same SQLite file: the file
  passes ``PRAGMA integrity_check``, no usage row written before the kill is lost, both keys work
  after a restart, and the ledger keeps counting.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests import servers
from tests.keys_support import keys_cli
from tests.polling import eventually

pytestmark = pytest.mark.e2e

STATIC_KEY = "sk-static-limits-0000"
MODEL = "claude-haiku-4-5"


def chat(i: int = 0, max_tokens: int = 40, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"Tell me about request number {i}"}],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def create_key(store: str, name: str, *limits: str) -> str:
    return keys_cli(store, "create", "--name", name, *limits).strip().splitlines()[-1]


def ledger(store: str, name: str) -> dict[str, Any]:
    totals: dict[str, Any] = orjson.loads(keys_cli(store, "usage", name, "--json"))["totals"]
    return totals


def wait_for_ledger(store: str, name: str, requests: int, within: float = 10.0) -> dict[str, Any]:
    """The key's ledger totals once they count ``requests`` (the gateways write every second)."""
    deadline = time.monotonic() + within
    while True:
        totals = ledger(store, name)
        if totals["requests"] >= requests or time.monotonic() > deadline:
            return totals
        time.sleep(0.2)


async def burst(urls: list[str], secret: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body at once, each on its own connection, spread over ``urls`` in turn."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    headers = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:
        calls = [
            client.post(f"{url}/v1/chat/completions", json=body)
            for url, body in zip(itertools.cycle(urls), bodies, strict=False)
        ]
        return list(await asyncio.gather(*calls))


def assert_rpm_held(responses: list[httpx.Response], rpm: int) -> None:
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: rpm, 429: len(responses) - rpm}, statuses
    for response in responses:
        if response.status_code == 200:
            assert response.json()["choices"][0]["message"]["content"]
        else:
            error = response.json()["error"]
            assert error["code"] == "rate_limit_exceeded", error
            assert "requests per minute" in error["message"]
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["x-ratelimit-remaining-requests"] == "0"


def test_200_concurrent_requests_on_an_rpm_50_key_get_exactly_50_answers_on_sqlite(sqlite_store: str) -> None:
    store = sqlite_store
    secret = create_key(store, "burst", "--rpm", "50")
    with servers.simulator() as upstream, servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as url:
        responses = asyncio.run(burst([url], secret, [chat(i) for i in range(200)]))
    assert_rpm_held(responses, 50)
    assert ledger(store, "burst")["requests"] == 50  # written on the gateway's shutdown at the latest


def test_200_concurrent_requests_on_an_rpm_50_key_get_exactly_50_answers_across_two_gateways_on_redis(
    redis_store: str,
) -> None:
    store = redis_store
    with (
        servers.simulator() as upstream,
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as first,
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as second,
    ):
        # Created while both gateways run: they pick it up from the shared store.
        secret = create_key(store, "burst", "--rpm", "50")
        for url in (first, second):
            wait_until_known(url, secret)
        responses = asyncio.run(burst([first, second], secret, [chat(i) for i in range(200)]))
        assert_rpm_held(responses, 50)
        assert wait_for_ledger(store, "burst", 50)["requests"] == 50


def wait_until_known(url: str, secret: str, within: float = 5.0) -> None:
    """Until the gateway stops answering 401 for ``secret``; asks /v1/models, which costs no request
    against the key's limits."""
    deadline = time.monotonic() + within
    while httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 401:
        assert time.monotonic() < deadline, f"{url} does not know the new key after {within}s"
        time.sleep(0.1)


@contextmanager
def gateways_on(store: str, upstream: str) -> Iterator[tuple[str, list[str]]]:
    """One gateway on a SQLite file, or two sharing a Redis."""
    if not store.startswith("redis://"):
        with servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as url:
            yield store, [url]
        return
    with (
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as first,
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as second,
    ):
        yield store, [first, second]


def test_a_daily_budget_is_overrun_by_at_most_one_requests_usage_under_concurrent_bursts(store_url: str) -> None:
    kind = "redis" if store_url.startswith("redis://") else "sqlite"
    budget = 3000
    with servers.simulator() as upstream, gateways_on(store_url, upstream) as (store, urls):
        secret = create_key(store, "budgeted", "--daily-tokens", str(budget))
        for url in urls:
            wait_until_known(url, secret)
        answered: list[dict[str, Any]] = []
        refused = 0
        for round_ in range(40):  # bursts until the budget refuses every request of one
            bodies = [chat(round_ * 100 + i, max_tokens=20 + (i * 7) % 90) for i in range(40)]
            responses = asyncio.run(burst(urls, secret, bodies))
            ok = [r.json()["usage"] for r in responses if r.status_code == 200]
            for response in responses:
                if response.status_code != 200:
                    assert response.status_code == 429, response.text
                    assert response.json()["error"]["code"] == "insufficient_quota"
            answered += ok
            refused += len(responses) - len(ok)
            if not ok:
                break
        else:
            pytest.fail("40 bursts of 40 requests never spent a 3000-token budget")

        used = sum(u["total_tokens"] for u in answered)
        largest = max(u["total_tokens"] for u in answered)
        assert budget <= used <= budget + largest, (used, budget, largest)
        totals = wait_for_ledger(store, "budgeted", len(answered))
        assert (totals["requests"], totals["total_tokens"]) == (len(answered), used)
        print(f"\n{kind}: {len(answered)} answered, {refused} refused, {used} of {budget} tokens (largest {largest})")


def test_a_second_gateway_on_the_same_sqlite_file_refuses_to_start_and_names_redis(sqlite_store: str) -> None:
    # Each process keeps its rate windows and budget reservations in memory: two on one file each
    # admitted up to the whole budget (4,902 tokens of 3,000). One gateway per file, or Redis.
    store = sqlite_store
    with (
        servers.simulator() as upstream,
        servers.gateway_process(upstream, STATIC_KEY, {"PROXY_STORE": store}) as (_, first),
    ):
        env = {"ANTHROPIC_API_KEY": "sk-ant-test-upstream", "ANTHROPIC_BASE_URL": upstream, "PROXY_STORE": store}
        second = servers.run_to_exit(["serve", "--port", str(servers.free_port())], env)
        assert second.returncode == 2, second.stderr
        assert f"another gateway (pid {first.pid}) serves from the SQLite key store {store}" in second.stderr
        assert "PROXY_STORE=redis://" in second.stderr
        assert first.poll() is None  # the first one serves on, undisturbed
    # Once the first is gone, its claim goes with it (a SIGKILL included: the lock is the kernel's).
    with servers.simulator() as upstream, servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_second_gateway_on_one_sqlite_file_may_start_when_per_process_limits_are_accepted(
    sqlite_store: str, tmp_path: Path
) -> None:
    store = sqlite_store
    accepted = {"PROXY_STORE": store, "PROXY_ALLOW_PER_PROCESS_LIMITS": "true"}
    log_file = tmp_path / "second.log"
    with (
        servers.simulator() as upstream,
        servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}),
        servers.gateway(upstream, STATIC_KEY, accepted, log_path=log_file) as second,
    ):
        assert httpx.get(f"{second}/healthz").status_code == 200
        eventually(
            lambda: "limits and budgets hold per process only" in log_file.read_text(),
            what="the second gateway warns that limits hold per process",
        )


class Traffic:
    """Threads sending a mix of plain and streamed requests until stopped; counts what completed."""

    def __init__(self, url: str, secret: str, threads: int = 8) -> None:
        self.url = url
        self.secret = secret
        self.completed = 0
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, n: int) -> None:
        headers = {"authorization": f"Bearer {self.secret}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                with self._lock:
                    self.sent += 1
                try:
                    if i % 2:
                        with client.stream("POST", "/v1/chat/completions", json=chat(i, stream=True)) as response:
                            ok = response.status_code == 200 and b"[DONE]" in b"".join(response.iter_bytes())
                    else:
                        ok = client.post("/v1/chat/completions", json=chat(i)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                    time.sleep(0.05)  # the gateway is gone; do not spin
                if ok:
                    with self._lock:
                        self.completed += 1


def test_a_gateway_killed_mid_traffic_leaves_its_sqlite_store_intact(sqlite_store: str) -> None:
    store = sqlite_store
    secret = create_key(store, "steady", "--daily-tokens", "100000000")  # budgeted: settling touches it too
    with servers.simulator(event_delay=0.01) as upstream:
        with (
            servers.gateway_process(upstream, STATIC_KEY, {"PROXY_STORE": store}) as (url, process),
            Traffic(url, secret) as traffic,
        ):
            written_before_kill = wait_for_ledger(store, "steady", 20)["requests"]
            assert written_before_kill >= 20, "the gateway wrote no usage while serving"
            # The CLI writes to the same file while the gateway serves and writes its ledger.
            late_secret = create_key(store, "late")
            process.kill()  # SIGKILL: no shutdown flush, possibly mid-transaction
            process.wait()
            sent = traffic.sent
        assert traffic.completed > 0

        with sqlite3.connect(store) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        after_kill = ledger(store, "steady")
        # Nothing written before the kill is lost; at most the last second's usage never made it.
        assert written_before_kill <= after_kill["requests"] <= sent
        names = {row["name"] for row in orjson.loads(keys_cli(store, "list", "--json"))}
        assert {"steady", "late"} <= names

        # Restarted on the same file: both keys authenticate and the ledger carries on from where it was.
        with servers.gateway(upstream, STATIC_KEY, {"PROXY_STORE": store}) as url:
            for key in (secret, late_secret):
                response = httpx.post(
                    f"{url}/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key}"}
                )
                assert response.status_code == 200, response.text
        assert ledger(store, "steady")["requests"] == after_kill["requests"] + 1
        assert ledger(store, "late")["requests"] == 1
