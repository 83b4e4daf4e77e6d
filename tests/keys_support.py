"""Helpers for the client-key tests: the ways to reach a store. The stores themselves (a SQLite file,
a database on the run's one redis-server) are fixtures in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
SECRET_RE = r"sk-cp-[0-9A-Za-z]{43}"


def keys_cli(store: str, *args: str) -> str:
    """``python -m proxy keys ARGS --store STORE`` as an operator runs it; its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "keys", *args, "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def redis_dump(url: str) -> bytes:
    """Every key and value in the server, as bytes: for 'no secret is stored' checks."""
    parts: list[bytes] = []
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter("*"):
            parts.append(key)
            kind = client.type(key)
            if kind == b"string":
                parts.append(client.get(key) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(key).items():
                    parts += [field, value]
            elif kind == b"list":
                parts += list(client.lrange(key, 0, -1))
            elif kind == b"zset":
                parts += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(parts)


def sqlite_bytes(path: Path) -> bytes:
    """The database file with its WAL and shared-memory files, if any."""
    data = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            data += candidate.read_bytes()
    return data


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m proxy.keys.cli keys …`` in a separate process, as an operator would run it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "ANTHROPIC_"))}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy.keys.cli", "keys", *args],
        env=full_env,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
