"""Upstream (Anthropic) failures → the gateway's own `ProxyError`s.

Two tables drive everything: `_BY_STATUS` maps an upstream HTTP status to the gateway error
(and so to the status and OpenAI error type the client sees), and `_STATUS_OF_TYPE` gives each
Anthropic error type its canonical status, used for `error` events inside a stream (which have
no status of their own) and for unlisted non-4xx statuses. What is left falls back by range:
other 4xx → `InvalidRequest` with that status, anything else → `UpstreamError`.

Codes: the API's machine-readable cause, ``error.details.error_code`` (``image_dimensions_too_large``,
``ramp_limit_exceeded``, …: the SDK's ``shared.ErrorDetails``), becomes the OpenAI error's ``code``
under whatever status carries it; without one, the gateway error's default code applies.

Messages: a 4xx keeps upstream's wording (it names the field at fault, e.g. ``messages.1.content``;
``param`` stays None because that path is in Anthropic's request, not the client's); a 5xx says
which status upstream answered, since the client sees a different one; a 401 says it is the
gateway's key that was refused, not the client's. Bodies that are not JSON are reduced to a short
excerpt. Upstream text arrives here already scrubbed of the gateway's upstream keys: every byte
the upstream sends passes `proxy.upstream.Scrubber` at the boundary, whatever maps it next.

Retry hints: `retry_after_seconds` is the one parser of ``retry-after-ms`` / ``retry-after``
(seconds or an HTTP-date), for the key pool's resting, the retry waits and the ``Retry-After``
a client is given. It believes only a plain, finite, non-negative number (no ``inf``, ``nan``,
exponent or sign), clamped to ``upstream.max_retry_hint``.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxy.errors import (
    UPSTREAM_CREDENTIALS_REFUSED,
    BodyTooLarge,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProxyError,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["RETRY_HINT_LIMIT", "from_error_event", "from_upstream", "retry_after_seconds", "status_of_error_event"]

_BY_STATUS: dict[int, type[ProxyError]] = {
    400: InvalidRequest,
    401: UpstreamAuthFailed,
    403: PermissionDenied,
    404: NotFound,
    413: BodyTooLarge,
    429: RateLimited,
    500: UpstreamError,
    502: UpstreamUnavailable,
    503: UpstreamUnavailable,
    504: UpstreamTimeout,
    529: UpstreamOverloaded,
}

# anthropic.types.shared.ErrorType, plus the 413 body type the API documents. The statuses are the
# SDK's (anthropic._error_classes): the conflict types are 409s, a failed precondition a 412.
_STATUS_OF_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "memory_path_conflict_error": 409,
    "memory_precondition_failed_error": 412,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Statuses whose Retry-After the client can act on.
_RETRY_AFTER_STATUSES = frozenset({429, 503})

_MAX_MESSAGE = 2000
_MAX_EXCERPT = 200
# The default of `upstream.max_retry_hint`: no upstream hint is believed beyond an hour.
RETRY_HINT_LIMIT = 3600.0
# delay-seconds (RFC 9110 §10.2.3), with the decimals (and, leniently, the exponent) a number may
# carry: ASCII digits only, no sign, so that `inf`, `nan`, `-5` and full-width digits are no hint at all. A
# number too large for a float (`1e999`) is merely long: `retry_after_seconds` clamps it.
_DELAY = re.compile(r"[0-9]{1,32}(?:\.[0-9]{0,32})?(?:[eE][+-]?[0-9]{1,4})?")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def from_upstream(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> ProxyError:
    """The error for an upstream response with a non-2xx `status` and its raw `body`."""
    error = _error_object(body)
    if error is None:
        detail = _excerpt(body)
        message = f"Upstream returned HTTP {status}" + (f": {detail}" if detail else ".")
        return _build(status, message, None, headers, server_prefix="")
    prefix = f"Upstream returned HTTP {status}: "
    if status not in _BY_STATUS and not 400 <= status < 500:
        # An unlisted 5xx (say 520 from a CDN) may still say what happened in its body.
        status = _STATUS_OF_TYPE.get(_kind(error), status)
    return _build(status, _message(error), _error_code(error), headers, server_prefix=prefix)


def status_of_error_event(data: dict[str, Any]) -> int:
    """The HTTP status the API uses for the error type in a stream's `error` event (500 if unknown)."""
    error = data.get("error")
    return _STATUS_OF_TYPE.get(_kind(error), 500) if isinstance(error, dict) else 500


def from_error_event(data: dict[str, Any]) -> ProxyError:
    """The error for an `error` event inside a stream: ``{"type": "error", "error": {...}}``."""
    error = data.get("error")
    if not isinstance(error, dict):
        return UpstreamError("Upstream sent a malformed error event mid-stream.")
    kind = _kind(error)
    status = _STATUS_OF_TYPE.get(kind, 500)
    prefix = f"Upstream failed mid-stream ({kind}): " if kind else "Upstream failed mid-stream: "
    return _build(status, _message(error), _error_code(error), None, server_prefix=prefix)


def _build(
    status: int,
    message: str,
    code: str | None,
    headers: Mapping[str, str] | None,
    *,
    server_prefix: str,
) -> ProxyError:
    cls = _BY_STATUS.get(status)
    override: int | None = None
    if cls is None:
        if 400 <= status < 500:
            cls, override = InvalidRequest, status
        else:
            cls = UpstreamError
    if cls is UpstreamAuthFailed:
        message = UPSTREAM_CREDENTIALS_REFUSED
    elif issubclass(cls, UpstreamError):
        message = server_prefix + message
    extra: dict[str, str] = {}
    if headers is not None and (override or cls.status) in _RETRY_AFTER_STATUSES:
        retry_after = _retry_after(headers)
        if retry_after is not None:
            extra["Retry-After"] = retry_after
    return cls(message, code=code, status=override, headers=extra)


def _error_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            return error
    return None


def _kind(error: dict[str, Any]) -> str:
    kind = error.get("type")
    return kind if isinstance(kind, str) else ""


def _message(error: dict[str, Any]) -> str:
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        kind = _kind(error)
        return f"Upstream {kind}." if kind else "Upstream error."
    return _truncate(message, _MAX_MESSAGE)


def _error_code(error: dict[str, Any]) -> str | None:
    # `error.details.error_code` is the API's stable machine-readable cause (see
    # anthropic._exceptions.extract_error_code); otherwise the class default applies.
    details = error.get("details")
    if isinstance(details, dict):
        code = details.get("error_code")
        if isinstance(code, str):
            return code
    return None


def _excerpt(body: bytes) -> str:
    head = body[:8192]
    title = _TITLE.search(head)
    raw = title.group(1) if title else head[: _MAX_EXCERPT * 4]
    text = _SPACE.sub(" ", raw.decode("utf-8", "replace")).strip()
    return _truncate(text, _MAX_EXCERPT)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: Mapping[str, str]) -> str | None:
    """The ``Retry-After`` for the client: whole seconds, rounded up."""
    seconds = retry_after_seconds(headers)
    return None if seconds is None else str(math.ceil(seconds))


def retry_after_seconds(
    headers: Mapping[str, str], *, limit: float = RETRY_HINT_LIMIT, clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds the upstream asked us to wait, finite and at most ``limit``; None without a usable hint.

    ``retry-after-ms`` wins over ``retry-after`` (Anthropic sends both; the first is finer); a
    malformed one falls back to the other. ``retry-after`` may be an HTTP-date, read against
    ``clock`` (wall-clock seconds); a date in the past means no wait.
    """
    millis = _delay(_header(headers, "retry-after-ms"))
    if millis is not None:
        return min(millis / 1000, limit)
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _delay(raw)
    if seconds is None:
        seconds = _date_delay(raw, clock)
    return None if seconds is None else min(seconds, limit)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and isinstance(headers, dict):  # a plain dict is not case-insensitive as HTTP headers are
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _delay(raw: str | None) -> float | None:
    if raw is None:
        return None
    text = raw.strip()
    return float(text) if _DELAY.fullmatch(text) else None  # finite, or +inf for `1e999`: min() clamps both


def _date_delay(raw: str, clock: Callable[[], float]) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # a "-0000" zone: UTC, says RFC 5322
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - clock())
