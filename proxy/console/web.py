"""What every console response shares: templates, security headers, forms, and the session guard.

The guard is the console's only door: every route but the sign-in page and its stylesheet goes
through `Console.session_of` (a valid, unexpired session cookie) and, for anything that changes
state, `Console.check_change` (same-site by ``Sec-Fetch-Site``/``Origin``, and the session's CSRF
token). A client key in ``Authorization`` opens nothing here: the console does not read that header.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proxy.console import session as sessions
from proxy.errors import ProxyError

if TYPE_CHECKING:
    from proxy.gateway import Gateway

GatewayRef = Callable[[Request], "Gateway"]
MAX_FORM_BYTES = 16 * 1024

# No inline script or style anywhere (the templates carry data as JSON in <script type=application/json>).
CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # Not "no-referrer": with it Chromium sends "Origin: null" on the console's own form posts.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    # Pages show usage, and once a fresh secret: never kept by a browser or shared cache.
    "cache-control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("proxy.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Refused(Exception):
    """A request the console will not serve; `response` says so."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(name: str, status: int = 200, **context: Any) -> Response:
    html = _templates.get_template(name).render(**context)
    return secured(Response(html, status_code=status, media_type="text/html; charset=utf-8"))


def json_response(body: Any, status: int = 200) -> Response:
    return secured(Response(orjson.dumps(body), status_code=status, media_type="application/json"))


def to_sign_in(request: Request) -> Response:
    return secured(RedirectResponse("/console/signin", status_code=303))


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form, bounded; the last value of a repeated field wins."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise Refused(page("error.html", 413, message="The form is larger than the console accepts."))
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def host_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


class Console:
    """The console's view of the gateway, per request (the gateway is built in the lifespan)."""

    def __init__(self, gateway_of: GatewayRef, clock: Callable[[], float] = time.time) -> None:
        self.gateway_of = gateway_of
        self.clock = clock

    def signing_key(self, request: Request) -> bytes | None:
        admin = self.gateway_of(request).settings.admin_key
        return sessions.signing_key(admin.get_secret_value()) if admin is not None else None

    def session_of(self, request: Request) -> tuple[bytes, sessions.Session]:
        """The request's session, or `Refused` with the way to the sign-in page."""
        key = self.signing_key(request)
        found = sessions.verify(key, request.cookies.get(sessions.COOKIE), self.clock()) if key else None
        if key is None or found is None:
            if request.method == "GET" and not request.url.path.startswith("/console/api/"):
                raise Refused(to_sign_in(request))
            raise Refused(json_response({"error": "sign in to the console first"}, 401))
        return key, found

    def refuse_cross_site(self, request: Request) -> None:
        if sessions.cross_site(request.headers.get("origin"), request.headers.get("sec-fetch-site"), host_url(request)):
            raise Refused(page("error.html", 403, message="Cross-site requests are refused."))

    async def check_change(self, request: Request) -> tuple[sessions.Session, dict[str, str]]:
        """A state-changing request: same-site, signed in, carrying the session's CSRF token."""
        self.refuse_cross_site(request)
        key, found = self.session_of(request)
        fields = await form(request)
        token = fields.get("csrf") or request.headers.get("x-csrf-token")
        if not sessions.csrf_ok(key, found, token):
            raise Refused(page("error.html", 403, message="The form expired or did not come from the console."))
        return found, fields

    def context(self, request: Request, active: str) -> dict[str, Any]:
        key, found = self.session_of(request)
        return {"active": active, "csrf": sessions.csrf_token(key, found), "expires_at": found.expires_at()}


Handler = Callable[[Console, Request], Awaitable[Response]]


def guarded(console: Console, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(console, request)
        except Refused as refused:
            return refused.response
        except ProxyError as exc:  # a throttled sign-in, a store outage: shown as a page, same status
            response = page("error.html", exc.status_code, message=exc.message)
            response.headers.update(exc.headers)
            return response

    return run
