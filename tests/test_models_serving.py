"""Through the HTTP API, against a simulated upstream whose Models API declares a model the shipped
table has never heard of, a deprecated one and a retired one: each is served, warned about or
refused as the upstream reports it, and an unknown model is a 404 saying how to add an alias."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.anthropic_schema import assert_valid_messages_request
from tests.models_support import (  # noqa: F401 (models_refresh_on: an autouse fixture)
    DEPRECATED,
    NOVA,
    RETIRED,
    Running,
    models_refresh_on,
    running,
    settings,
    simulated_upstream,
)

pytestmark = pytest.mark.anyio

SUCCESSOR = "claude-sonnet-4-6"
# The Models API does not name successors; the table does (here the operator's rows, as the shipped
# table does for the models it knows).
CONFIG = {"models": {RETIRED: {"successor": SUCCESSOR}, DEPRECATED: {"successor": SUCCESSOR}}}


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra}


def responses_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": "Hi", **extra}


ENDPOINTS = {
    "chat": ("/v1/chat/completions", chat_body),
    "chat-stream": ("/v1/chat/completions", lambda model: chat_body(model, stream=True)),
    "responses": ("/v1/responses", responses_body),
    "responses-stream": ("/v1/responses", lambda model: responses_body(model, stream=True)),
}


async def ask(gateway: Running, endpoint: str, model: str) -> httpx.Response:
    path, body = ENDPOINTS[endpoint]
    return await gateway.client.post(path, json=body(model))


def model_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", code)
    return error


# --- a model released after this gateway --------------------------------------------------------


async def test_a_model_the_shipped_table_never_heard_of_is_served_with_the_upstreams_capabilities() -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        client = gateway.client
        answered = await client.post("/v1/chat/completions", json=chat_body(NOVA, reasoning_effort="medium"))
        assert answered.status_code == 200, answered.text
        high = await client.post("/v1/responses", json=responses_body(NOVA, reasoning={"effort": "high"}))
        assert high.status_code == 200, high.text
        big = await client.post("/v1/chat/completions", json=chat_body(NOVA, max_completion_tokens=250_000))
        assert big.status_code == 200, big.text
        too_big = await client.post("/v1/chat/completions", json=chat_body(NOVA, max_completion_tokens=300_001))
        assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "max_completion_tokens"
        schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        structured = await client.post("/v1/chat/completions", json=chat_body(NOVA, response_format=schema))
        assert structured.status_code == 400 and structured.json()["error"]["param"] == "response_format.type"
    for sent in upstream.messages:
        assert_valid_messages_request(sent)
    medium, high_sent, big_sent = upstream.messages
    assert medium["output_config"] == {"effort": "low"}, "medium is not offered: the nearest level the upstream lists"
    assert "thinking" not in medium, "always-on adaptive thinking is steered by effort alone"
    assert high_sent["output_config"] == {"effort": "high"}
    assert big_sent["max_tokens"] == 250_000  # above the catch-all's 64000


async def test_an_aliased_openai_name_reaches_its_model() -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        response = await gateway.client.post("/v1/chat/completions", json=chat_body("gpt-4o"))
    assert response.status_code == 200, response.text
    assert upstream.messages[0]["model"] == NOVA


# --- retired and deprecated ------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_a_retired_model_is_a_404_that_names_its_successor(endpoint: str) -> None:
    upstream = simulated_upstream()
    async with running(settings(**CONFIG), upstream) as gateway:
        error = model_error(await ask(gateway, endpoint, RETIRED), 404, "model_retired")
    assert "retired on 2026-10-31" in error["message"] and f"'{SUCCESSOR}'" in error["message"]
    assert upstream.messages == [], "refused before any upstream call"


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
async def test_claude_sonnet_4_5_is_retired_by_the_shipped_table_naming_sonnet_5_5(endpoint: str) -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        error = model_error(await ask(gateway, endpoint, "claude-sonnet-4-5"), 404, "model_retired")
        dated = model_error(await ask(gateway, endpoint, "claude-sonnet-4-5-20250929"), 404, "model_retired")
    assert "2026-11-30" in error["message"] and "'claude-sonnet-5-5'" in error["message"]
    assert "'claude-sonnet-5-5'" in dated["message"]
    assert upstream.messages == [], "refused before any upstream call"


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
async def test_claude_opus_4_5_is_served_with_a_warning_naming_opus_5_5(endpoint: str) -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        response = await ask(gateway, endpoint, "claude-opus-4-5")
    assert response.status_code == 200, response.text
    warning = response.headers["warning"]
    assert "claude-opus-4-5" in warning and "2027-01-22" in warning and "claude-opus-5-5" in warning


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_a_deprecated_model_is_served_with_a_warning_header(endpoint: str) -> None:
    upstream = simulated_upstream()
    async with running(settings(**CONFIG), upstream) as gateway:
        response = await ask(gateway, endpoint, DEPRECATED)
        assert response.status_code == 200, response.text
        warning = response.headers.get("warning")
        active = await ask(gateway, endpoint, NOVA)
    assert warning is not None and warning.startswith('299 - "') and warning.endswith('"')
    assert DEPRECATED in warning and "2027-06-30" in warning and SUCCESSOR in warning
    assert "warning" not in active.headers


# --- unknown models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
@pytest.mark.parametrize("model", ["gpt-4.1", "claude-nova-9"], ids=["openai-name", "claude-id-nobody-lists"])
async def test_an_unknown_model_is_a_404_that_says_how_to_add_an_alias(endpoint: str, model: str) -> None:
    upstream = simulated_upstream()
    async with running(settings(), upstream) as gateway:
        error = model_error(await ask(gateway, endpoint, model), 404, "model_not_found")
        route = await gateway.client.get(f"/v1/models/{model}")
    assert "model_aliases" in error["message"] and "PROXY_MODEL_ALIASES" in error["message"]
    assert route.status_code == 404 and route.json()["error"] == error, "the same 404 as GET /v1/models/{id}"
    assert upstream.messages == []


async def test_the_model_route_404_says_how_to_add_an_alias() -> None:
    async with running(settings(), simulated_upstream()) as gateway:
        route = await gateway.client.get("/v1/models/gpt-4.1")
        known = await gateway.client.get(f"/v1/models/{NOVA}")
    error = model_error(route, 404, "model_not_found")
    assert "'gpt-4.1'" in error["message"] and 'model_aliases: {"gpt-4.1"' in error["message"]
    assert known.status_code == 200 and known.json()["id"] == NOVA


async def test_before_the_first_read_a_claude_id_is_left_to_the_upstream() -> None:
    upstream = simulated_upstream()
    upstream.failing = True  # no model list: the gateway cannot tell unknown from new
    async with running(settings(), upstream) as gateway:
        response = await gateway.client.post("/v1/chat/completions", json=chat_body(NOVA))
        openai = await gateway.client.post("/v1/chat/completions", json=chat_body("gpt-4.1"))
    assert response.status_code == 200, response.text
    model_error(openai, 404, "model_not_found")
