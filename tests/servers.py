"""Start real server processes on free loopback ports for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{url} exited with {process.returncode}: {log.read().decode(errors='replace')}")
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy within {timeout}s")


@contextmanager
def run(
    args: list[str], health_url: str, env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "ANTHROPIC_"))}
    full_env.update(env or {})
    # Each server gets its own key store, outside the working tree.
    full_env.setdefault("PROXY_STORE", str(Path(tempfile.mkdtemp(prefix="claude-proxy-test-")) / "keys.db"))
    # No load balancer watches a test's /readyz: stop at once on SIGTERM instead of draining for 5 s.
    # A test of the drain itself passes its own PROXY_SHUTDOWN.
    full_env.setdefault("PROXY_SHUTDOWN", '{"drain_delay": 0}')
    # A file, not a pipe: a chatty server must never block on a full pipe nobody reads.
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        process = subprocess.Popen([sys.executable, "-m", "proxy", *args], env=full_env, stdout=log, stderr=log)
        try:
            wait_healthy(health_url, process, log)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def simulator(event_delay: float = 0.0) -> Iterator[str]:
    port = free_port()
    args = ["simulator", "--port", str(port), "--event-delay", str(event_delay)]
    with run(args, f"http://127.0.0.1:{port}/v1/models"):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def gateway_process(
    upstream_url: str, client_key: str, extra_env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test-upstream",
        "ANTHROPIC_BASE_URL": upstream_url,
        "PROXY_API_KEYS": client_key,
        **(extra_env or {}),
    }
    with run(["serve", "--port", str(port)], f"http://127.0.0.1:{port}/healthz", env, log_path) as process:
        yield f"http://127.0.0.1:{port}", process


@contextmanager
def gateway(
    upstream_url: str, client_key: str, extra_env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[str]:
    with gateway_process(upstream_url, client_key, extra_env, log_path) as (url, _):
        yield url
