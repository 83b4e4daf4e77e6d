"""The /admin/ API: guarded by the admin key, JSON in and out, OpenAI-shaped errors, no secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request

from proxy.errors import AuthenticationFailed
from proxy.keys import KeyService, admin
from proxy.simulator.transport import InProcessTransport
from tests.faults import EchoUpstream, serve_gateway
from tests.keys_support import SECRET_RE, sqlite_bytes

pytestmark = pytest.mark.anyio

ADMIN = "admin-secret-for-tests"
STATIC = "static-client-secret"


@asynccontextmanager
async def admin_client(
    store_url: str, admin_key: str | None = ADMIN, lazy: bool = False
) -> AsyncIterator[tuple[httpx.AsyncClient, KeyService]]:
    service = await KeyService.open(
        store_url,
        static_keys=[SecretStr(STATIC)],
        admin_key=SecretStr(admin_key) if admin_key else None,
        refresh_interval=0.05,
        flush_interval=0.05,
    )
    app = Starlette(routes=admin.routes((lambda request: request.app.state.keys) if lazy else service))
    app.state.keys = service
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            client.headers["authorization"] = f"Bearer {admin_key}"
            yield client, service
    finally:
        await service.aclose()


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


async def test_admin_api_is_disabled_without_an_admin_key(tmp_path: Path) -> None:
    async with admin_client(str(tmp_path / "k.db"), admin_key=None) as (client, _):
        for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/usage")):
            error = assert_openai_error(await client.request(method, path), 403, "admin_disabled")
            assert "PROXY_ADMIN_KEY" in error["message"]


async def test_admin_key_is_required_and_client_keys_get_the_same_401_as_guesses(store_url: str) -> None:
    async with admin_client(store_url) as (client, _):
        created = (await client.post("/admin/keys", json={"name": "team-a"})).json()
        answers = []
        for headers in (
            {"authorization": "Bearer not-the-admin-key"},
            {"authorization": f"Bearer {STATIC}"},
            {"authorization": f"Bearer {created['secret']}"},
            {"authorization": "", "x-api-key": STATIC},
        ):
            response = await client.get("/admin/keys", headers=headers)
            assert_openai_error(response, 401, "invalid_api_key")
            answers.append((response.content, {k: v for k, v in response.headers.items() if k != "date"}))
        assert all(answer == answers[0] for answer in answers), answers  # nothing tells a real client key apart
        assert_openai_error(await client.get("/admin/keys", headers={"authorization": ""}), 401, "missing_api_key")
        ok = await client.get("/admin/keys", headers={"authorization": "", "x-api-key": ADMIN})
        assert ok.status_code == 200


async def test_wrong_admin_keys_are_throttled_like_client_key_guesses(tmp_path: Path) -> None:
    async with admin_client(str(tmp_path / "k.db")) as (client, _):
        assert (await client.get("/admin/keys")).status_code == 200  # the admin has worked from here
        wrong = {"authorization": f"Bearer {STATIC}"}
        statuses = [(await client.get("/admin/keys", headers=wrong)).status_code for _ in range(11)]
        throttled = await client.get("/admin/keys", headers={"authorization": "Bearer a-guess"})
        still_admin = await client.get("/admin/keys")
    assert statuses == [401] * 10 + [429]
    assert_openai_error(throttled, 429, "too_many_invalid_keys")
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert still_admin.status_code == 200


async def test_the_gateway_counts_admin_and_client_key_guesses_in_one_throttle() -> None:
    echo = EchoUpstream()
    async with (
        serve_gateway(transport=InProcessTransport(echo), admin_key=ADMIN) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=5) as client,
    ):
        guess = {"authorization": "Bearer sk-a-guess-5f1e"}
        admin_guesses = [(await client.get("/admin/keys", headers=guess)).status_code for _ in range(5)]
        client_guesses = [(await client.get("/v1/models", headers=guess)).status_code for _ in range(5)]
        after = [
            (await client.get("/admin/usage", headers=guess)).status_code,
            (await client.get("/v1/models", headers=guess)).status_code,
            (await client.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})).status_code,
        ]
    assert admin_guesses + client_guesses == [401] * 10
    assert after == [429, 429, 429]  # even the admin key, never used from this address before


async def test_create_list_get_disable_revoke(store_url: str) -> None:
    async with admin_client(store_url) as (client, service):
        response = await client.post(
            "/admin/keys",
            json={
                "name": "team-a",
                "models": ["claude-haiku-*"],
                "rpm": 5,
                "tpm": 10000,
                "daily_tokens": 100000,
                "monthly_tokens": 1000000,
                "expires_at": "2099-01-01T00:00:00Z",
                "metadata": {"team": "a", "cost_center": 42},
            },
        )
        assert response.status_code == 201
        assert response.headers["cache-control"] == "no-store"
        created = response.json()
        secret = created["secret"]
        assert re.fullmatch(SECRET_RE, secret)
        assert created["name"] == "team-a" and created["status"] == "active"
        assert created["models"] == ["claude-haiku-*"] and created["rpm"] == 5
        assert created["expires_at"] == "2099-01-01T00:00:00Z"
        assert created["metadata"] == {"team": "a", "cost_center": 42}
        assert "digest" not in created
        principal = await service.authenticate({"authorization": f"Bearer {secret}"})
        assert principal.name == "team-a"

        listing = (await client.get("/admin/keys")).json()
        assert listing["object"] == "list"
        by_name = {k["name"]: k for k in listing["data"]}
        assert by_name["team-a"]["source"] == "store"
        assert by_name["key-1"]["source"] == "environment"
        one = (await client.get("/admin/keys/team-a")).json()
        assert one["usage"] == {"tokens_today": 0, "tokens_this_month": 0}

        disabled = await client.patch("/admin/keys/team-a", json={"enabled": False})
        assert disabled.json()["status"] == "disabled"
        with pytest.raises(AuthenticationFailed):
            await service.authenticate({"authorization": f"Bearer {secret}"})
        assert (await client.patch("/admin/keys/team-a", json={"enabled": True})).json()["status"] == "active"

        revoked = await client.delete("/admin/keys/team-a")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert revoked.json()["revoked_at"]
        with pytest.raises(AuthenticationFailed):
            await service.authenticate({"authorization": f"Bearer {secret}"})
        assert (await client.delete("/admin/keys/team-a")).status_code == 200  # idempotent
        assert_openai_error(await client.patch("/admin/keys/team-a", json={"enabled": True}), 409, "conflict")

        for text in (listing, one, disabled.json(), revoked.json()):
            assert secret not in str(text)


async def test_errors(store_url: str) -> None:
    async with admin_client(store_url) as (client, _):
        await client.post("/admin/keys", json={"name": "taken"})
        assert_openai_error(await client.post("/admin/keys", json={"name": "taken"}), 409, "conflict")
        error = assert_openai_error(await client.post("/admin/keys", json={"name": "bad name!"}), 400)
        assert error["param"] == "name"
        error = assert_openai_error(await client.post("/admin/keys", json={"name": "x", "rpm": 0}), 400)
        assert error["param"] == "rpm"
        error = assert_openai_error(await client.post("/admin/keys", json={"name": "x", "colour": "red"}), 400)
        assert error["param"] == "colour"
        error = assert_openai_error(
            await client.post("/admin/keys", json={"name": "x", "expires_at": "2001-01-01"}), 400
        )
        assert "past" in error["message"]
        assert_openai_error(await client.post("/admin/keys", content=b"{nope"), 400)
        assert_openai_error(await client.post("/admin/keys", json=["name"]), 400)
        assert_openai_error(await client.post("/admin/keys", json={"name": "key-7"}), 400)
        assert_openai_error(await client.get("/admin/keys/ghost"), 404, "key_not_found")
        assert_openai_error(await client.delete("/admin/keys/ghost"), 404, "key_not_found")
        assert_openai_error(await client.patch("/admin/keys/taken", json={"enabled": "no"}), 400)
        assert_openai_error(await client.get("/admin/usage?since=yesterday"), 400)


async def test_usage(store_url: str) -> None:
    async with admin_client(store_url) as (client, service):
        secrets = {}
        for name in ("a", "b"):
            secrets[name] = (await client.post("/admin/keys", json={"name": name})).json()["secret"]
        for name, model, tokens in (
            ("a", "claude-haiku-4-5", 100),
            ("a", "claude-opus-4-5", 10),
            ("b", "claude-haiku-4-5", 7),
        ):
            principal = await service.authenticate({"x-api-key": secrets[name]})
            admission = await service.admit(principal, model, tokens)
            await service.settle(admission, model=model, input_tokens=tokens, output_tokens=tokens, cached_tokens=0)
        body = (await client.get("/admin/usage")).json()
        assert body["object"] == "list"
        assert {(r["key"], r["model"]) for r in body["data"]} == {
            ("a", "claude-haiku-4-5"),
            ("a", "claude-opus-4-5"),
            ("b", "claude-haiku-4-5"),
        }
        assert body["totals"]["requests"] == 3
        assert body["totals"]["total_tokens"] == 234
        assert body["totals"]["cost_usd"] == pytest.approx((100 * 1 + 100 * 5 + 10 * 5 + 10 * 25 + 7 * 1 + 7 * 5) / 1e6)
        only_b = (await client.get("/admin/usage", params={"key": "b"})).json()
        assert [r["key"] for r in only_b["data"]] == ["b"] and only_b["key"] == "b"
        assert (await client.get("/admin/keys/a")).json()["usage"]["tokens_today"] == 220
        future = (await client.get("/admin/usage", params={"since": "2999-01-01", "until": "2999-01-31"})).json()
        assert future["data"] == [] and future["totals"]["requests"] == 0


async def test_secrets_stay_out_of_logs_and_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "keys.db"
    async with admin_client(str(path), lazy=True) as (client, _):
        secret = (await client.post("/admin/keys", json={"name": "quiet"})).json()["secret"]
        everything = (await client.get("/admin/keys")).text + (await client.get("/admin/keys/quiet")).text
        await client.get("/admin/keys", headers={"authorization": f"Bearer {secret}"})
    assert secret not in everything
    assert secret not in caplog.text
    assert ADMIN not in caplog.text
    assert secret.encode() not in sqlite_bytes(path)
    assert ADMIN.encode() not in sqlite_bytes(path)


async def test_the_service_may_come_from_the_request(tmp_path: Path) -> None:
    async with admin_client(str(tmp_path / "k.db"), lazy=True) as (client, _):
        assert (await client.post("/admin/keys", json={"name": "lazy"})).status_code == 201
        unknown = await client.get("/admin/nothing-here")
        assert unknown.status_code == 404


def test_routes_are_mounted_under_admin(tmp_path: Path) -> None:
    def provider(request: Request) -> KeyService:
        raise AssertionError

    mounted = admin.routes(provider)
    assert [getattr(route, "path", None) for route in mounted] == ["/admin"]
