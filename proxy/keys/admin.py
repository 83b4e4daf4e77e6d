"""The admin HTTP API under ``/admin/``: manage client keys and read usage, with the admin key.

    POST   /admin/keys              create a key; the answer carries its secret, once
    GET    /admin/keys              every key (stored, config file, environment), no secrets
    GET    /admin/keys/{name}       one key, with the tokens it used today and this month
    PATCH  /admin/keys/{name}       {"enabled": false|true}: disable or re-enable a key
    DELETE /admin/keys/{name}       revoke a key (for good)
    GET    /admin/usage[?key=&since=YYYY-MM-DD&until=YYYY-MM-DD]
                                    the usage ledger (default: this UTC month), with totals

The admin key (``PROXY_ADMIN_KEY``) goes in ``Authorization: Bearer …`` or ``x-api-key`` and is
compared in constant time. Any other key, a client key included, gets the same 401, and counts as a
bad key in the gateway's throttle (`proxy.abuse`), shared with the client routes: the admin API
must not tell real client keys from guesses, nor answer guesses faster than the rest. Without an
admin key configured every admin route answers 403 ``admin_disabled``. Errors are OpenAI-shaped,
like the rest of the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from proxy.abuse import BadKeyThrottle, refuse_if_throttled
from proxy.auth import presented_key
from proxy.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProxyError,
    ServiceUnavailable,
)
from proxy.keys.records import NewKey, iso, utc
from proxy.keys.service import ConfigKeyReadOnly, KeyService
from proxy.keys.store import KeyExists, KeyNotFound, KeyRevoked, StoreError, UsageRow, day_of

log = logging.getLogger("proxy.keys.admin")

MAX_BODY = 64 * 1024
# The name the admin key goes by in the throttle's memory: not a valid client key name (NAME_RE).
ADMIN_NAME = "<admin>"
ServiceRef = KeyService | Callable[[Request], KeyService]
ThrottleRef = BadKeyThrottle | Callable[[Request], BadKeyThrottle]
Handler = Callable[[KeyService, Request], Awaitable[Response]]


def routes(service: ServiceRef, throttle: ThrottleRef | None = None) -> list[BaseRoute]:
    """The admin routes, already mounted at ``/admin``. ``service`` is the ``KeyService``, or a
    function of the request returning it (when the service is opened in the app's lifespan, after
    the routes are built: ``routes(lambda request: request.app.state.keys)``). ``throttle``, the
    same way, is the bad-key throttle to count wrong admin keys in: the gateway passes its own, so
    that guesses here and on the client routes share one budget; without one the admin routes
    keep a throttle of their own."""
    own_throttle = BadKeyThrottle()

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                keys = service if isinstance(service, KeyService) else service(request)
                if throttle is None:
                    bad_keys = own_throttle
                else:
                    bad_keys = throttle if isinstance(throttle, BadKeyThrottle) else throttle(request)
                _guard(keys, bad_keys, request)
                return await handler(keys, request)
            except ProxyError as exc:
                return _error(exc)
            except (KeyExists, ConfigKeyReadOnly, KeyRevoked) as exc:
                return _error(InvalidRequest(str(exc), status=409, code="conflict"))
            except KeyNotFound as exc:
                return _error(NotFound(str(exc), code="key_not_found"))
            except StoreError as exc:
                log.error("admin API: key store failed: %s", exc)
                return _error(ServiceUnavailable("The key store is unavailable; try again shortly."))

        return run

    return [
        Mount(
            "/admin",
            routes=[
                Route("/keys", endpoint(_create), methods=["POST"]),
                Route("/keys", endpoint(_list), methods=["GET"]),
                Route("/keys/{name}", endpoint(_get), methods=["GET"]),
                Route("/keys/{name}", endpoint(_patch), methods=["PATCH"]),
                Route("/keys/{name}", endpoint(_revoke), methods=["DELETE"]),
                Route("/usage", endpoint(_usage), methods=["GET"]),
            ],
        )
    ]


def _guard(keys: KeyService, bad_keys: BadKeyThrottle, request: Request) -> None:
    if not keys.admin_enabled:
        raise PermissionDenied(
            "The admin API is disabled: set PROXY_ADMIN_KEY (or `admin_key:` in the config file) to enable it.",
            code="admin_disabled",
        )
    if presented_key(request.headers) is None:
        raise AuthenticationFailed(
            "Missing admin key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            code="missing_api_key",
        )
    address = request.client.host if request.client else None
    if keys.is_admin(request.headers) is True:
        refuse_if_throttled(bad_keys.refuse_valid_key(address, ADMIN_NAME))
        return
    # A client key and a guess get the same answer, and both count as a bad admin key.
    refuse_if_throttled(bad_keys.refuse_bad_key(address))
    raise AuthenticationFailed("Incorrect admin key provided.")


def _json(body: Any, status: int = 200, *, no_store: bool = False) -> Response:
    headers = {"cache-control": "no-store"} if no_store else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(error: ProxyError) -> Response:
    return Response(
        error.to_json(), status_code=error.status_code, media_type="application/json", headers=error.headers
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise InvalidRequest(f"The request body is larger than the admin API accepts ({MAX_BODY} bytes).")
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _invalid(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first.get("loc", ())) or None
    return InvalidRequest(f"Invalid {param or 'request'}: {first.get('msg', 'invalid value')}.", param=param)


async def _create(keys: KeyService, request: Request) -> Response:
    body = await _body(request)
    try:
        spec = NewKey.model_validate(body)
        record, secret = await keys.create_key(spec)
    except ValidationError as exc:
        raise _invalid(exc) from None
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    view = record.view(keys.clock())
    view["secret"] = secret
    return _json(view, 201, no_store=True)


async def _list(keys: KeyService, request: Request) -> Response:
    now = keys.clock()
    data = [record.view(now) for record in await keys.key_records()] + keys.static_views()
    return _json({"object": "list", "data": data})


async def _get(keys: KeyService, request: Request) -> Response:
    record = await keys.key_record(request.path_params["name"])
    view = record.view(keys.clock())
    today, month = await keys.spent(record.name)
    view["usage"] = {"tokens_today": today, "tokens_this_month": month}
    return _json(view)


async def _patch(keys: KeyService, request: Request) -> Response:
    body = await _body(request)
    name = request.path_params["name"]
    enabled = body.pop("enabled", None)
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidRequest('Send {"enabled": true} or {"enabled": false}.', param="enabled")
    if not body and enabled is None:
        raise InvalidRequest(
            "Send the fields to change: enabled, models, rpm, tpm, daily_tokens, monthly_tokens, "
            "expires_at or metadata."
        )
    if body:
        try:
            await keys.update_key(name, body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    record = await keys.set_enabled(name, enabled) if enabled is not None else await keys.key_record(name)
    return _json(record.view(keys.clock()))


async def _revoke(keys: KeyService, request: Request) -> Response:
    record = await keys.revoke_key(request.path_params["name"])
    return _json(record.view(keys.clock()))


def _day(value: str | None, default: str, param: str) -> str:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidRequest(f"Invalid {param}: expected a date as YYYY-MM-DD.", param=param) from None


def usage_summary(rows: list[UsageRow]) -> dict[str, Any]:
    total = UsageRow(key="*", model="*", day="*")
    for row in rows:
        total.add(row)
    summary = total.view()
    for name in ("key", "model", "day"):
        summary.pop(name)
    return summary


async def _usage(keys: KeyService, request: Request) -> Response:
    today = day_of(keys.clock())
    since = _day(request.query_params.get("since"), today[:8] + "01", "since")
    until = _day(request.query_params.get("until"), today, "until")
    key = request.query_params.get("key") or None
    rows = await keys.usage(key, since, until)
    return _json(
        {
            "object": "list",
            "key": key,
            "since": since,
            "until": until,
            "data": [row.view() for row in rows],
            "totals": usage_summary(rows),
            "generated_at": iso(utc(keys.clock())),
        }
    )
