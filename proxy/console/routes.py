"""The console's routes under ``/console``: sign-in, keys, usage, health and the playground.

Every handler goes through `web.guarded`; every one but the sign-in page asks `Console.session_of`
or `Console.check_change` first. Key changes go through the gateway's `KeyService`, the same calls
the admin API makes, so the console adds no rules of its own.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from proxy import metrics
from proxy.abuse import refuse_if_throttled
from proxy.console import health, static, usage
from proxy.console import session as sessions
from proxy.console.web import Console, GatewayRef, Refused, form, guarded, json_response, page, secured
from proxy.keys.admin import ADMIN_NAME
from proxy.keys.records import NewKey
from proxy.keys.service import ConfigKeyReadOnly, KeyService
from proxy.keys.store import KeyExists, KeyNotFound, KeyRevoked, StoreError, day_of

log = logging.getLogger("proxy.console")

LIMIT_FIELDS = ("rpm", "tpm", "daily_tokens", "monthly_tokens")
# What a key from the environment (PROXY_API_KEYS) lacks beside a stored key's view.
VIEW_DEFAULTS: dict[str, Any] = {
    "hint": None,
    "rpm": None,
    "tpm": None,
    "daily_tokens": None,
    "monthly_tokens": None,
    "expires_at": None,
    "enabled": True,
}


# --- sign-in ------------------------------------------------------------------------------------


async def sign_in_page(console: Console, request: Request) -> Response:
    enabled = console.gateway_of(request).keys.admin_enabled
    return page("signin.html", 200 if enabled else 403, message=None, enabled=enabled)


async def sign_in(console: Console, request: Request) -> Response:
    console.refuse_cross_site(request)  # no login CSRF: a foreign page cannot sign a browser in
    fields = await form(request)
    gateway = console.gateway_of(request)
    key = console.signing_key(request)
    if key is None or not gateway.keys.admin_enabled:
        return page("signin.html", 403, message=None, enabled=False)
    presented = fields.get("admin_key", "").strip()
    if not presented:
        return page("signin.html", 400, message="Enter the admin key.", enabled=True)
    address = request.client.host if request.client else None
    # The admin API's rule, with the gateway's one throttle: a client key is as wrong as a guess.
    if gateway.keys.is_admin({"authorization": f"Bearer {presented}"}) is True:
        refuse_if_throttled(gateway.bad_keys.refuse_valid_key(address, ADMIN_NAME))
        cookie, _ = sessions.issue(key, console.clock())
        response = secured(RedirectResponse("/console/keys", status_code=303))
        response.set_cookie(
            sessions.COOKIE,
            cookie,
            max_age=sessions.SESSION_SECONDS,
            path=sessions.COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        log.info("console: signed in from %s", address)
        return response
    refuse_if_throttled(gateway.bad_keys.refuse_bad_key(address))
    return page("signin.html", 401, message="Incorrect admin key.", enabled=True)


async def sign_out(console: Console, request: Request) -> Response:
    await console.check_change(request)
    response = secured(RedirectResponse("/console/signin", status_code=303))
    response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH, httponly=True, samesite="strict")
    return response


async def home(console: Console, request: Request) -> Response:
    console.session_of(request)
    return secured(RedirectResponse("/console/keys", status_code=303))


# --- keys ---------------------------------------------------------------------------------------


async def _token_totals(keys: KeyService) -> dict[str, tuple[int, int]]:
    await keys.ledger.flush()  # this worker's latest requests, as `KeyService.spent` does
    return await keys.store.token_totals(day_of(keys.clock()))


def _matches(view: dict[str, Any], query: str) -> bool:
    haystack = " ".join([view["name"], view.get("status", ""), view.get("source", ""), *view.get("models", [])])
    return query.lower() in haystack.lower()


async def _key_rows(keys: KeyService, query: str) -> list[dict[str, Any]]:
    now = keys.clock()
    totals = await _token_totals(keys)
    rows = []
    for found in [record.view(now) for record in await keys.key_records()] + keys.static_views():
        view = {**VIEW_DEFAULTS, **found}
        if query and not _matches(view, query):
            continue
        today, month = totals.get(view["name"], (0, 0))
        view["used_today"], view["used_month"] = today, month
        view["budgets"] = usage.budget_use(view, today, month)
        rows.append(view)
    return rows


async def keys_page(
    console: Console,
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    created: dict[str, Any] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    context = console.context(request, "keys")
    keys = console.gateway_of(request).keys
    query = request.query_params.get("q", "").strip()
    return page(
        "keys.html",
        status,
        **context,
        rows=await _key_rows(keys, query),
        query=query,
        error=error,
        created=created,
        values=values or {},
    )


def _spec(fields: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": fields.get("name", "").strip()}
    if fields.get("models", "").strip():
        spec["models"] = fields["models"]
    for name in LIMIT_FIELDS:
        if fields.get(name, "").strip():
            spec[name] = fields[name].strip()
    if fields.get("expires_at", "").strip():
        spec["expires_at"] = fields["expires_at"].strip()
    return spec


def _invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "the form"
    return f"{where}: {first.get('msg', 'invalid value')}"


async def _service_call(console: Console, request: Request, call: Any) -> Any:
    """A `KeyService` call; its refusals shown on the keys page, as the admin API answers them."""
    try:
        return await call
    except (KeyExists, ConfigKeyReadOnly, KeyRevoked) as exc:
        raise Refused(await keys_page(console, request, status=409, error=str(exc))) from None
    except KeyNotFound as exc:
        raise Refused(await keys_page(console, request, status=404, error=str(exc))) from None
    except StoreError as exc:
        log.error("console: key store failed: %s", exc)
        raise Refused(page("error.html", 503, message="The key store is unavailable; try again shortly.")) from None


async def create_key(console: Console, request: Request) -> Response:
    _, fields = await console.check_change(request)
    keys = console.gateway_of(request).keys
    try:
        spec = NewKey.model_validate(_spec(fields))
    except ValidationError as exc:
        return await keys_page(console, request, status=400, error=_invalid(exc), values=fields)
    try:
        record, secret = await _service_call(console, request, keys.create_key(spec))
    except ValueError as exc:  # an expiry in the past
        return await keys_page(console, request, status=400, error=str(exc), values=fields)
    created = record.view(keys.clock())
    created["secret"] = secret
    return await keys_page(console, request, status=201, created=created)


EDIT_FIELDS = ("models", *LIMIT_FIELDS, "expires_at")


async def edit_key(console: Console, request: Request) -> Response:
    _, fields = await console.check_change(request)
    keys = console.gateway_of(request).keys
    # A blank field clears that limit (models: every model), as a new key without it would be.
    changes: dict[str, Any] = {name: fields[name].strip() or None for name in EDIT_FIELDS if name in fields}
    if "models" in changes:
        changes["models"] = changes["models"] or ()
    try:
        await _service_call(console, request, keys.update_key(request.path_params["name"], changes))
    except ValidationError as exc:
        return await keys_page(console, request, status=400, error=_invalid(exc))
    except ValueError as exc:
        return await keys_page(console, request, status=400, error=str(exc))
    return secured(RedirectResponse("/console/keys", status_code=303))


def _change(action: str) -> Any:
    async def handler(console: Console, request: Request) -> Response:
        await console.check_change(request)
        keys = console.gateway_of(request).keys
        name = request.path_params["name"]
        if action == "revoke":
            await _service_call(console, request, keys.revoke_key(name))
        else:
            await _service_call(console, request, keys.set_enabled(name, action == "enable"))
        return secured(RedirectResponse("/console/keys", status_code=303))

    return handler


# --- usage --------------------------------------------------------------------------------------


async def _usage_rows(console: Console, request: Request) -> tuple[str | None, list[str], list[Any]]:
    keys = console.gateway_of(request).keys
    key = request.query_params.get("key") or None
    days = usage.window(day_of(keys.clock()))
    return key, days, await keys.usage(key, days[0], days[-1])


async def usage_page(console: Console, request: Request) -> Response:
    context = console.context(request, "usage")
    keys = console.gateway_of(request).keys
    key, days, rows = await _usage_rows(console, request)
    all_keys = await _key_rows(keys, "")
    budgets = [row for row in all_keys if row["budgets"] and (key is None or row["name"] == key)]
    return page(
        "usage.html",
        **context,
        key=key,
        key_names=[row["name"] for row in all_keys],
        chart=usage.chart(rows, days),
        table=usage.table(rows),
        budgets=budgets,
        since=days[0],
        until=days[-1],
    )


async def usage_csv(console: Console, request: Request) -> Response:
    console.session_of(request)
    key, days, rows = await _usage_rows(console, request)
    name = f"claude-proxy-usage-{key or 'all'}-{days[0]}-{days[-1]}.csv"
    response = Response(usage.to_csv(rows), media_type="text/csv; charset=utf-8")
    response.headers["content-disposition"] = f'attachment; filename="{name}"'
    return secured(response)


# --- health and the playground ------------------------------------------------------------------


async def health_page(console: Console, request: Request) -> Response:
    return page("health.html", **console.context(request, "health"))


async def health_snapshot(console: Console, request: Request) -> Response:
    console.session_of(request)
    gateway = console.gateway_of(request)
    # One worker's own count is exact only when it is the only worker; with several the gauge is summed.
    own = None if metrics.multiprocess_mode() else gateway.upstream.in_flight
    body = health.snapshot(metrics.registry(), upstream_in_flight=own)
    body["workers"] = gateway.settings.workers
    body["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return json_response(body)


async def try_page(console: Console, request: Request) -> Response:
    context = console.context(request, "try")
    gateway = console.gateway_of(request)
    try:
        models = [entry["id"] for entry in await gateway.list_models()]
    except Exception as exc:  # the playground still works with a typed model name
        log.warning("console: cannot list models for the playground: %s", exc)
        models = []
    return page("try.html", **context, models=models)


async def static_file(console: Console, request: Request) -> Response:
    name = request.path_params["name"]
    if name not in static.PUBLIC:
        console.session_of(request)
    return static.response(name)


def routes(gateway_of: GatewayRef, console: Console | None = None) -> list[BaseRoute]:
    """The console, mounted at ``/console``; ``gateway_of`` gives the request's `Gateway`."""
    console = console or Console(gateway_of)

    def route(path: str, handler: Any, method: str) -> Route:
        return Route(path, guarded(console, handler), methods=[method])

    return [
        Mount(
            "/console",
            routes=[
                route("/", home, "GET"),
                route("/signin", sign_in_page, "GET"),
                route("/signin", sign_in, "POST"),
                route("/signout", sign_out, "POST"),
                route("/keys", keys_page, "GET"),
                route("/keys", create_key, "POST"),
                route("/keys/{name}/limits", edit_key, "POST"),
                route("/keys/{name}/enable", _change("enable"), "POST"),
                route("/keys/{name}/disable", _change("disable"), "POST"),
                route("/keys/{name}/revoke", _change("revoke"), "POST"),
                route("/usage", usage_page, "GET"),
                route("/usage.csv", usage_csv, "GET"),
                route("/health", health_page, "GET"),
                route("/api/health", health_snapshot, "GET"),
                route("/try", try_page, "GET"),
                route("/static/{name}", static_file, "GET"),
            ],
        )
    ]
