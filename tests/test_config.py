"""Settings: what ``serve`` refuses to start with, and how command-line values are validated."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_settings

CLIENT_KEY = "sk-config-client-1234"
UPSTREAM_KEY = "sk-ant-config-upstream-5678"


@pytest.fixture(autouse=True)
def no_upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a missing Kubernetes secret or `docker run -e ANTHROPIC_API_KEY=` leaves it: set, but empty.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    monkeypatch.delenv("PROXY_SIMULATE", raising=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "gateway.internal"])
def test_a_public_bind_with_client_keys_but_no_upstream_key_is_refused_naming_the_fix(host: str) -> None:
    settings = load_settings(host=host, api_keys=[CLIENT_KEY])
    assert settings.simulating
    with pytest.raises(ConfigError, match="built-in simulator") as refused:
        settings.check_can_serve()
    assert "ANTHROPIC_API_KEY" in str(refused.value) and "PROXY_SIMULATE=true" in str(refused.value)


def test_the_simulator_asked_for_explicitly_may_serve_a_public_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_SIMULATE", "true")
    load_settings(host="0.0.0.0", api_keys=[CLIENT_KEY]).check_can_serve()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_without_an_upstream_key_serves_the_simulator(host: str) -> None:
    settings = load_settings(host=host)
    assert settings.simulating
    settings.check_can_serve()


def test_a_public_bind_with_an_upstream_key_and_client_keys_may_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", UPSTREAM_KEY)
    load_settings(host="0.0.0.0", api_keys=[CLIENT_KEY]).check_can_serve()


def test_every_reason_to_refuse_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(host="0.0.0.0", workers=2).check_can_serve()
    message = str(refused.value)
    assert "PROXY_API_KEYS" in message and "PROXY_SIMULATE" in message and "2 workers" in message


def test_several_workers_on_a_sqlite_store_are_refused_unless_per_process_limits_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="3 workers on the SQLite key store") as refused:
        load_settings(workers=3).check_can_serve()
    assert "redis://" in str(refused.value) and "PROXY_ALLOW_PER_PROCESS_LIMITS=true" in str(refused.value)
    load_settings(workers=3, store="redis://127.0.0.1:6379/0").check_can_serve()
    monkeypatch.setenv("PROXY_ALLOW_PER_PROCESS_LIMITS", "true")
    load_settings(workers=3).check_can_serve()


@pytest.mark.parametrize(
    ("override", "field"), [({"port": 99999}, "port"), ({"port": -1}, "port"), ({"workers": 0}, "workers")]
)
def test_command_line_values_are_validated_like_any_setting(override: dict[str, int], field: str) -> None:
    # model_copy(update=...) took them as they came: --port 99999 bound port 34463.
    with pytest.raises(ConfigError, match=f"invalid configuration: {field}:"):
        load_settings(None, **override)


def test_command_line_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_PORT", "7000")
    assert load_settings().port == 7000
    assert load_settings(port=9001).port == 9001
