"""Running it as an operator does: metrics, structured logs, request ids, timing, drain, config checks,
and the container's entrypoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import servers
from tests.polling import eventually

ROOT = Path(__file__).resolve().parent.parent
CLIENT_KEY = "sk-ops-client-key-7777"
UPSTREAM_KEY = "sk-ant-ops-upstream-secret-9999"
CHAT = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hello ops"}]}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    with servers.simulator(event_delay=0.05) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(simulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log_file = tmp_path_factory.mktemp("logs") / "gateway.log"
    with servers.gateway(simulator, CLIENT_KEY, {"ANTHROPIC_API_KEY": UPSTREAM_KEY}, log_path=log_file) as url:
        yield url, log_file


def test_metrics_show_requests_latency_tokens_and_upstream_after_traffic(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            assert b"[DONE]" in response.read()
        assert client.post("/v1/chat/completions", json={"model": 5}).status_code == 400
        text = client.get("/metrics").text
    assert re.search(
        r'claude_proxy_requests_total\{model="claude-haiku-4-5",route="/v1/chat/completions",status="200"\} 2', text
    )
    assert re.search(r'claude_proxy_requests_total\{model="",route="/v1/chat/completions",status="400"\} 1', text)
    assert (
        'claude_proxy_request_duration_seconds_bucket{le="0.005",model="claude-haiku-4-5",route="/v1/chat/completions"}'
        in text
    )
    assert re.search(r'claude_proxy_time_to_first_token_seconds_count\{model="claude-haiku-4-5"\} 1', text)
    assert re.search(r'claude_proxy_tokens_total\{key="key-1",kind="input",model="claude-haiku-4-5"\} [1-9]', text)
    assert re.search(r'claude_proxy_tokens_total\{key="key-1",kind="output",model="claude-haiku-4-5"\} [1-9]', text)
    assert re.search(r'claude_proxy_upstream_attempts_total\{path="/v1/messages"\} 2', text)
    assert re.search(r'claude_proxy_upstream_keys\{state="healthy"\} 1', text)
    assert "claude_proxy_in_flight_requests" in text and "claude_proxy_streams_open 0" in text
    assert UPSTREAM_KEY not in text and CLIENT_KEY not in text


def test_every_response_has_a_request_id_and_server_timing(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    with httpx.Client(base_url=url, headers=AUTH) as client:
        mine = client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "trace-abc-123"})
        assert mine.headers["x-request-id"] == "trace-abc-123"
        assert re.match(r"upstream;dur=[\d.]+, gateway;dur=[\d.]+", mine.headers["server-timing"])
        for response in (client.get("/healthz"), client.post("/v1/chat/completions", json={}), client.get("/nope")):
            assert response.headers["x-request-id"].startswith("req_")
            assert "gateway;dur=" in response.headers["server-timing"]
        junk = client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
        assert junk.headers["x-request-id"].startswith("req_")


def test_access_log_lines_are_json_with_no_secret(gateway: tuple[str, Path]) -> None:
    url, log_file = gateway
    with httpx.Client(base_url=url, headers=AUTH) as client:
        client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "log-check-1"})
        client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-wrong-secret-0000"})
    # Both requests' access lines reach the file (the log writer thread writes every 50 ms).
    raw = eventually(lambda: _written_after(log_file, "log-check-1", 1), what="both access lines written")
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    access = [line for line in lines if line.get("request_id") == "log-check-1"]
    assert len(access) == 1
    # One access line per request: uvicorn's own plain access line is not written beside it.
    assert [line["msg"] for line in lines if line["logger"] == "uvicorn.access"] == []
    line = access[0]
    assert line["status"] == 200 and line["key"] == "key-1" and line["model"] == "claude-haiku-4-5"
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0 and line["attempts"] == 1
    assert line["upstream_request_id"].startswith("req_")
    assert "Hello ops" not in raw  # prompts are not logged unless log_payloads is on
    for secret in (UPSTREAM_KEY, CLIENT_KEY, "sk-wrong-secret-0000"):
        assert secret not in raw


def test_readyz_is_ready_once_started(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_sigterm_during_a_stream_drains_readiness_then_finishes_the_stream(simulator: str) -> None:
    env = {"PROXY_SHUTDOWN": '{"drain_delay": 1.0, "grace_period": 20}'}
    with servers.gateway_process(simulator, CLIENT_KEY, env) as (url, process):
        body: dict[str, Any] = {"chunks": b"", "error": None}
        long_chat = {**CHAT, "messages": [{"role": "user", "content": "stream " * 30}], "stream": True}

        def stream() -> None:
            try:
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=long_chat, headers=AUTH, timeout=30) as r:
                    for chunk in r.iter_bytes():
                        body["chunks"] += chunk
            except Exception as exc:  # reported below
                body["error"] = exc

        reader = threading.Thread(target=stream)
        reader.start()
        deadline = time.monotonic() + 5
        while b"content" not in body["chunks"] and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        # Still accepting during the drain delay, but not ready; then, past it, no longer accepting.
        eventually(lambda: httpx.get(f"{url}/readyz").status_code == 503, within=1.0, what="/readyz answers 503")
        eventually(lambda: _refused(f"{url}/healthz"), within=5.0, what="new connections refused after the drain")
        reader.join(timeout=30)
        assert body["error"] is None
        assert body["chunks"].rstrip().endswith(b"data: [DONE]")
        assert process.wait(timeout=20) is not None


def test_check_config_masks_secrets_and_names_the_bad_key(tmp_path: Path) -> None:
    env = {**os.environ, "ANTHROPIC_API_KEY": UPSTREAM_KEY, "PROXY_API_KEYS": CLIENT_KEY}
    good = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", str(ROOT / "config.example.yaml")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    effective = yaml.safe_load(good.stdout)
    assert effective["upstream"]["max_attempts"] == 3
    assert effective["anthropic_api_key"] == [{"key": "…9999", "weight": 1}]
    assert UPSTREAM_KEY not in good.stdout and CLIENT_KEY not in good.stdout

    bad = _write_config({"upstream": {"max_attempts": 0}, "port": "eighty"}, tmp_path)
    failed = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", str(bad)], capture_output=True, text=True, env=env
    )
    assert failed.returncode == 2
    assert "upstream.max_attempts" in failed.stderr and "port" in failed.stderr


def test_invalid_config_fails_fast_at_startup(tmp_path: Path) -> None:
    bad = _write_config({"upstream": {"max_attempts": "many"}}, tmp_path)
    started = servers.run_to_exit(["serve", "--config", str(bad), "--port", str(servers.free_port())], timeout=30)
    assert started.returncode == 2
    assert "upstream.max_attempts" in started.stderr


def test_public_bind_without_keys_refuses_to_start() -> None:
    started = servers.run_to_exit(["serve", "--host", "0.0.0.0", "--port", str(servers.free_port())], timeout=30)
    assert started.returncode == 2
    assert "PROXY_API_KEYS" in started.stderr and "PROXY_ALLOW_ANONYMOUS" in started.stderr


def test_container_entrypoint_serves_from_a_plain_venv(simulator: str) -> None:
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint[:3] == ["python", "-m", "proxy"]
    port = servers.free_port()
    args = [a if a != "8080" else str(port) for a in entrypoint[3:]]
    env = {"ANTHROPIC_API_KEY": UPSTREAM_KEY, "ANTHROPIC_BASE_URL": simulator, "PROXY_API_KEYS": CLIENT_KEY}
    with servers.run(args, f"http://127.0.0.1:{port}/healthz", env):
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, headers=AUTH)
        assert response.status_code == 200


def test_two_workers_aggregate_their_metrics_and_each_flushes_its_last_log_lines(
    simulator: str, tmp_path: Path
) -> None:
    port = servers.free_port()
    env = {
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_BASE_URL": simulator,
        "PROXY_API_KEYS": CLIENT_KEY,
        "PROXY_ALLOW_PER_PROCESS_LIMITS": "true",  # SQLite store: without it, serve refuses --workers 2
    }
    log_file = tmp_path / "gateway.log"
    args = ["serve", "--port", str(port), "--workers", "2"]
    with servers.run(args, f"http://127.0.0.1:{port}/healthz", env, log_path=log_file) as process:
        for _ in range(6):  # fresh connections, so both workers take some
            assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, headers=AUTH).is_success
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert re.search(
        r'claude_proxy_requests_total\{model="claude-haiku-4-5",route="/v1/chat/completions",status="200"\} 6\.0', text
    )
    # The supervisor relayed SIGTERM to both workers; each one's final line is the last it logs.
    assert process.returncode == 0
    assert len(re.findall(r"Finished server process \[\d+\]", log_file.read_text())) == 2


def test_sigterm_keeps_the_last_log_lines(simulator: str, tmp_path: Path) -> None:
    # uvicorn re-raises SIGTERM once it has shut down; with the default handler the process died
    # with its last lines still waiting for the log writer's next round.
    log_file = tmp_path / "gateway.log"
    with servers.gateway_process(simulator, CLIENT_KEY, log_path=log_file) as (url, process):
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM  # still ends as killed by the signal
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines[-1]["msg"] == f"Finished server process [{process.pid}]"
    assert any(line["logger"] == "proxy.access" for line in lines)


def test_a_gateway_without_an_upstream_key_marks_every_answer_as_simulated() -> None:
    # The README's `python -m proxy serve` with no key at all: loopback, simulator, still serving.
    port = servers.free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        servers.run(["serve", "--port", str(port)], f"{url}/healthz", {"ANTHROPIC_API_KEY": ""}),
        httpx.Client(base_url=url) as client,
    ):
        answers = [
            client.post("/v1/chat/completions", json=CHAT),
            client.post("/v1/messages", json={**CHAT, "max_tokens": 10}, headers={"anthropic-version": "x"}),
            client.post("/v1/chat/completions", json={"model": 5}),
            client.get("/v1/models"),
            client.get("/readyz"),
            client.get("/nope"),
        ]
    assert [a.status_code for a in answers] == [200, 200, 400, 200, 200, 404]
    assert all(a.headers["x-claude-proxy-simulator"] == "1" for a in answers)
    assert "Hello!" in answers[0].json()["choices"][0]["message"]["content"]


def test_a_gateway_with_an_upstream_key_does_not_say_it_is_simulated(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 200 and "x-claude-proxy-simulator" not in response.headers


def test_a_public_bind_with_client_keys_but_an_empty_upstream_key_refuses_to_start() -> None:
    env = {"ANTHROPIC_API_KEY": "", "PROXY_API_KEYS": CLIENT_KEY}
    args = ["serve", "--host", "0.0.0.0", "--port", str(servers.free_port())]
    started = servers.run_to_exit(args, env, timeout=30)
    assert started.returncode == 2
    assert "built-in simulator" in started.stderr and "PROXY_SIMULATE=true" in started.stderr


def _written_after(log_file: Path, request_id: str, more: int) -> str:
    """The log's text once the access line of ``request_id`` and ``more`` access lines after it are in."""
    text = log_file.read_text()
    ids = [json.loads(line).get("request_id") for line in text.splitlines() if '"logger":"proxy.access"' in line]
    return text if request_id in ids and len(ids) - ids.index(request_id) > more else ""


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.ConnectError:
        return True
    return False


def _write_config(values: dict[str, Any], folder: Path | None = None) -> Path:
    folder = folder or Path(os.environ.get("TMPDIR", "/tmp"))
    path = folder / f"config-{os.getpid()}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_console_script_is_the_same_command() -> None:
    script = Path(sys.executable).parent / "claude-proxy"
    command = [str(script)] if script.exists() else ["claude-proxy"]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for verb in ("serve", "check-config", "simulator"):
        assert verb in result.stdout


def test_a_stderr_nobody_reads_does_not_stall_the_gateway(simulator: str) -> None:
    # stderr is a pipe this test never reads: its buffer (64 KiB) holds ~150 access lines. A gateway
    # that wrote its logs from the event loop would block on the next write, and every request with it.
    port = servers.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"ANTHROPIC_API_KEY": UPSTREAM_KEY, "ANTHROPIC_BASE_URL": simulator, "PROXY_API_KEYS": CLIENT_KEY}
    with (
        servers.run(["serve", "--port", str(port)], f"{url}/healthz", env, stderr=subprocess.PIPE),
        httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
    ):
        for _ in range(600):  # ~4 times what the pipe holds
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
