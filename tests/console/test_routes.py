"""The console's routes in-process: the one door (a session cookie from the admin key), CSRF and
cross-site refusals on every change, the CSP on every page, and key changes through the same
`KeyService` the admin API uses."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Mount, Route

from proxy.console import routes as console_routes
from proxy.console.web import CSP
from tests.console.support import ADMIN, BASE, CLIENT, console_client, csrf_of, sign_in

pytestmark = pytest.mark.anyio

SAME_SITE = {"origin": BASE, "sec-fetch-site": "same-origin"}
# Reachable without a session: the sign-in page, and its stylesheet, theme script and icon.
PUBLIC = {("GET", "/console/signin"), ("POST", "/console/signin")} | {
    ("GET", f"/console/static/{name}") for name in ("console.css", "theme.js", "favicon.svg")
}


def every_route() -> Iterator[tuple[str, str]]:
    """Every (method, path) the console serves, read off its own route table, so a new route is
    covered by these tests the day it is added."""
    (mount,) = console_routes(lambda request: None)  # type: ignore[arg-type,return-value]
    assert isinstance(mount, Mount)
    for route in mount.routes:
        assert isinstance(route, Route) and route.methods
        path = "/console" + route.path.replace("{name}", "team-a")
        path = path.replace("/static/team-a", "/static/charts.js")
        for method in sorted(route.methods - {"HEAD"}):
            yield method, path


ROUTES = list(every_route())
GUARDED = [(method, path) for method, path in ROUTES if (method, path) not in PUBLIC]
CHANGES = [(method, path) for method, path in ROUTES if method == "POST"]


def test_the_route_list_is_what_the_console_serves() -> None:
    assert ("POST", "/console/keys/team-a/revoke") in GUARDED
    assert ("GET", "/console/api/health") in GUARDED
    assert ("GET", "/console/static/charts.js") in GUARDED
    assert len(GUARDED) >= 13


async def create_team_a(client: httpx.AsyncClient) -> str:
    await sign_in(client)
    token = await csrf_of(client)
    created = await client.post("/console/keys", data={"csrf": token, "name": "team-a"}, headers=SAME_SITE)
    assert created.status_code == 201, created.text
    return token


def assert_refused(response: httpx.Response, method: str) -> None:
    if method == "GET" and "/api/" not in str(response.url):
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/console/signin"
    else:
        assert response.status_code == 401, response.text
    assert "team-a" not in response.text
    assert response.headers["content-security-policy"] == CSP


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"authorization": f"Bearer {CLIENT}"},
        {"x-api-key": CLIENT},
        {"authorization": f"Bearer {ADMIN}"},  # the admin key opens /admin/, not the console: it needs a session
        {"cookie": "claude_proxy_console=v1.1800000000.forged.0000"},
    ],
    ids=["no-key", "client-key-bearer", "client-key-x-api-key", "admin-key-header", "forged-cookie"],
)
async def test_every_console_route_refuses_a_request_without_a_session(
    method: str, path: str, credentials: dict[str, str]
) -> None:
    async with console_client() as client:
        await create_team_a(client)
        client.cookies.clear()
        response = await client.request(method, path, headers={**SAME_SITE, **credentials}, data={"csrf": "x"})
        assert_refused(response, method)
        if "/keys/" in path:  # nothing changed
            client.cookies.clear()
            await sign_in(client)
            assert 'data-key="team-a"' in (await client.get("/console/keys")).text
            assert "state-active" in (await client.get("/console/keys?q=team-a")).text


@pytest.mark.parametrize(("method", "path"), CHANGES)
@pytest.mark.parametrize(
    "cross_site",
    [
        {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
        {"sec-fetch-site": "same-site", "origin": "https://evil.gateway.test"},
        {"origin": "https://evil.example"},  # an older browser: Origin only
        {"origin": "null"},
    ],
    ids=["cross-site", "same-site-subdomain", "origin-only", "origin-null"],
)
async def test_every_console_change_refuses_a_cross_site_post_even_with_a_session_and_its_token(
    method: str, path: str, cross_site: dict[str, str]
) -> None:
    async with console_client() as client:
        token = await create_team_a(client)
        form = {"csrf": token, "name": "evil", "admin_key": ADMIN}
        response = await client.request(method, path, headers=cross_site, data=form)
        assert response.status_code == 403, response.text
        assert "Cross-site requests are refused" in response.text
        assert "set-cookie" not in response.headers  # no login CSRF, no sign-out either
        page = (await client.get("/console/keys")).text
        assert 'data-key="evil"' not in page and "state-active" in page


@pytest.mark.parametrize(("method", "path"), [change for change in CHANGES if change[1] != "/console/signin"])
@pytest.mark.parametrize("token", [None, "", "0" * 64, "other-session"])
async def test_a_change_without_this_sessions_csrf_token_is_refused(method: str, path: str, token: str | None) -> None:
    async with console_client() as client:
        await create_team_a(client)
        if token == "other-session":
            async with console_client() as other:
                await sign_in(other)
                token = await csrf_of(other)
        form = {"name": "evil"} if token is None else {"csrf": token, "name": "evil"}
        response = await client.request(method, path, headers=SAME_SITE, data=form)
        assert response.status_code == 403, response.text
        page = (await client.get("/console/keys")).text
        assert 'data-key="evil"' not in page and "state-active" in page


async def test_signing_in_with_a_client_key_is_refused_like_a_guess_and_throttled() -> None:
    async with console_client(bad_key_max_failures=3) as client:
        for key in (CLIENT, "a-guess", CLIENT):
            refused = await sign_in(client, key)
            assert refused.status_code == 401 and "Incorrect admin key" in refused.text
            assert "set-cookie" not in refused.headers
        throttled = await sign_in(client, ADMIN)  # even the right key waits: this address kept guessing
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert "set-cookie" not in throttled.headers


async def test_the_session_cookie_is_http_only_same_site_strict_for_console_paths_and_secure_over_tls() -> None:
    async with console_client() as client:
        cookie = (await sign_in(client)).headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "max-age", "path"} <= attributes and "secure" not in attributes
        assert "Path=/console" in cookie and "SameSite=strict" in cookie
        client.base_url = httpx.URL("https://gateway.test")
        tls = await client.post(
            "/console/signin",
            data={"admin_key": ADMIN},
            headers={"origin": "https://gateway.test", "sec-fetch-site": "same-origin"},
        )
        assert "Secure" in tls.headers["set-cookie"]


async def test_sign_out_clears_the_cookie() -> None:
    async with console_client() as client:
        await sign_in(client)
        token = await csrf_of(client)
        out = await client.post("/console/signout", data={"csrf": token}, headers=SAME_SITE)
        assert out.status_code == 303 and 'claude_proxy_console=""' in out.headers["set-cookie"]
        assert (await client.get("/console/keys")).status_code == 303


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


@pytest.mark.parametrize(
    "path", ["/console/signin", "/console/keys", "/console/usage", "/console/health", "/console/try"]
)
async def test_every_page_has_the_strict_csp_and_no_inline_script_handler_or_style(path: str) -> None:
    async with console_client() as client:
        await sign_in(client)
        page = await client.get(path)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
        assert not INLINE_SCRIPT.search(page.text)
        assert not INLINE_HANDLER.search(page.text)
        assert " style=" not in page.text
        assert "http://" not in page.text.replace(BASE, "") and "https://" not in page.text  # nothing from a CDN


async def test_the_console_is_closed_without_an_admin_key() -> None:
    async with console_client(admin_key=None) as client:
        assert (await client.get("/console/signin")).status_code == 403
        assert (await sign_in(client, "anything")).status_code == 403
        assert (await client.get("/console/keys")).status_code == 303


async def test_keys_made_in_the_console_are_the_admin_apis_keys() -> None:
    async with console_client() as client:
        token = await create_team_a(client)
        admin = {"authorization": f"Bearer {ADMIN}"}
        assert (await client.get("/admin/keys/team-a", headers=admin)).json()["status"] == "active"
        duplicate = await client.post("/console/keys", data={"csrf": token, "name": "team-a"}, headers=SAME_SITE)
        assert duplicate.status_code == 409 and "already exists" in duplicate.text
        invalid = await client.post(
            "/console/keys", data={"csrf": token, "name": "bad name", "rpm": "0"}, headers=SAME_SITE
        )
        assert invalid.status_code == 400 and "name" in invalid.text
        await client.post("/console/keys/team-a/disable", data={"csrf": token}, headers=SAME_SITE)
        assert (await client.get("/admin/keys/team-a", headers=admin)).json()["status"] == "disabled"
        await client.post("/console/keys/team-a/revoke", data={"csrf": token}, headers=SAME_SITE)
        assert (await client.get("/admin/keys/team-a", headers=admin)).json()["status"] == "revoked"
        again = await client.post("/console/keys/team-a/enable", data={"csrf": token}, headers=SAME_SITE)
        assert again.status_code == 409  # the service's rule, not the console's


async def test_the_usage_csv_and_health_snapshot_read_what_the_gateway_measured() -> None:
    async with console_client() as client:
        await sign_in(client)
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"authorization": f"Bearer {CLIENT}"},
        )
        assert answer.status_code == 200
        csv = await client.get("/console/usage.csv")
        assert csv.headers["content-disposition"].startswith('attachment; filename="claude-proxy-usage-all-')
        header, *lines = csv.text.splitlines()
        assert header.startswith("day,key,model,requests,input_tokens")
        assert any(",claude-haiku-4-5,1," in line for line in lines)
        snapshot = (await client.get("/console/api/health")).json()
        assert snapshot["requests_by_status"]["200"] >= 1
        assert snapshot["duration_buckets"][-1][0] == "+Inf"
        assert snapshot["upstream_keys"][0]["state"] == "healthy"
        assert set(snapshot) >= {"in_flight", "streams_open", "upstream_in_flight", "ttft_buckets", "at"}


async def test_limits_and_budgets_are_edited_through_the_service_and_a_blank_field_clears_one() -> None:
    async with console_client() as client:
        token = await create_team_a(client)
        admin = {"authorization": f"Bearer {ADMIN}"}
        form = {"csrf": token, "models": "claude-haiku-*", "rpm": "60", "daily_tokens": "5000", "tpm": ""}
        edited = await client.post("/console/keys/team-a/limits", data=form, headers=SAME_SITE)
        assert edited.status_code == 303, edited.text
        view = (await client.get("/admin/keys/team-a", headers=admin)).json()
        assert (view["models"], view["rpm"], view["daily_tokens"], view["tpm"]) == (["claude-haiku-*"], 60, 5000, None)
        cleared = {"csrf": token, "models": "", "rpm": "", "daily_tokens": "5000"}
        await client.post("/console/keys/team-a/limits", data=cleared, headers=SAME_SITE)
        view = (await client.get("/admin/keys/team-a", headers=admin)).json()
        assert (view["models"], view["rpm"], view["daily_tokens"]) == ([], None, 5000)
        invalid = await client.post("/console/keys/team-a/limits", data={"csrf": token, "rpm": "0"}, headers=SAME_SITE)
        assert invalid.status_code == 400 and "rpm" in invalid.text
        assert (await client.get("/admin/keys/team-a", headers=admin)).json()["rpm"] is None
        await client.post("/console/keys/team-a/revoke", data={"csrf": token}, headers=SAME_SITE)
        late = await client.post("/console/keys/team-a/limits", data={"csrf": token, "rpm": "5"}, headers=SAME_SITE)
        assert late.status_code == 409  # a revoked key stays as it was: the store's rule
