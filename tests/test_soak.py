"""Soak: a bounded run of mixed traffic against a real gateway process, then the books are checked.

The gateway (`python -m proxy serve`) runs in front of the built-in simulator (`python -m proxy
simulator`, 1 ms between stream events, so that dropped streams are dropped mid-stream), both real
processes on loopback. Clients send a mix, at a fixed concurrency: 50% non-streaming, 30% streaming
with usage, 20% streams dropped after their first content chunk. A warm-up of a quarter of the run
comes first (the allocator settles; see docs/faults.md). Afterwards:

* the gateway's RSS grew less than 10% from its level after the warm-up;
* its open file descriptors are back to that level;
* the tokens it accounted (`/metrics` `claude_proxy_tokens_total`, and each access-log line) equal
  what clients received in `usage`, request by request, plus what the dropped streams used;
* every request has exactly one access-log line, with status 200, and no secret is in the log.

`SOAK_REQUESTS` sets the number of requests after the warm-up (default 20000: about 100 s on two
cores); `SOAK_EVENT_DELAY` the simulator's delay between events. The figures are printed even
under output capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import uvloop

from tests import servers
from tests.faults import CLIENT_KEY, UPSTREAM_KEY, metric, open_fds, rss_bytes
from tests.polling import eventually

pytestmark = [pytest.mark.soak, pytest.mark.e2e]

SOAK_REQUESTS = int(os.environ.get("SOAK_REQUESTS", "20000"))
CONCURRENCY = 16
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
Received = dict[str, tuple[int, int] | None]  # request id → usage the client got, None for a dropped stream


def kind_of(i: int) -> str:
    return ("plain", "plain", "plain", "plain", "plain", "stream", "stream", "stream", "dropped", "dropped")[i % 10]


def body_for(i: int) -> dict[str, Any]:
    # Prompts of varying length, so token counts differ from request to request.
    prompt = f"soak request {i} " + "lorem ipsum " * (i % 13)
    request: dict[str, Any] = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": prompt}]}
    if kind_of(i) != "plain":
        request.update(stream=True, stream_options={"include_usage": True})
    return request


async def one(session: aiohttp.ClientSession, url: str, i: int, received: Received) -> None:
    rid = f"soak-{i}"
    headers = {**AUTH, "content-type": "application/json", "x-request-id": rid}
    kind = kind_of(i)
    async with session.post(f"{url}/v1/chat/completions", data=orjson.dumps(body_for(i)), headers=headers) as response:
        assert response.status == 200, await response.text()
        if kind == "plain":
            usage = orjson.loads(await response.read())["usage"]
            received[rid] = (usage["prompt_tokens"], usage["completion_tokens"])
            return
        if kind == "dropped":
            async for chunk in response.content.iter_any():
                if b'"content":"' in chunk and b'"content":""' not in chunk:
                    break
            response.close()  # drops the connection mid-stream
            received[rid] = None
            return
        raw = await response.read()
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-300:]
    usage = next(
        orjson.loads(line[6:])["usage"]
        for line in raw.split(b"\n")
        if line.startswith(b"data: {") and b'"usage"' in line
    )
    received[rid] = (usage["prompt_tokens"], usage["completion_tokens"])


async def drive(url: str, indices: range, received: Received) -> None:
    # aiohttp on uvloop: the client is in the same two cores as the gateway and the simulator, and
    # costs a third of what httpx would, which buys requests within the time budget.
    numbers: Iterator[int] = iter(indices)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

        async def worker() -> None:
            for i in numbers:
                await one(session, url, i, received)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def upstream_connections(pid: int, upstream_port: int) -> int:
    """The process's TCP sockets connected to `upstream_port`: its pool of upstream connections."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in itertools.islice(rows, 1, None):
                fields = row.split()
                if int(fields[9]) in inodes and int(fields[2].rsplit(":", 1)[1], 16) == upstream_port:
                    count += 1
    return count


@dataclass
class Descriptors:
    total: int
    upstream: int  # pooled keep-alive connections to the upstream: their number floats with the traffic

    @property
    def others(self) -> int:
        return self.total - self.upstream

    @classmethod
    def of(cls, pid: int, upstream_port: int) -> Descriptors:
        return cls(open_fds(pid), upstream_connections(pid, upstream_port))


def settle(pid: int, upstream_port: int, baseline: Descriptors, within: float = 5.0) -> Descriptors:
    deadline = time.monotonic() + within
    while (current := Descriptors.of(pid, upstream_port)).others > baseline.others and time.monotonic() < deadline:
        time.sleep(0.05)
    return current


def access_lines(log_file: Path) -> dict[str, dict[str, Any]]:
    lines: dict[str, dict[str, Any]] = {}
    for raw in log_file.read_text().splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("logger") == "proxy.access" and line.get("path") == "/v1/chat/completions":
                assert line["request_id"] not in lines, f"two access lines for {line['request_id']}"
                lines[line["request_id"]] = line
    return lines


@pytest.mark.e2e
def test_soak_keeps_memory_and_descriptors_flat_and_the_token_books_balanced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warm_up = max(500, SOAK_REQUESTS // 4)
    log_file = tmp_path / "gateway.log"
    received: Received = {}
    started = time.monotonic()
    with (
        servers.simulator(event_delay=float(os.environ.get("SOAK_EVENT_DELAY", "0.001"))) as simulator,
        servers.gateway_process(simulator, CLIENT_KEY, {"ANTHROPIC_API_KEY": UPSTREAM_KEY}, log_file) as (url, gateway),
    ):
        upstream_port = int(simulator.rsplit(":", 1)[1])
        uvloop.run(drive(url, range(warm_up), received))
        # Measure once the warm-up's dropped streams have been wound down, not after a guessed pause.
        eventually(lambda: "claude_proxy_streams_open 0.0" in httpx.get(f"{url}/metrics").text, what="streams closed")
        rss_warm, fds_before = rss_bytes(gateway.pid), Descriptors.of(gateway.pid, upstream_port)
        uvloop.run(drive(url, range(warm_up, warm_up + SOAK_REQUESTS), received))
        fds_after = settle(gateway.pid, upstream_port, fds_before)
        rss_end = rss_bytes(gateway.pid)
        metrics = httpx.get(f"{url}/metrics").text
        eventually(lambda: len(access_lines(log_file)) >= len(received), what="every access line written")
    elapsed = time.monotonic() - started

    lines = access_lines(log_file)
    accounted = metric(metrics, "claude_proxy_tokens_total", key="key-1", kind="input") + metric(
        metrics, "claude_proxy_tokens_total", key="key-1", kind="output"
    )
    got = sum(p + c for usage in received.values() if usage for p, c in [usage])
    dropped = [rid for rid, usage in received.items() if usage is None]
    dropped_used = sum(lines[rid].get("prompt_tokens", 0) + lines[rid].get("completion_tokens", 0) for rid in dropped)
    growth = (rss_end - rss_warm) / rss_warm * 100
    with capsys.disabled():
        print(
            f"\nsoak: {warm_up} warm-up + {SOAK_REQUESTS} requests ({CONCURRENCY} concurrent) in {elapsed:.1f}s; "
            f"RSS {rss_warm / 2**20:.1f} MiB -> {rss_end / 2**20:.1f} MiB ({growth:+.1f}%); "
            f"fds {fds_before.total} -> {fds_after.total} (upstream pool {fds_before.upstream} -> "
            f"{fds_after.upstream}); tokens accounted {accounted:.0f} = received {got} "
            f"+ used by {len(dropped)} dropped streams {dropped_used}"
        )

    assert len(received) == warm_up + SOAK_REQUESTS
    assert set(lines) == set(received), "every request has one access line"
    assert {line["status"] for line in lines.values()} == {200}
    for rid, usage in received.items():
        line = lines[rid]
        if usage is None:
            assert line["prompt_tokens"] > 0, line  # a dropped stream's usage is still recorded
        else:
            assert (line["prompt_tokens"], line["completion_tokens"]) == usage, line
    assert accounted == got + dropped_used
    assert growth < 10, f"RSS grew {growth:.1f}% after warm-up"
    assert fds_after.others <= fds_before.others, f"file descriptors {fds_before} -> {fds_after}"
    assert fds_after.upstream <= CONCURRENCY, f"more pooled upstream connections than requests at once: {fds_after}"
    log_text = log_file.read_text()
    for secret in (UPSTREAM_KEY, CLIENT_KEY):
        assert secret not in log_text and secret not in metrics
    assert not [line for line in lines.values() if line.get("error")]
