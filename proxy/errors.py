"""The gateway's exceptions and their OpenAI-shaped rendering.

Every failure a client can see is one of these, so every error body has the same
shape: ``{"error": {"message", "type", "param", "code"}}``.

    ProxyError                      500 server_error
    ├── InvalidRequest              400 invalid_request_error   (bad client input; ``param`` names the field)
    ├── BodyTooLarge                413 invalid_request_error
    ├── AuthenticationFailed        401 invalid_request_error   (bad or missing client key)
    ├── PermissionDenied            403 permission_error
    ├── NotFound                    404 not_found_error
    ├── RateLimited                 429 rate_limit_error        (``Retry-After`` when known)
    ├── UpstreamError               502 server_error            (Anthropic failed in a way the client cannot fix)
    │   ├── UpstreamAuthFailed      502 upstream_authentication_error (the gateway's own key was refused)
    │   ├── UpstreamRejected        502 server_error            (a reply over a bound, a redirect; not retried)
    │   ├── UpstreamOverloaded      503 overloaded_error
    │   ├── UpstreamUnavailable     503 server_error
    │   └── UpstreamTimeout         504 timeout_error
    └── ServiceUnavailable          503 server_error            (the gateway itself is starting, draining or full)
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class ProxyError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        if status is not None:
            self.status_code = status
        else:
            self.status_code = self.status

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.message!r}, param={self.param!r})"


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status = 403
    type = "permission_error"


class NotFound(ProxyError):
    status = 404
    type = "not_found_error"


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(ProxyError):
    status = 502
    type = "server_error"


class UpstreamAuthFailed(UpstreamError):
    status = 502
    type = "upstream_authentication_error"


class UpstreamRejected(UpstreamError):
    """The upstream's reply breaks a bound the gateway keeps (too large, compressed, a redirect).
    Asking again would most likely get the same reply, so it is never retried."""

    status = 502
    type = "server_error"


class UpstreamOverloaded(UpstreamError):
    status = 503
    type = "overloaded_error"


class UpstreamUnavailable(UpstreamError):
    status = 503
    type = "server_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "server_error"


def stream_ended_early() -> UpstreamError:
    """The one failure for an upstream stream that closed before its message was complete, in every
    dialect: never passed off as a clean end."""
    return UpstreamError("The upstream stream ended before the response was complete.")


UPSTREAM_CREDENTIALS_REFUSED = (
    "The gateway's upstream credentials were rejected by Anthropic. "
    "This is a gateway configuration problem, not a problem with your API key."
)


def upstream_credentials_refused() -> UpstreamAuthFailed:
    """The one failure for the gateway's own upstream key being refused, whether the upstream just
    said so (401) or every key already had: the client's key was fine."""
    return UpstreamAuthFailed(UPSTREAM_CREDENTIALS_REFUSED)
