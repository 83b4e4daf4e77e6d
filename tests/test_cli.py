"""The command line, run in this process: help, version, argument checks, and ``check-config``
refusing exactly what ``serve`` refuses."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

import proxy.__main__ as cli
from proxy import server

CLIENT_KEY = "sk-cli-client-4321"
UPSTREAM_KEY = "sk-ant-cli-upstream-8765"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("PROXY_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROXY_STORE", str(tmp_path / "keys.db"))


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(settings: Any) -> None:
        raise AssertionError("serve started a server for a configuration it should refuse")

    monkeypatch.setattr(server, "run", refuse)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit:  # argparse: --help, --version, usage errors
        code = int(exit.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"claude-proxy {version('claude-proxy')}"


def test_no_command_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    assert out.startswith("usage: claude-proxy")
    for command in ("serve", "keys", "check-config", "simulator"):
        assert command in out


def test_serve_help_names_the_key_variables_and_simulator_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0
    for variable in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "PROXY_API_KEYS", "PROXY_ADMIN_KEY", "PROXY_STORE"):
        assert variable in out
    assert "simulator mode" in out and "PROXY_SIMULATE=true" in out and "x-claude-proxy-simulator" in out


@pytest.mark.parametrize("command", ["serve", "check-config", "simulator"])
@pytest.mark.parametrize("value", ["99999", "65536", "-1", "http"])
def test_an_out_of_range_port_is_a_usage_error(
    command: str, value: str, capsys: pytest.CaptureFixture[str], no_serving: None
) -> None:
    code, _, err = run(capsys, command, "--port", value)
    assert code == 2 and "argument --port" in err


def test_check_config_masks_credentials_in_urls(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://gateway-user:base-url-pass@llm.internal/anthropic")
    monkeypatch.setenv("PROXY_STORE", "redis://:redis-pass@127.0.0.1:6379/0")
    # The store itself is not reachable here; whether it holds keys does not matter to the masking.
    monkeypatch.setattr(cli, "keys_stored", lambda url: False)
    code, out, err = run(capsys, "check-config")
    assert code == 0, err
    effective = yaml.safe_load(out)
    assert effective["anthropic_base_url"] == "https://gateway-user:***@llm.internal/anthropic"
    assert effective["store"] == "redis://:***@127.0.0.1:6379/0"
    for secret in ("base-url-pass", "redis-pass", UPSTREAM_KEY):
        assert secret not in out + err


REFUSED: dict[str, tuple[dict[str, str], list[str]]] = {
    "public bind, no client keys": ({"ANTHROPIC_API_KEY": UPSTREAM_KEY}, ["--host", "0.0.0.0"]),
    "public bind, empty upstream key": ({"ANTHROPIC_API_KEY": "", "PROXY_API_KEYS": CLIENT_KEY}, ["--host", "0.0.0.0"]),
    "two workers on SQLite": ({"ANTHROPIC_API_KEY": UPSTREAM_KEY}, ["--workers", "2"]),
    "invalid setting": ({"PROXY_UPSTREAM": '{"max_attempts": 0}'}, []),
}


@pytest.mark.parametrize("case", REFUSED)
def test_check_config_exits_2_for_every_configuration_serve_refuses(
    case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_serving: None
) -> None:
    env, flags = REFUSED[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    served, _, serve_err = run(capsys, "serve", *flags)
    checked, _, check_err = run(capsys, "check-config", *flags)
    assert served == checked == 2
    assert serve_err == check_err and serve_err.startswith("claude-proxy: ")


def test_check_config_accepts_what_serve_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check-config")  # loopback, no key at all: the README's demo
    assert code == 0, err
    assert yaml.safe_load(out)["simulating"] is True
