"""The console's session: a signed, expiring cookie and the CSRF token that goes with it.

The signing key is derived from the admin key (HMAC with a fixed label), so every worker and every
replica that shares the admin key accepts the same cookie, nothing has to be stored, and changing
the admin key signs everybody out. The cookie says when it was issued and carries a random nonce;
the server checks the signature in constant time and the age against ``SESSION_SECONDS`` itself
(the browser's ``Max-Age`` is a courtesy, not a control). The CSRF token is a second HMAC of the
nonce: a page can only know it if the server rendered it for this session.

Pure functions of their inputs (the clock is passed in): no I/O, easy to test.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "claude_proxy_console"
COOKIE_PATH = "/console"
SESSION_SECONDS = 12 * 3600
_LABEL = b"claude-proxy console session v1"
_VERSION = "v1"


def signing_key(admin_key: str) -> bytes:
    """The key sessions are signed with: never the admin key itself, so a leaked signature says
    nothing about it, and a different label gives a different key for anything else derived later."""
    return hmac.new(admin_key.encode("utf-8"), _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    issued_at: int
    nonce: str

    def expires_at(self) -> int:
        return self.issued_at + SESSION_SECONDS


def issue(key: bytes, now: float) -> tuple[str, Session]:
    """A new session and its cookie value."""
    session = Session(int(now), secrets.token_urlsafe(18))
    payload = f"{_VERSION}.{session.issued_at}.{session.nonce}"
    return f"{payload}.{_mac(key, payload)}", session


def verify(key: bytes, cookie: str | None, now: float) -> Session | None:
    """The session a cookie value stands for, or None if it is missing, forged, or expired."""
    if not cookie or len(cookie) > 256:
        return None
    payload, _, signature = cookie.rpartition(".")
    if not hmac.compare_digest(signature.encode("ascii", "replace"), _mac(key, payload).encode("ascii")):
        return None
    version, _, rest = payload.partition(".")
    issued, _, nonce = rest.partition(".")
    if version != _VERSION or not issued.isdigit() or not nonce:
        return None
    session = Session(int(issued), nonce)
    # A cookie from the future (a clock step back, a forged-but-signed one cannot exist) is refused too.
    if not session.issued_at - 60 <= now < session.expires_at():
        return None
    return session


def csrf_token(key: bytes, session: Session) -> str:
    return _mac(key, f"csrf.{session.nonce}")


def csrf_ok(key: bytes, session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(
        str(presented).encode("ascii", "replace"), csrf_token(key, session).encode("ascii")
    )


def cross_site(origin: str | None, fetch_site: str | None, host_url: str) -> bool:
    """Whether a state-changing request comes from another site, by what the browser says about it:
    ``Sec-Fetch-Site`` (every current browser; a header no page can set) decides when present,
    ``Origin`` (older browsers) otherwise. A request with neither is not a browser's cross-site
    request (curl, tests), and still needs the CSRF token, which only a page of this origin has."""
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    return origin is not None and origin.rstrip("/") != host_url.rstrip("/")
