"""The console in a real browser: Playwright driving Debian's chromium against a real gateway
(two workers, so every page has to show the whole gateway, not the worker that answered).

One gateway and one fake upstream per module, one browser; a fresh signed-in browser context per
test. The screenshots in docs/console/ come from `test_screenshots_of_every_page_light_and_dark`
(``CONSOLE_SCREENSHOTS=docs/console`` writes them there; otherwise they go to a temporary folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import servers
from tests.polling import eventually

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN = "console-browser-admin-key-0123"
CLIENT = "sk-console-browser-client-key-4567"
# Two upstream keys: the fake upstream rate-limits the one ending in REST for an hour.
UPSTREAM_KEYS = "sk-ant-console-test-key-REST,sk-ant-console-test-key-GOOD"
MODEL = "claude-haiku-4-5"
# The health page shows a dash until two snapshots give it a rate (selectors, since the CSP forbids eval).
NO_RATE_YET = "#rps:not(:text-is('\u2013'))"
# The browser logs every 4xx it is answered; the tests check those statuses themselves. What is left
# (a CSP violation, a script error) is a bug.
REFUSED = "Failed to load resource: the server responded with a status of 4"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = servers.free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.console.upstream", str(port)], cwd=ROOT, stdout=log, stderr=log
        )
        try:
            servers.wait_healthy(f"http://127.0.0.1:{port}/v1/models", process, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(upstream: str) -> Iterator[str]:
    port = servers.free_port()
    env = {
        "ANTHROPIC_API_KEY": UPSTREAM_KEYS,
        "ANTHROPIC_BASE_URL": upstream,
        "PROXY_API_KEYS": CLIENT,
        "PROXY_ADMIN_KEY": ADMIN,
        "PROXY_ALLOW_PER_PROCESS_LIMITS": "true",
        "PROXY_MODELS_REFRESH_INTERVAL": "0",
        "PROXY_UPSTREAM": '{"max_backoff": 0.01}',
    }
    args = ["serve", "--port", str(port), "--workers", "2"]
    with servers.run(args, f"http://127.0.0.1:{port}/healthz", env):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium): the console's browser tests need it")
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("CONSOLE_SCREENSHOTS")
    folder = (ROOT / where) if where else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_page(browser: Any, gateway: str, *, signed_in: bool = True, **options: Any) -> Any:
    context = browser.new_context(base_url=gateway, viewport=options.pop("viewport", {"width": 1280, "height": 860}))
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway)
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    # A CSP violation or a script error is a bug: the console has no inline script to excuse it.
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.problems = problems
    if signed_in:
        page.goto("/console/signin")
        page.fill("#admin_key", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_url("**/console/keys")
    return page


@pytest.fixture
def page(browser: Any, gateway: str) -> Iterator[Any]:
    opened = new_page(browser, gateway)
    yield opened
    opened.context.close()
    problems = [p for p in opened.problems if not p.startswith(REFUSED)]
    assert not problems, problems


def complete(gateway: str, key: str, text: str = "Hello console", model: str = MODEL) -> httpx.Response:
    return httpx.post(
        f"{gateway}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def create_key(page: Any, name: str, **limits: str) -> str:
    page.goto("/console/keys")
    page.fill("#create-key input[name=name]", name)
    for field, value in limits.items():
        page.fill(f"#create-key input[name={field}]", value)
    page.click("#create-key button[type=submit]")
    page.wait_for_selector("#new-secret")
    secret: str = page.input_value("#new-secret")
    return secret


def row_state(page: Any, name: str) -> str:
    text: str = page.text_content(f'tr[data-key="{name}"] .state') or ""
    return text


# --- sign-in -----------------------------------------------------------------------------------


def test_sign_in_needs_the_admin_key_sets_a_strict_cookie_and_sign_out_ends_it(browser: Any, gateway: str) -> None:
    page = new_page(browser, gateway, signed_in=False)
    try:
        page.goto("/console/keys")
        page.wait_for_url("**/console/signin")
        page.fill("#admin_key", CLIENT)  # a client key is not the admin key
        page.click("button[type=submit]")
        assert "Incorrect admin key" in page.text_content(".error")
        # By keyboard alone: the key field has the focus, Enter signs in.
        page.fill("#admin_key", "")
        page.keyboard.type(ADMIN)
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/keys")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        (cookie,) = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
        assert cookie["expires"] > 0  # not a browser-session cookie: it expires (and the server checks)
        page.click("form.signout button")
        page.wait_for_url("**/console/signin")
        page.goto("/console/usage")
        page.wait_for_url("**/console/signin")
        assert [p for p in page.problems if not p.startswith(REFUSED)] == []
    finally:
        page.context.close()


# --- keys and usage ----------------------------------------------------------------------------


def test_a_key_is_created_used_seen_in_usage_then_disabled_and_revoked(page: Any, gateway: str) -> None:
    secret = create_key(page, "team-e2e", daily_tokens="100000", monthly_tokens="2000000")
    assert page.text_content(".created h2") == "Key team-e2e created"
    page.click("#copy-secret")
    page.wait_for_selector("#copy-secret:text-is('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert row_state(page, "team-e2e") == "active"

    # Another worker learns of the new key within its refresh interval.
    eventually(lambda: complete(gateway, secret).status_code == 200, within=15, what="the new key is served")

    def usage_shows_it() -> bool:
        page.goto("/console/usage?key=team-e2e")
        return page.locator("#usage-table tbody tr td", has_text=MODEL).count() > 0

    eventually(usage_shows_it, within=15, every=0.3, what="the completion in the usage table")
    assert page.locator("#chart-tokens svg rect").count() >= 1  # today's bar
    assert page.locator("#legend li", has_text=MODEL).count() == 1
    assert page.locator(".budgets tr", has_text="team-e2e").count() == 2  # daily and monthly, against use
    csv = page.request.get("/console/usage.csv?key=team-e2e")
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    assert f",team-e2e,{MODEL}," in csv.text()

    page.goto("/console/keys?q=team-e2e")
    assert page.locator("#keys-table tbody tr").count() == 1  # the search
    page.click('tr[data-key="team-e2e"] summary:has-text("Edit")')
    page.fill('tr[data-key="team-e2e"] .edit-form input[name=daily_tokens]', "150000")
    page.fill('tr[data-key="team-e2e"] .edit-form input[name=rpm]', "30")
    page.click('tr[data-key="team-e2e"] .edit-form button:has-text("Save")')
    page.wait_for_selector('tr[data-key="team-e2e"] td:has-text("150,000/day")')
    assert "30 rpm" in page.text_content('tr[data-key="team-e2e"]')
    page.click('tr[data-key="team-e2e"] button:has-text("Disable")')
    page.wait_for_selector('tr[data-key="team-e2e"] .state-disabled')
    eventually(lambda: complete(gateway, secret).status_code == 401, within=15, what="the disabled key is refused")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click('tr[data-key="team-e2e"] button:has-text("Revoke")')
    page.wait_for_selector('tr[data-key="team-e2e"] .state-revoked')
    # Each worker learns of a change within its key refresh interval: until then one may still serve it.
    eventually(
        lambda: complete(gateway, secret).json().get("error", {}).get("code") == "revoked_api_key",
        within=15,
        what="the revoked key is refused as revoked",
    )


def test_a_cross_site_form_post_is_refused_in_the_browser(page: Any, gateway: str) -> None:
    # A page of another origin (about:blank here: Origin "null") posts to the console.
    page.goto("about:blank")
    page.set_content(
        f'<form method="post" action="{gateway}/console/keys"><input name="name" value="evil">'
        '<input name="csrf" value="guess"><button>go</button></form>'
    )
    page.click("button")
    page.wait_for_load_state()
    assert "Cross-site requests are refused" in page.content()
    page.goto("/console/keys?q=evil")
    assert page.locator('tr[data-key="evil"]').count() == 0


# --- health and the playground -----------------------------------------------------------------


def test_the_health_page_shows_a_resting_upstream_key_and_refreshes_without_reloading(page: Any, gateway: str) -> None:
    page.goto("/console/health")
    page.evaluate("window.notReloaded = true")
    page.wait_for_selector("#upstream-keys td.state-healthy")
    for _ in range(4):  # the first call to each worker meets the rate-limited key
        complete(gateway, CLIENT)
    page.wait_for_selector("#upstream-keys td.state-resting", timeout=15_000)
    assert page.text_content('#upstream-keys tr:has-text("…REST") td').startswith("resting until")
    assert page.text_content('#upstream-keys tr:has-text("…GOOD") td') == "healthy"
    page.wait_for_selector(NO_RATE_YET)  # two snapshots apart: a rate (the CSP forbids eval)
    page.wait_for_selector('#status-table th:text-is("200")')
    assert page.evaluate("window.notReloaded") is True


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_playground_streams_an_answer_and_shows_the_server_timing_split(page: Any, api: str) -> None:
    page.goto("/console/try")
    page.fill("#try-key", CLIENT)
    page.select_option("#try-api", api)
    page.fill("#try-model", MODEL)
    page.fill("#try-prompt", "Stream me something")
    assert page.is_checked("#try-stream")
    page.click("#try-send")
    page.wait_for_selector("#try-status:has-text('HTTP 200')", timeout=15_000)
    assert "You said: Stream me something" in page.text_content("#try-answer")
    assert '"stream": true' in page.text_content("#try-request")
    assert "events" in page.text_content("#try-response").splitlines()[0]  # server-sent events, read as a stream
    timing = page.text_content("#try-timing")
    assert "upstream" in timing and "gateway" in timing


# --- screenshots -------------------------------------------------------------------------------

PAGES = ["signin", "keys", "usage", "health", "try"]
OTHER_MODELS = ["claude-sonnet-5-5", "claude-opus-4-7"]


def test_screenshots_of_every_page_light_and_dark(browser: Any, gateway: str, screenshots: Path) -> None:
    page = new_page(browser, gateway)
    try:
        for name, limits in (("team-search", {"daily_tokens": "200000"}), ("team-data", {"rpm": "60"})):
            if page.request.get(f"/console/keys?q={name}").text().count(f'data-key="{name}"') == 0:
                secret = create_key(page, name, **limits)
                eventually(lambda secret=secret: complete(gateway, secret).status_code == 200, within=15)
                for model in OTHER_MODELS:  # a stacked chart
                    complete(gateway, secret, "A longer question for the chart " * 20, model)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            for name in PAGES:
                shoot(page, gateway, name, screenshots / f"{name}-{scheme}.png")
        phone = new_page(browser, gateway, viewport={"width": 390, "height": 844})
        try:
            shoot(phone, gateway, "keys", screenshots / "keys-phone.png")
        finally:
            phone.context.close()
        assert page.problems == []
    finally:
        page.context.close()
    for name in PAGES:
        for scheme in ("light", "dark"):
            assert (screenshots / f"{name}-{scheme}.png").stat().st_size > 10_000


def shoot(page: Any, gateway: str, name: str, path: Path) -> None:
    if name == "signin":
        page.context.clear_cookies()
        page.goto("/console/signin")
        page.screenshot(path=str(path), full_page=True)
        page.fill("#admin_key", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_url("**/console/keys")
        return
    page.goto(f"/console/{name}")
    if name == "health":
        page.wait_for_selector("#upstream-keys tbody tr")
        for k in range(12):  # some traffic in the window, one of it refused
            complete(gateway, CLIENT, model=MODEL if k % 6 else "claude-no-such-model")
        page.wait_for_selector(NO_RATE_YET, timeout=15_000)  # a second snapshot: rates drawn
    if name == "try":
        page.fill("#try-key", CLIENT)
        page.fill("#try-model", MODEL)
        page.click("#try-send")
        page.wait_for_selector("#try-status:has-text('HTTP 200')")
    page.screenshot(path=str(path), full_page=True)
