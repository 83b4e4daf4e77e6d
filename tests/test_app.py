"""The app with the upstream mocked by respx: routing, auth, every error path, header hygiene."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from proxy.app import create_app
from proxy.config import ConfigError, Settings, load_settings
from proxy.keys.records import hash_secret
from tests.anthropic_schema import assert_valid_messages_request

UPSTREAM = "https://upstream.test"
CLIENT_KEY = "sk-client-123456789"
UPSTREAM_KEY = "sk-ant-upstream-secret"

MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hello there."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 3,
    },
}
CHAT = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]}


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": UPSTREAM_KEY,
        "anthropic_base_url": UPSTREAM,
        "api_keys": CLIENT_KEY,
        "model_aliases": {"gpt-4o": "claude-haiku-4-5"},
        "upstream": {"max_backoff": 0.001, "max_attempts": 3},
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client(mock: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings(), mock) as c:
        yield c


class app_client:  # lower-case: it reads as a function at the call site
    """The app with its upstream served by a respx router, injected as the client's transport."""

    def __init__(self, config: Settings, router: respx.MockRouter) -> None:
        self.app = create_app(config, transport=httpx.MockTransport(router.async_handler))

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gateway",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._lifespan.__aexit__(None, None, None)


def assert_openai_error(response: httpx.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


pytestmark = pytest.mark.anyio


async def test_healthz_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"authorization": ""})
    assert response.status_code == 200


async def test_readyz_is_ready_after_startup(client: httpx.AsyncClient) -> None:
    assert (await client.get("/readyz")).status_code == 200


async def test_chat_completion_round_trip(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE, headers={"request-id": "req_abc"})
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello there."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 15
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    assert response.headers["request-id"] == "req_abc"
    assert "gateway;dur=" in response.headers["server-timing"]
    sent = orjson.loads(route.calls.last.request.content)
    assert_valid_messages_request(sent)


async def test_upstream_gets_gateway_key_never_client_authorization(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    await client.post("/v1/chat/completions", json=CHAT)
    headers = route.calls.last.request.headers
    assert headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in headers
    assert headers["anthropic-version"]


async def test_alias_resolves_to_upstream_model(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    assert orjson.loads(route.calls.last.request.content)["model"] == "claude-haiku-4-5"


@pytest.mark.parametrize(
    "headers",
    [{"authorization": ""}, {"authorization": "Bearer wrong-key-000"}, {"authorization": "Basic abc"}],
    ids=["missing", "wrong", "wrong-scheme"],
)
async def test_bad_client_key_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    error = assert_openai_error(response, 401)
    assert "wrong-key-000" not in error["message"]


async def test_x_api_key_header_is_accepted(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    mock.post("/v1/messages").respond(200, json=MESSAGE)
    response = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "", "x-api-key": CLIENT_KEY}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"model": "claude-haiku-4-5"}', "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (
            b'{"model": "claude-haiku-4-5", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
        ),
        (
            b'{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": [{"type": "image_url",'
            b' "image_url": {"url": "data:image/png;base64,@@@not-base64@@@"}}]}]}',
            "messages[0].content[0].image_url.url",
        ),
        (
            b'{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}, {"role": "assistant",'
            b' "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},'
            b' {"role": "tool", "tool_call_id": "c1", "content": "r"}]}',
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            b'{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}], "logprobs": true}',
            "logprobs",
        ),
    ],
    ids=[
        "malformed-json",
        "empty-body",
        "not-an-object",
        "missing-messages",
        "missing-model",
        "model-wrong-type",
        "unknown-role",
        "bad-image-data",
        "bad-tool-arguments",
        "refused-field",
    ],
)
async def test_bad_input_is_400_naming_the_field(
    client: httpx.AsyncClient, mock: respx.MockRouter, content: bytes, param: str | None
) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    response = await client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert_openai_error(response, 400, param=param)
    assert not route.called


async def test_prefill_on_model_that_refuses_it_is_400_before_upstream(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/messages").respond(200, json=MESSAGE)
    body = {
        "model": "claude-opus-4-6",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}],
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert_openai_error(response, 400, param="messages[1]")
    assert not route.called


async def test_oversized_body_is_413(mock: respx.MockRouter) -> None:
    async with app_client(settings(max_body_bytes=2048), mock) as c:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        response = await c.post("/v1/chat/completions", json=big)
    assert_openai_error(response, 413)


async def test_unknown_route_is_openai_shaped_404(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing-here"), 404)


async def test_wrong_method_is_openai_shaped_405(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


def upstream_error(status: int, kind: str, message: str = "upstream said no", **headers: str) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_err"}
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return httpx.Response(status, json=body, headers={"request-id": "req_err", **extra})


@pytest.mark.parametrize(
    ("upstream_status", "kind", "client_status", "client_type", "attempts"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error", 1),
        (401, "authentication_error", 502, "upstream_authentication_error", 1),
        (403, "permission_error", 403, "permission_error", 1),
        (404, "not_found_error", 404, "not_found_error", 1),
        (413, "request_too_large", 413, "invalid_request_error", 1),
        (429, "rate_limit_error", 429, "rate_limit_error", 3),
        (500, "api_error", 502, "server_error", 3),
        (529, "overloaded_error", 503, "overloaded_error", 3),
    ],
)
async def test_upstream_errors_keep_their_meaning(
    client: httpx.AsyncClient,
    mock: respx.MockRouter,
    upstream_status: int,
    kind: str,
    client_status: int,
    client_type: str,
    attempts: int,
) -> None:
    route = mock.post("/v1/messages").mock(return_value=upstream_error(upstream_status, kind, retry_after="0"))
    response = await client.post("/v1/chat/completions", json=CHAT)
    error = assert_openai_error(response, client_status)
    assert error["type"] == client_type
    assert route.call_count == attempts
    assert UPSTREAM_KEY not in response.text


async def test_rate_limit_longer_than_we_wait_is_answered_at_once_with_retry_after(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/messages").mock(return_value=upstream_error(429, "rate_limit_error", retry_after="70"))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == "70"
    assert route.call_count == 1


async def test_two_keys_one_rate_limited_the_client_never_notices(mock: respx.MockRouter) -> None:
    route = mock.post("/v1/messages")
    route.side_effect = lambda request: (
        upstream_error(429, "rate_limit_error", retry_after="30")
        if request.headers["x-api-key"] == "sk-ant-key-one-0001"
        else httpx.Response(200, json=MESSAGE)
    )
    async with app_client(settings(anthropic_api_key="sk-ant-key-one-0001,sk-ant-key-two-0002"), mock) as client:
        for _ in range(4):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    keys = [call.request.headers["x-api-key"] for call in route.calls]
    assert keys.count("sk-ant-key-one-0001") == 1  # tried once, then left to rest


async def test_retry_then_success(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    route = mock.post("/v1/messages")
    route.side_effect = [
        upstream_error(429, "rate_limit_error", retry_after="0"),
        upstream_error(529, "overloaded_error"),
        httpx.Response(200, json=MESSAGE),
    ]
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert route.call_count == 3


async def test_html_error_page_from_a_load_balancer_maps_cleanly(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    page = b"<html><body>" + b"<p>Bad gateway</p>" * 10000 + b"</body></html>"
    mock.post("/v1/messages").respond(502, content=page, headers={"content-type": "text/html"})
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code in (502, 503)
    assert len(response.content) < 4096


async def test_upstream_connection_refused_is_clean_error(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    mock.post("/v1/messages").mock(side_effect=httpx.ConnectError("connection refused"))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(response, 503)


async def test_models_lists_upstream_models_and_aliases(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    mock.get("/v1/models").respond(
        200,
        json={
            "data": [
                {
                    "type": "model",
                    "id": "claude-haiku-4-5",
                    "display_name": "S",
                    "created_at": "2025-09-29T00:00:00Z",
                }
            ],
            "has_more": False,
        },
    )
    response = await client.get("/v1/models")
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    assert ids == ["claude-haiku-4-5", "gpt-4o"]
    assert response.json()["data"][0]["created"] > 1_700_000_000
    one = await client.get("/v1/models/gpt-4o")
    assert one.json()["id"] == "gpt-4o"
    assert_openai_error(await client.get("/v1/models/nope"), 404)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"models"',
        b"{not json",
        b"{}",
        b'{"data": "claude-haiku-4-5"}',
        b'{"data": {"id": "claude-haiku-4-5"}}',
        b'{"data": [1, 2]}',
        b'{"data": [{"id": 5}]}',
        b'{"data": [{"id": ["claude"]}]}',
        b'{"data": [{"id": 123456789012345678901234567890}]}',
        b'{"data": [{"display_name": "no id"}]}',
    ],
    ids=[
        "list",
        "string",
        "invalid-json",
        "no-data",
        "data-string",
        "data-object",
        "entries-numbers",
        "id-number",
        "id-list",
        "id-huge-number",
        "entry-without-id",
    ],
)
async def test_a_malformed_upstream_model_list_is_a_502_on_both_model_routes(
    client: httpx.AsyncClient, mock: respx.MockRouter, body: bytes
) -> None:
    mock.get("/v1/models").respond(200, content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(await client.get("/v1/models"), 502)
    assert "model list" in error["message"]
    assert_openai_error(await client.get("/v1/models/claude-haiku-4-5"), 502)


async def test_count_tokens_counts_against_the_keys_requests_per_minute(mock: respx.MockRouter) -> None:
    secret = "sk-counted-0123456789abcdef"
    config = settings(client_keys=[{"name": "counted", "sha256": hash_secret(secret), "rpm": 2}])
    mock.post("/v1/messages/count_tokens").respond(200, json={"input_tokens": 5})
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]}
    async with app_client(config, mock) as c:
        headers = {"authorization": f"Bearer {secret}"}
        answers = [await c.post("/v1/messages/count_tokens", json=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["type"] == "rate_limit_error"  # Anthropic's shape on the native route
    assert "retry-after" in answers[2].headers


async def test_a_negative_usage_count_in_a_message_is_a_502(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    mock.post("/v1/messages").respond(200, json={**MESSAGE, "usage": {"input_tokens": 3, "output_tokens": -4}})
    error = assert_openai_error(await client.post("/v1/chat/completions", json=CHAT), 502)
    assert "usage.output_tokens" in error["message"]


def test_non_loopback_bind_without_keys_refuses_to_start() -> None:
    config = load_settings(host="0.0.0.0", api_keys=[], allow_anonymous=False)
    with pytest.raises(ConfigError, match="PROXY_API_KEYS"):
        config.check_can_serve()
    load_settings(host="0.0.0.0", allow_anonymous=True, simulate=True).check_can_serve()
    load_settings(host="127.0.0.1").check_can_serve()


def test_the_httpx2_transport_without_its_package_is_a_config_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    config = tmp_path / "config.yaml"
    config.write_text("upstream:\n  transport: httpx2\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "httpx2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"upstream\.transport: .*pip install 'claude-proxy\[httpx2\]'"):
        load_settings(config)
    monkeypatch.undo()
    assert load_settings(config).upstream.transport == "httpx2"


def test_upstream_keys_take_weights_and_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_B_KEY", "sk-ant-team-b")
    config = Settings(anthropic_api_key=[{"key": "sk-ant-team-a", "weight": 3}, {"env": "TEAM_B_KEY"}, "sk-plain"])
    assert [(k.secret(), k.weight) for k in config.anthropic_api_key] == [
        ("sk-ant-team-a", 3),
        ("sk-ant-team-b", 1),
        ("sk-plain", 1),
    ]
    assert "sk-ant-team-a" not in repr(config)


def test_upstream_key_naming_a_missing_variable_fails_fast() -> None:
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE"):
        Settings(anthropic_api_key=[{"env": "NOT_SET_ANYWHERE"}])


async def test_absurdly_nested_tool_schema_is_400_not_500(client: httpx.AsyncClient) -> None:
    # orjson reads 1024 levels of nesting but writes only 254: the gateway must say so, not fail.
    schema = '{"type":"object"}'
    for _ in range(400):
        schema = '{"type":"object","properties":{"x":' + schema + "}}"
    tool = '{"type":"function","function":{"name":"deep","parameters":' + schema + "}}"
    body = '{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}],"tools":[' + tool + "]}"
    response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)
