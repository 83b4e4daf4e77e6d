"""Say what was dropped (issue 16), over HTTP against the in-process simulator: the fields a client
sent that did not reach the upstream as sent are named in one response header and on the access
line, on both dialects, streamed or not; with `strict_fields` on they are a 400 naming the field."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from proxy.app import create_app
from proxy.config import Settings, load_settings
from tests.polling import eventually_async

pytestmark = pytest.mark.anyio

CLIENT_KEY = "sk-dropped-fields-client"
HEADER = "x-claude-proxy-dropped"
MODEL = "claude-haiku-4-5"
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"

# A body for each dialect that drops fields, and the header that names them (in body order).
CHAT_DROPPING: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "temperature": 0.2,  # API version 2026-10-21: no sampling fields on any model
    "seed": 7,
    "x_custom": True,  # unknown to the gateway
}
CHAT_DROPPED = "temperature, seed, x_custom"
RESPONSES_DROPPING: dict[str, Any] = {
    "model": MODEL,
    "input": "Hi",
    "text": {"verbosity": "low"},
    "prompt_cache_key": "thread-1",
}
RESPONSES_DROPPED = "text.verbosity, prompt_cache_key"
# And one that asks nothing the gateway cannot do as asked (OpenAI's defaults included).
CHAT_PLAIN: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "temperature": 1,
    "presence_penalty": 0,
}
RESPONSES_PLAIN: dict[str, Any] = {"model": MODEL, "input": "Hi", "text": {"verbosity": "medium"}}

CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat": (CHAT_PATH, CHAT_DROPPING, CHAT_DROPPED),
    "responses": (RESPONSES_PATH, RESPONSES_DROPPING, RESPONSES_DROPPED),
}
PLAIN: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (CHAT_PATH, CHAT_PLAIN),
    "responses": (RESPONSES_PATH, RESPONSES_PLAIN),
}


@asynccontextmanager
async def gateway(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app answering from the in-process simulator."""
    app = create_app(Settings(simulate=True, api_keys=CLIENT_KEY, **overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        ) as client,
    ):
        yield client


async def send(client: httpx.AsyncClient, path: str, body: dict[str, Any], *, stream: bool) -> httpx.Response:
    response = await client.post(path, json={**body, "stream": True} if stream else body)
    if response.status_code == 200 and stream:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert b"data:" in response.content
    return response


def access_fields(caplog: pytest.LogCaptureFixture, path: str) -> dict[str, Any] | None:
    lines = [record for record in caplog.records if record.name == "proxy.access"]
    for record in reversed(lines):
        fields: dict[str, Any] = getattr(record, "fields", {})
        if fields.get("path") == path:
            return fields
    return None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", list(CASES))
async def test_the_dropped_fields_are_named_in_one_header_in_body_order(dialect: str, stream: bool) -> None:
    path, body, dropped = CASES[dialect]
    async with gateway() as client:
        response = await send(client, path, body, stream=stream)
    assert response.status_code == 200, response.text
    assert response.headers.get_list(HEADER) == [dropped]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", list(PLAIN))
async def test_no_header_when_nothing_was_dropped(dialect: str, stream: bool) -> None:
    path, body = PLAIN[dialect]
    async with gateway() as client:
        response = await send(client, path, body, stream=stream)
    assert response.status_code == 200, response.text
    assert HEADER not in response.headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", list(CASES))
async def test_the_access_line_names_the_dropped_fields(
    dialect: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path, body, dropped = CASES[dialect]
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        async with gateway() as client:
            response = await send(client, path, body, stream=stream)
            assert response.status_code == 200, response.text
            fields = await eventually_async(lambda: access_fields(caplog, path), what="the access line")
    assert fields is not None and fields["dropped"] == dropped.split(", ")


@pytest.mark.parametrize("dialect", list(PLAIN))
async def test_the_access_line_has_no_dropped_field_when_nothing_was_dropped(
    dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, body = PLAIN[dialect]
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        async with gateway() as client:
            assert (await send(client, path, body, stream=False)).status_code == 200
            fields = await eventually_async(lambda: access_fields(caplog, path), what="the access line")
    assert fields is not None and "dropped" not in fields


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", list(CASES))
async def test_strict_fields_refuses_a_dropped_field_with_a_400_naming_it(dialect: str, stream: bool) -> None:
    path, body, dropped = CASES[dialect]
    async with gateway(strict_fields=True) as client:
        response = await send(client, path, body, stream=stream)
    assert response.status_code == 400, response.text
    error = orjson.loads(response.content)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported_value")
    assert error["param"] in dropped.split(", ")
    assert error["message"].endswith("(strict_fields is on).")
    assert f"'{error['param']}'" in error["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", list(PLAIN))
async def test_strict_fields_serves_a_request_that_drops_nothing(dialect: str, stream: bool) -> None:
    path, body = PLAIN[dialect]
    async with gateway(strict_fields=True) as client:
        response = await send(client, path, body, stream=stream)
    assert response.status_code == 200, response.text
    assert HEADER not in response.headers


async def test_strict_fields_names_the_exact_path_of_a_dropped_content_field() -> None:
    image = {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}
    body = {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "?"}, image]}]}
    async with gateway(strict_fields=True) as client:
        response = await client.post(RESPONSES_PATH, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "input[0].content[1].detail"


def test_strict_fields_is_off_by_default_and_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().strict_fields is False
    monkeypatch.setenv("PROXY_STRICT_FIELDS", "true")
    assert load_settings().strict_fields is True
