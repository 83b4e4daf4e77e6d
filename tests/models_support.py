"""A gateway app run in-process against the simulator, with the simulator's model list under the
test's control: what tests/test_models_refresh.py and tests/test_models_serving.py share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.config import Settings
from proxy.gateway import Gateway
from proxy.models_refresh import ModelsRefresher
from proxy.simulator import create_app as create_simulator
from proxy.simulator.transport import InProcessTransport

CLIENT_KEY = "sk-client-models-0123456789"

# Declared by the simulated upstream only: the shipped table has never heard of any of them.
NOVA = "claude-nova-6"  # effort low and high only, always-on adaptive thinking, no structured outputs
RETIRED = "claude-old-1"
DEPRECATED = "claude-dep-2"
EXTRA_MODELS: dict[str, dict[str, Any]] = {
    NOVA: {
        "effort": ["low", "high"],
        "thinking": ["adaptive"],
        "structured_outputs": False,
        "max_output_tokens": 300_000,
        "max_input_tokens": 1_000_000,
    },
    DEPRECATED: {"lifecycle": "deprecated", "retires": "2027-06-30"},
    RETIRED: {"lifecycle": "retired", "retires": "2026-10-31"},
}


@pytest.fixture(autouse=True)
def models_refresh_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment wins over the settings a test builds; the suite may turn the refresh off there."""
    monkeypatch.delenv("PROXY_MODELS_REFRESH_INTERVAL", raising=False)
    monkeypatch.delenv("PROXY_MODELS_STARTUP_WAIT", raising=False)


@dataclass
class Upstream:
    """The simulator behind a gate: the test can hold or fail its model list, and sees every call."""

    app: Any
    released: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False
    model_lists: list[bytes] = field(default_factory=list)  # query strings of GET /v1/models
    messages: list[dict[str, Any]] = field(default_factory=list)  # bodies of POST /v1/messages

    def __post_init__(self) -> None:
        self.released.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/models":
            self.model_lists.append(scope["query_string"])
            await self.released.wait()
            if self.failing:
                body = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": "Internal error"}})
                await send(
                    {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": body})
                return
        if scope["type"] == "http" and scope["path"] == "/v1/messages":
            receive = await self._recording(receive)
        await self.app(scope, receive, send)

    async def _recording(self, receive: Any) -> Any:
        raw = b""
        while True:
            event = await receive()
            raw += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.messages.append(orjson.loads(raw))
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return replay


def simulated_upstream(**options: Any) -> Upstream:
    return Upstream(create_simulator(extra_models=EXTRA_MODELS, **options))


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": "sk-ant-upstream-models-0123456789",
        "api_keys": CLIENT_KEY,
        "model_aliases": {"gpt-4o": NOVA},
        "upstream": {"max_backoff": 0.001, "max_attempts": 1},
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Running:
    app: Starlette
    client: httpx.AsyncClient

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    @property
    def refresher(self) -> ModelsRefresher:
        refresher: ModelsRefresher = self.app.state.models_refresher
        return refresher


@asynccontextmanager
async def running(
    config: Settings, upstream: Upstream | httpx.AsyncBaseTransport, *, startup_within: float = 10.0
) -> AsyncIterator[Running]:
    """The gateway started (its lifespan entered, failing the test if that takes ``startup_within``
    seconds), with a client holding a valid key; stopped on exit."""
    transport = upstream if isinstance(upstream, httpx.AsyncBaseTransport) else InProcessTransport(upstream)
    app = create_app(config, transport=transport)
    lifespan = app.router.lifespan_context(app)
    await asyncio.wait_for(lifespan.__aenter__(), startup_within)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gateway",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    try:
        yield Running(app, client)
    finally:
        await client.aclose()
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), 10.0)
