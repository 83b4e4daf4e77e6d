"""The gateway reads the upstream's model list at start-up (briefly) and on a schedule, in the
background; a failure keeps the last good data; the task ends at shutdown."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from proxy.config import Settings
from proxy.models_refresh import ModelsRefresher
from tests.models_support import (  # noqa: F401 (models_refresh_on: an autouse fixture)
    DEPRECATED,
    NOVA,
    RETIRED,
    models_refresh_on,
    running,
    settings,
    simulated_upstream,
)
from tests.polling import eventually_async

pytestmark = pytest.mark.anyio


def refresh_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "could not read the upstream's model list" in r.getMessage()]


async def test_startup_installs_the_upstreams_capabilities() -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        caps = gateway.gateway.models.capabilities(NOVA)
        assert caps.effort == {"low", "high"} and caps.thinking == {"adaptive"}
        assert caps.structured_outputs is False and caps.max_output_tokens == 300_000
        assert {NOVA, DEPRECATED, RETIRED, "claude-haiku-4-5"} <= (gateway.gateway.models.upstream_ids or set())
        assert (await gateway.client.get("/readyz")).status_code == 200
    (query,) = upstream.model_lists
    # Retired models are listed only when asked for: the gateway asks, to tell "retired" from "unknown".
    assert b"lifecycle%5B%5D=retired" in query and b"limit=1000" in query


async def test_startup_waits_no_longer_than_its_bound_and_the_read_goes_on_in_the_background() -> None:
    upstream = simulated_upstream()
    upstream.released.clear()  # the model list hangs
    config = settings(models_startup_wait=0.05)
    async with running(config, upstream, startup_within=10.0) as gateway:
        assert gateway.gateway.models.upstream_ids is None, "serving with the shipped table meanwhile"
        assert (await gateway.client.get("/readyz")).status_code == 200
        upstream.released.set()
        await eventually_async(lambda: gateway.gateway.models.upstream_ids, what="the late model list installed")
        assert gateway.gateway.models.capabilities(NOVA).max_output_tokens == 300_000


async def test_a_failed_refresh_keeps_the_last_good_data_and_logs_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "proxy")
    upstream = simulated_upstream()
    async with running(settings(models_refresh_interval=0.02), upstream) as gateway:
        good = gateway.gateway.models
        assert good.capabilities(NOVA).max_output_tokens == 300_000
        upstream.failing = True
        await eventually_async(lambda: gateway.refresher.failed >= 2, what="two failed refreshes")
        assert gateway.gateway.models is good, "the last good table stays"
        assert len(refresh_failures(caplog)) == gateway.refresher.failed
        assert "the last model list read" in refresh_failures(caplog)[0]
        upstream.failing = False
        refreshed = gateway.refresher.refreshed
        await eventually_async(lambda: gateway.refresher.refreshed > refreshed, what="a refresh after recovery")
        assert gateway.gateway.models.capabilities(NOVA).max_output_tokens == 300_000


async def test_a_failed_first_read_serves_with_the_shipped_table_and_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "proxy")
    upstream = simulated_upstream()
    upstream.failing = True
    async with running(settings(models_refresh_interval=0.02), upstream) as gateway:
        assert gateway.gateway.models.upstream_ids is None
        assert gateway.gateway.models.capabilities(NOVA).max_output_tokens == 64_000, "the catch-all's guess"
        assert "the shipped model table" in refresh_failures(caplog)[0]
        upstream.failing = False
        await eventually_async(lambda: gateway.gateway.models.upstream_ids, what="a retried read")
        assert gateway.gateway.models.capabilities(NOVA).max_output_tokens == 300_000


async def test_the_refresh_task_is_cancelled_at_shutdown_even_mid_read() -> None:
    upstream = simulated_upstream()
    async with running(settings(models_refresh_interval=0.02), upstream) as gateway:
        refresher = gateway.refresher
        task = refresher._task
        assert task is not None and not task.done()
        upstream.released.clear()  # the next read hangs until shutdown cancels it
        await eventually_async(lambda: len(upstream.model_lists) >= 2, what="a second read under way")
    assert task.cancelled() and refresher._task is None
    assert refresher.refreshed == 1


async def test_a_refresh_interval_of_zero_reads_nothing_on_its_own() -> None:
    upstream = simulated_upstream()
    async with running(settings(models_refresh_interval=0), upstream) as gateway:
        assert upstream.model_lists == [] and gateway.gateway.models.upstream_ids is None
        assert gateway.refresher._task is None
        # Listing models still reads the upstream, and what it learns is installed.
        assert (await gateway.client.get("/v1/models")).status_code == 200
        assert gateway.gateway.models.capabilities(NOVA).max_output_tokens == 300_000


async def test_the_client_model_list_reuses_the_startup_read_and_leaves_retired_models_out() -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        response = await gateway.client.get("/v1/models")
        assert response.status_code == 200
        ids = [entry["id"] for entry in response.json()["data"]]
        assert len(upstream.model_lists) == 1, "no second read within models_cache_seconds"
    assert ids[:2] == [NOVA, DEPRECATED] and RETIRED not in ids
    assert ids[-1] == "gpt-4o" and "claude-haiku-4-5-20251001" in ids


async def test_the_model_list_is_read_page_by_page() -> None:
    pages = {
        None: {"data": [{"id": NOVA, "type": "model", "max_tokens": 1234}], "has_more": True, "last_id": NOVA},
        NOVA: {"data": [{"id": "claude-nova-5", "type": "model"}], "has_more": False, "last_id": "claude-nova-5"},
    }
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.path != "/v1/models":
            return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": "-"}})
        return httpx.Response(200, json=pages[request.url.params.get("after_id")])

    async with running(settings(), httpx.MockTransport(handler)) as gateway:
        assert gateway.gateway.models.upstream_ids == {NOVA, "claude-nova-5"}
        assert gateway.gateway.models.capabilities(NOVA).max_output_tokens == 1234
    assert [url.params.get("after_id") for url in seen] == [None, NOVA]
    assert all(url.params.get_list("lifecycle[]") == ["active", "deprecated", "retired"] for url in seen)


async def test_a_malformed_model_list_is_a_failed_refresh_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": "claude"})

    caplog.set_level(logging.WARNING, "proxy")
    async with running(settings(), httpx.MockTransport(handler)) as gateway:
        assert gateway.gateway.models.upstream_ids is None
        assert gateway.refresher.failed == 1 and len(refresh_failures(caplog)) == 1


async def test_the_refresher_alone_logs_one_line_per_failure(caplog: pytest.LogCaptureFixture) -> None:
    class Failing:
        async def refresh_models(self) -> Any:
            raise RuntimeError("boom\nsecond line")

    caplog.set_level(logging.WARNING, "proxy")
    refresher = ModelsRefresher(Failing(), interval=3600, startup_wait=1.0)  # type: ignore[arg-type]
    assert await refresher.refresh_once() is False
    (line,) = refresh_failures(caplog)
    assert "RuntimeError: boom" in line and "second line" not in line


def test_the_refresh_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_MODELS_REFRESH_INTERVAL", "600")
    monkeypatch.setenv("PROXY_MODELS_STARTUP_WAIT", "0.5")
    config = Settings()
    assert (config.models_refresh_interval, config.models_startup_wait) == (600.0, 0.5)
    monkeypatch.delenv("PROXY_MODELS_REFRESH_INTERVAL")
    monkeypatch.delenv("PROXY_MODELS_STARTUP_WAIT")
    assert (Settings().models_refresh_interval, Settings().models_startup_wait) == (3600.0, 2.0)
