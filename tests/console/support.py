"""The console's in-process test app: the real gateway (simulator upstream), an admin key, a client
key, and an httpx client that keeps cookies, with helpers to sign in and read the CSRF token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from proxy.app import create_app
from proxy.config import Settings

ADMIN = "admin-key-for-the-console-tests"
CLIENT = "sk-client-key-for-the-console-tests"
BASE = "http://gateway.test"
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@asynccontextmanager
async def console_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    values: dict[str, Any] = {"api_keys": CLIENT, "admin_key": ADMIN, **overrides}
    app = create_app(Settings(**values))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


async def sign_in(client: httpx.AsyncClient, key: str = ADMIN) -> httpx.Response:
    return await client.post(
        "/console/signin", data={"admin_key": key}, headers={"origin": BASE, "sec-fetch-site": "same-origin"}
    )


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/console/keys")
    found = CSRF_RE.search(page.text)
    assert found, page.text
    return found.group(1)
