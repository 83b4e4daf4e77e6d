"""``claude-proxy keys …`` run as a separate process, against a running KeyService."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from proxy.errors import AuthenticationFailed, PermissionDenied, RateLimited
from proxy.keys import KeyService, Principal
from proxy.keys.cli import main, register
from proxy.keys.records import hash_secret
from tests.keys_support import SECRET_RE, run_cli, sqlite_bytes

pytestmark = pytest.mark.anyio


async def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, *args, env=env, stdin=stdin)
    return done.returncode, done.stdout, done.stderr


async def eventually_principal(service: KeyService, secret: str) -> tuple[Principal, float]:
    started = time.monotonic()
    while True:
        principal = await service.authenticate({"authorization": f"Bearer {secret}"})
        if principal.source == "store":
            return principal, time.monotonic() - started
        assert time.monotonic() - started < 5, "the created key was not seen within 5 seconds"
        await asyncio.sleep(0.05)


async def test_create_is_seen_by_a_running_gateway_and_revoke_refused(store_url: str) -> None:
    service = await KeyService.open(store_url, refresh_interval=0.2, flush_interval=0.05)
    try:
        code, out, err = await cli(
            "create", "--name", "team-a", "--models", "claude-haiku-*", "--rpm", "5", "--store", store_url
        )
        assert code == 0, err
        lines = out.strip().splitlines()
        secret = lines[-1]
        assert re.fullmatch(SECRET_RE, secret), "the secret must be the last line"
        assert sum(secret in line for line in lines) == 1
        principal, waited = await eventually_principal(service, secret)
        assert waited < 5
        with pytest.raises(PermissionDenied) as denied:
            service.check_model(principal, "claude-sonnet-4-6")
        assert "claude-sonnet-4-6" in denied.value.message
        for _ in range(5):
            await service.admit(principal, "claude-haiku-4-5", 10)
        with pytest.raises(RateLimited) as limited:
            await service.admit(principal, "claude-haiku-4-5", 10)
        assert limited.value.headers["retry-after"]
        assert limited.value.headers["x-ratelimit-limit-requests"] == "5"

        code, out, err = await cli("revoke", "team-a", "--store", store_url)
        assert code == 0, err
        started = time.monotonic()
        while True:
            try:
                await service.authenticate({"authorization": f"Bearer {secret}"})
            except AuthenticationFailed as exc:
                assert exc.status_code == 401
                break
            assert time.monotonic() - started < 5, "the revoked key still worked after 5 seconds"
            await asyncio.sleep(0.05)
    finally:
        await service.aclose()


async def test_list_and_usage(store_url: str) -> None:
    code, out, err = await cli(
        "create", "--name", "alpha", "--tpm", "1000", "--metadata", '{"team": "x"}', "--store", store_url
    )
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    code, out, err = await cli(
        "create",
        "--name",
        "beta",
        "--daily-tokens",
        "500",
        "--expires",
        "2099-06-01T00:00:00+02:00",
        "--store",
        store_url,
    )
    assert code == 0, err
    other = out.strip().splitlines()[-1]

    service = await KeyService.open(store_url, refresh_interval=0.05, flush_interval=0.05)
    try:
        principal = await service.authenticate({"x-api-key": secret})
        admission = await service.admit(principal, "claude-haiku-4-5", 100)
        await service.settle(admission, model="claude-haiku-4-5", input_tokens=300, output_tokens=50, cached_tokens=100)
    finally:
        await service.aclose()  # writes the ledger

    code, table, err = await cli("list", "--store", store_url)
    assert code == 0, err
    assert table.splitlines()[0].split()[:2] == ["NAME", "STATUS"]
    assert "alpha" in table and "beta" in table
    code, listed, err = await cli("list", "--json", "--store", store_url)
    assert code == 0, err
    keys = {k["name"]: k for k in json.loads(listed)}
    assert keys["alpha"]["tpm"] == 1000 and keys["alpha"]["metadata"] == {"team": "x"}
    assert keys["beta"]["expires_at"] == "2099-05-31T22:00:00Z"
    for text in (table, listed):
        assert secret not in text and other not in text

    code, usage, err = await cli("usage", "--json", "--store", store_url)
    assert code == 0, err
    body = json.loads(usage)
    assert [(r["key"], r["model"], r["requests"], r["input_tokens"], r["cached_tokens"]) for r in body["data"]] == [
        ("alpha", "claude-haiku-4-5", 1, 300, 100)
    ]
    assert body["totals"]["cost_usd"] == pytest.approx((200 * 1 + 100 * 0.1 + 50 * 5) / 1e6)
    code, usage_table, err = await cli("usage", "alpha", "--store", store_url)
    assert code == 0, err
    assert "claude-haiku-4-5" in usage_table and usage_table.strip().splitlines()[-1].startswith("TOTAL")
    code, nothing, err = await cli("usage", "beta", "--json", "--store", store_url)
    assert json.loads(nothing)["data"] == []


async def test_the_store_comes_from_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "from-env.db"
    code, out, err = await cli("create", "--name", "env-store", env={"PROXY_STORE": str(path)})
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    assert path.exists()
    assert secret.encode() not in sqlite_bytes(path)
    assert hash_secret(secret).encode() in sqlite_bytes(path)

    config = tmp_path / "proxy.yaml"
    other = tmp_path / "from-config.db"
    config.write_text(f"store: sqlite:///{other}\n", encoding="utf-8")
    code, out, err = await cli("create", "--name", "config-store", "--config", str(config))
    assert code == 0, err
    assert other.exists()
    code, out, err = await cli("list", "--json", env={"PROXY_CONFIG": str(config)})
    assert [k["name"] for k in json.loads(out)] == ["config-store"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PROXY_", "ANTHROPIC_")):
            monkeypatch.delenv(name)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same commands in this process (quicker, for the error paths)."""
    code = main(["keys", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.usefixtures("clean_env")
def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "keys.db")
    assert run_main(capsys, "create", "--name", "dup", "--store", store)[0] == 0
    code, _, err = run_main(capsys, "create", "--name", "dup", "--store", store)
    assert code == 2 and "already exists" in err
    code, _, err = run_main(capsys, "revoke", "ghost", "--store", store)
    assert code == 1 and "ghost" in err
    code, _, err = run_main(capsys, "create", "--name", "m", "--metadata", "[1]", "--store", store)
    assert code == 2 and "--metadata" in err
    code, _, err = run_main(capsys, "create", "--name", "r", "--rpm", "0", "--store", store)
    assert code == 2 and "--rpm" in err
    code, _, err = run_main(capsys, "create", "--name", "e", "--expires", "yesterday", "--store", store)
    assert code == 2 and "--expires" in err
    code, _, err = run_main(capsys, "create", "--name", "p", "--expires", "2001-01-01", "--store", store)
    assert code == 2 and "past" in err
    code, _, err = run_main(capsys, "create", "--name", "key-3", "--store", store)
    assert code == 2 and "reserved" in err
    code, _, err = run_main(capsys, "usage", "--since", "May", "--store", store)
    assert code == 2 and "--since" in err
    code, _, err = run_main(capsys, "disable", "dup", "--store", store)
    assert code == 0
    code, out, _ = run_main(capsys, "list", "--store", store)
    assert "disabled" in out
    code, out, _ = run_main(capsys, "list", "--store", str(tmp_path / "none.db"))
    assert code == 0 and "No keys" in out
    assert not (tmp_path / "none.db").exists()  # reading never creates the file
    code, _, err = run_main(capsys, "list", "--store", "mysql://db/keys")
    assert code == 1 and "unsupported store URL" in err


@pytest.mark.usefixtures("clean_env")
def test_usage_of_an_unknown_key_and_revoking_twice_are_errors_like_revoking_a_missing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "keys.db")
    missing_code, _, missing_err = run_main(capsys, "revoke", "ghost", "--store", store)
    assert missing_code == 1 and "no key named 'ghost'" in missing_err

    code, out, err = run_main(capsys, "usage", "ghost", "--store", store)
    assert (code, out) == (missing_code, "") and "no key named 'ghost'" in err

    assert run_main(capsys, "create", "--name", "once", "--store", store)[0] == 0
    assert run_main(capsys, "revoke", "once", "--store", store)[0] == 0
    code, out, err = run_main(capsys, "revoke", "once", "--store", store)
    assert (code, out) == (missing_code, "") and "'once' was already revoked at" in err

    # Known keys without usage, and the PROXY_API_KEYS names, still answer with an (empty) table.
    for name in ("once", "key-1"):
        code, out, _ = run_main(capsys, "usage", name, "--store", store)
        assert code == 0 and out.splitlines()[-1].startswith("TOTAL")


@pytest.mark.usefixtures("clean_env")
def test_bare_keys_prints_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys)
    assert code == 0
    for command in ("create", "list", "revoke", "usage", "hash"):
        assert command in out


async def test_hash_reads_the_secret_from_stdin() -> None:
    code, out, _ = await cli("hash", stdin="my-config-secret\n")
    assert code == 0
    assert out.strip() == hash_secret("my-config-secret")


def test_register_adds_the_keys_group() -> None:
    parser = argparse.ArgumentParser(prog="claude-proxy")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve")
    register(commands)
    args = parser.parse_args(["keys", "create", "--name", "n", "--models", "a*,b*", "--rpm", "3", "--store", "x.db"])
    assert (args.command, args.keys_command, args.name, args.models, args.rpm, args.store) == (
        "keys",
        "create",
        "n",
        "a*,b*",
        3,
        "x.db",
    )
    assert callable(args.handler)
    usage = parser.parse_args(["keys", "usage", "team-a", "--json"])
    assert (usage.name, usage.json) == ("team-a", True)
