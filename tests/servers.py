"""Start real server processes on free loopback ports for end-to-end tests: the one way the tests
start a gateway, a simulator or a redis-server process (`run`, `run_to_exit`, `redis_server`)."""

from __future__ import annotations

import os
import shutil
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
import pytest


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


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server process a test starts: none of this process's PROXY_/ANTHROPIC_
    settings, then ``env``, a key store of its own outside the working tree and no shutdown drain."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "ANTHROPIC_"))}
    full_env.update(env or {})
    # Each server gets its own key store, outside the working tree.
    full_env.setdefault("PROXY_STORE", str(Path(tempfile.mkdtemp(prefix="claude-proxy-test-")) / "keys.db"))
    # No load balancer watches a test's /readyz: stop at once on SIGTERM instead of draining for 5 s.
    # A test of the drain itself passes its own PROXY_SHUTDOWN.
    full_env.setdefault("PROXY_SHUTDOWN", '{"drain_delay": 0}')
    return full_env


@contextmanager
def run(
    args: list[str],
    health_url: str,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    stderr: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m proxy ARGS`` until ``health_url`` answers; stopped (SIGTERM) on exit. Its output
    goes to ``log_path`` or a temporary file; ``stderr=subprocess.PIPE`` gives it a pipe instead,
    read only once it is stopped."""
    # A file, not a pipe: a chatty server must never block on a full pipe nobody reads.
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", *args],
            env=server_env(env),
            stdout=log,
            stderr=log if stderr is None else stderr,
        )
        try:
            wait_healthy(health_url, process, log)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def run_to_exit(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m proxy ARGS`` that is expected to exit by itself (a refusal to start, say): its
    exit code and output, in the same environment `run` gives a server."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        env=server_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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


@contextmanager
def redis_server(databases: int = 16) -> Iterator[str]:
    """A private redis-server on a free loopback port, without persistence; yields its URL (no
    database number). The tests share one per run: see the ``redis`` fixtures in conftest.py."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): the Redis store tests need it")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*command, "--databases", str(databases)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start within 10s") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
