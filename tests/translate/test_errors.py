import email.utils
import time
from typing import Any, get_args

import orjson
import pytest
from anthropic._error_classes import ERROR_CLASSES
from anthropic.types import ImageDimensionsTooLargeErrorDetails
from anthropic.types.shared import ErrorResponse, ErrorType

from proxy.errors import (
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
from proxy.translate.errors import from_error_event, from_upstream, retry_after_seconds, status_of_error_event


def body(kind: str, message: str, **error: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": message, **error},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        }
    )


# What Anthropic says with each error type (wording from its API reference).
MESSAGES = {
    "invalid_request_error": "messages: at least one message is required",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "model: claude-nonexistent",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

# upstream status and error type → gateway error, the client's status and OpenAI error type
TABLE = [
    (400, "invalid_request_error", InvalidRequest, 400, "invalid_request_error"),
    (401, "authentication_error", UpstreamAuthFailed, 502, "upstream_authentication_error"),
    (403, "permission_error", PermissionDenied, 403, "permission_error"),
    (404, "not_found_error", NotFound, 404, "not_found_error"),
    (413, "request_too_large", BodyTooLarge, 413, "invalid_request_error"),
    (429, "rate_limit_error", RateLimited, 429, "rate_limit_error"),
    (500, "api_error", UpstreamError, 502, "server_error"),
    (502, "api_error", UpstreamUnavailable, 503, "server_error"),
    (503, "api_error", UpstreamUnavailable, 503, "server_error"),
    (504, "timeout_error", UpstreamTimeout, 504, "timeout_error"),
    (529, "overloaded_error", UpstreamOverloaded, 503, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "kind", "cls", "client_status", "client_type"), TABLE)
def test_upstream_status_maps_to_gateway_error(
    status: int, kind: str, cls: type[ProxyError], client_status: int, client_type: str
) -> None:
    error = from_upstream(status, body(kind, MESSAGES[kind]))
    assert type(error) is cls
    assert error.status_code == client_status
    assert error.to_dict()["error"]["type"] == client_type


# The API reference documents `request_too_large` for 413; the SDK's ErrorType does not list it.
@pytest.mark.parametrize("kind", sorted(set(MESSAGES) & set(get_args(ErrorType))))
def test_error_bodies_used_here_are_valid_anthropic_error_responses(kind: str) -> None:
    ErrorResponse.model_validate_json(body(kind, MESSAGES[kind]))


@pytest.mark.parametrize(("status", "kind"), [(r[0], r[1]) for r in TABLE if r[0] < 500 and r[0] != 401])
def test_client_errors_keep_upstream_message(status: int, kind: str) -> None:
    assert from_upstream(status, body(kind, MESSAGES[kind])).message == MESSAGES[kind]


def test_invalid_request_keeps_the_field_path_in_the_message_and_param_stays_null() -> None:
    upstream = "messages.1.content.0.image.source.base64.media_type: Input should be 'image/jpeg'"
    error = from_upstream(400, body("invalid_request_error", upstream))
    assert error.message == upstream
    assert error.param is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_server_errors_name_the_upstream_status(status: int) -> None:
    error = from_upstream(status, body("api_error", "Internal server error"))
    assert error.message == f"Upstream returned HTTP {status}: Internal server error"


def test_upstream_auth_failure_does_not_reveal_upstream_text() -> None:
    error = from_upstream(401, body("authentication_error", "invalid x-api-key sk-ant-api03-AbCdEf123"))
    assert "sk-ant" not in error.message
    assert "x-api-key" not in error.message
    assert "credentials" in error.message
    assert error.status_code == 502


def test_upstream_auth_failure_with_a_non_json_body_does_not_reveal_it() -> None:
    error = from_upstream(401, b"Unauthorized: key sk-ant-api03-AbCdEf123 revoked")
    assert type(error) is UpstreamAuthFailed
    assert "sk-ant" not in error.message


@pytest.mark.parametrize(
    ("status", "kind"), [(402, "billing_error"), (409, "conflict_error"), (422, "invalid_request_error")]
)
def test_other_4xx_become_invalid_request_with_that_status(status: int, kind: str) -> None:
    error = from_upstream(status, body(kind, "Your credit balance is too low."))
    assert type(error) is InvalidRequest
    assert error.status_code == status
    assert error.message == "Your credit balance is too low."


@pytest.mark.parametrize("status", [501, 520, 599])
def test_other_5xx_become_upstream_error(status: int) -> None:
    error = from_upstream(status, body("api_error", "boom"))
    assert type(error) is UpstreamError
    assert error.status_code == 502


def test_unlisted_status_with_overloaded_body_is_overloaded() -> None:
    error = from_upstream(520, body("overloaded_error", "Overloaded"))
    assert type(error) is UpstreamOverloaded
    assert error.status_code == 503


def test_error_code_from_details_is_passed_through() -> None:
    detail = {"error_code": "enforced_spend_limit_reached"}
    error = from_upstream(429, body("rate_limit_error", "You have reached your spend limit.", details=detail))
    assert error.code == "enforced_spend_limit_reached"


def test_error_code_defaults_to_the_gateway_default() -> None:
    assert from_upstream(429, body("rate_limit_error", "slow down")).code == "rate_limit_exceeded"


# --- Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "17"}, "17"),
        ({"Retry-After": "17"}, "17"),
        ({"retry-after": "2.2"}, "3"),
        ({"retry-after-ms": "1500"}, "2"),
        ({"retry-after-ms": "1000"}, "1"),
        ({"retry-after": "30", "retry-after-ms": "29001"}, "30"),
        ({"retry-after": "0"}, "0"),
    ],
)
def test_rate_limit_copies_retry_after_in_whole_seconds_rounded_up(headers: dict[str, str], expected: str) -> None:
    error = from_upstream(429, body("rate_limit_error", "slow down"), headers)
    assert error.headers == {"Retry-After": expected}


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"retry-after": "soon"},
        {"retry-after": "-5"},
        {"retry-after": "inf"},
        {"retry-after": "nan"},
        {"retry-after": "Infinity"},
        {"retry-after": "1_000"},
        {"retry-after": "\uff11\uff12"},  # full-width digits, which float() would accept
        {"retry-after": "Wed, 32 Oct 2026 07:28:00 GMT"},
    ],
)
def test_rate_limit_without_a_usable_retry_after_has_no_header(headers: dict[str, str] | None) -> None:
    assert from_upstream(429, body("rate_limit_error", "slow down"), headers).headers == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "1e308"},
        {"retry-after": "1e999"},
        {"retry-after": "9" * 32},
        {"retry-after-ms": "1e308"},
        {"retry-after": "Fri, 01 Jan 9999 00:00:00 GMT"},
    ],
)
def test_an_absurdly_long_retry_after_is_clamped_to_an_hour(headers: dict[str, str]) -> None:
    error = from_upstream(429, body("rate_limit_error", "slow down"), headers)
    assert error.headers == {"Retry-After": "3600"}


def test_an_http_date_retry_after_is_the_time_until_that_date() -> None:
    now = 1_800_000_000.0
    in_90s = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after_seconds({"retry-after": in_90s}, clock=lambda: now) == 90.0
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert retry_after_seconds({"retry-after": past}, clock=lambda: now) == 0.0
    soon = email.utils.formatdate(time.time() + 600, usegmt=True)
    assert from_upstream(429, body("rate_limit_error", "x"), {"retry-after": soon}).headers["Retry-After"] in (
        "599",
        "600",
    )


def test_retry_hints_are_clamped_to_the_given_limit() -> None:
    assert retry_after_seconds({"retry-after": "inf"}, limit=60) is None
    assert retry_after_seconds({"retry-after": "1e308"}, limit=60) == 60
    assert retry_after_seconds({"retry-after-ms": "inf", "retry-after": "7"}, limit=60) == 7


def test_invalid_retry_after_ms_falls_back_to_retry_after() -> None:
    headers = {"retry-after-ms": "nan", "retry-after": "4"}
    assert from_upstream(429, body("rate_limit_error", "x"), headers).headers == {"Retry-After": "4"}


def test_overloaded_copies_retry_after_as_it_is_a_503() -> None:
    error = from_upstream(529, body("overloaded_error", "Overloaded"), {"retry-after": "5"})
    assert error.headers == {"Retry-After": "5"}


def test_client_errors_do_not_copy_retry_after() -> None:
    assert from_upstream(400, body("invalid_request_error", "x"), {"retry-after": "5"}).headers == {}


# --- bodies that are not Anthropic JSON


def html_page(size: int) -> bytes:
    head = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    return head + b"<center><h1>502 Bad Gateway</h1><p>" + b"x" * size + b"</p></center>\r\n</body></html>\r\n"


def test_html_502_from_a_load_balancer_maps_cleanly() -> None:
    error = from_upstream(502, html_page(4 * 1024 * 1024), {"content-type": "text/html"})
    assert type(error) is UpstreamUnavailable
    assert error.status_code == 503
    assert error.message == "Upstream returned HTTP 502: 502 Bad Gateway"


def test_long_non_json_body_is_truncated() -> None:
    error = from_upstream(500, b"upstream connect error or disconnect/reset before headers. " * 50_000)
    assert error.message.startswith("Upstream returned HTTP 500: upstream connect error")
    assert len(error.message) < 300
    assert error.message.endswith("…")


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00\x01garbage",
        b"",
        b"   ",
        b"[1, 2]",
        b'{"detail": "not found"}',
        b'{"error": "string"}',
        b"null",
    ],
)
def test_garbage_bodies_map_cleanly_and_name_the_status(raw: bytes) -> None:
    error = from_upstream(503, raw)
    assert type(error) is UpstreamUnavailable
    assert "HTTP 503" in error.message
    assert len(error.message) < 300
    orjson.loads(error.to_json())


def test_non_json_413_is_body_too_large() -> None:
    error = from_upstream(413, b"<html><head><title>413 Request Entity Too Large</title></head></html>")
    assert type(error) is BodyTooLarge
    assert error.message == "Upstream returned HTTP 413: 413 Request Entity Too Large"


def test_very_long_json_message_is_truncated() -> None:
    error = from_upstream(400, body("invalid_request_error", "x" * 100_000))
    assert len(error.message) <= 2000


def test_client_body_has_the_openai_error_shape() -> None:
    error = from_upstream(404, body("not_found_error", "model: claude-nonexistent"))
    assert orjson.loads(error.to_json()) == {
        "error": {
            "message": "model: claude-nonexistent",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }


# --- error events inside a stream

EVENTS = [
    ("overloaded_error", UpstreamOverloaded),
    ("api_error", UpstreamError),
    ("timeout_error", UpstreamTimeout),
    ("rate_limit_error", RateLimited),
    ("invalid_request_error", InvalidRequest),
    ("authentication_error", UpstreamAuthFailed),
    ("permission_error", PermissionDenied),
    ("not_found_error", NotFound),
    ("request_too_large", BodyTooLarge),
    ("some_future_error", UpstreamError),
]


@pytest.mark.parametrize(("kind", "cls"), EVENTS)
def test_error_event_maps_by_error_type(kind: str, cls: type[ProxyError]) -> None:
    error = from_error_event(orjson.loads(body(kind, "it broke")))
    assert type(error) is cls


def test_error_event_names_the_upstream_type_in_its_message() -> None:
    error = from_error_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert error.message == "Upstream failed mid-stream (overloaded_error): Overloaded"
    assert error.to_dict()["error"]["type"] == "overloaded_error"


def test_error_event_for_a_client_error_keeps_the_message() -> None:
    error = from_error_event({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
    assert error.message == "bad"


@pytest.mark.parametrize("data", [{}, {"type": "error"}, {"type": "error", "error": "Overloaded"}, {"error": None}])
def test_malformed_error_event_is_an_upstream_error(data: dict[str, Any]) -> None:
    error = from_error_event(data)
    assert type(error) is UpstreamError
    assert error.message


def test_error_event_without_message_gets_one() -> None:
    error = from_error_event({"type": "error", "error": {"type": "api_error"}})
    assert error.message == "Upstream failed mid-stream (api_error): Upstream api_error."


# --- the SDK's error codes and types (issue 16)

# The error type the API sends with each status, for bodies built below.
_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    412: "memory_precondition_failed_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "api_error",
    529: "overloaded_error",
}
# The status the client sees for an upstream status: its own for a 4xx (the gateway's key refused
# is the gateway's 502), the gateway's 503 for an unavailable or overloaded upstream.
_CLIENT_STATUS = {401: 502, 503: 503, 529: 503}
_SDK_CODES = sorted((status, code) for status, code in ERROR_CLASSES if code is not None)


def test_image_dimensions_too_large_is_a_400_with_its_code_and_upstream_message() -> None:
    message = "messages.0.content.1.image: image dimensions exceed max allowed size of 8000 pixels"
    details = {
        "error_code": "image_dimensions_too_large",
        "max_side_length_pixels": 8000,
        "paths": ["messages.0.content.1"],
    }
    raw = body("invalid_request_error", message, details=details)
    ErrorResponse.model_validate_json(raw)
    ImageDimensionsTooLargeErrorDetails.model_validate(details)
    error = from_upstream(400, raw)
    assert (type(error), error.status_code, error.code, error.message) == (
        InvalidRequest,
        400,
        "image_dimensions_too_large",
        message,
    )
    assert error.to_dict()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("status", "code"), _SDK_CODES, ids=[code for _, code in _SDK_CODES])
def test_every_error_code_the_sdk_knows_reaches_the_client_under_its_status(status: int, code: str) -> None:
    error = from_upstream(status, body(_TYPE_OF_STATUS[status], "it failed", details={"error_code": code}))
    assert error.code == code
    assert error.status_code == _CLIENT_STATUS.get(status, status)


@pytest.mark.parametrize(
    ("kind", "status"),
    [("conflict_error", 409), ("memory_path_conflict_error", 409), ("memory_precondition_failed_error", 412)],
)
def test_the_sdks_newer_error_types_mid_stream_keep_their_status(kind: str, status: int) -> None:
    error = from_error_event(orjson.loads(body(kind, "changed meanwhile")))
    assert (type(error), error.status_code, error.message) == (InvalidRequest, status, "changed meanwhile")


@pytest.mark.parametrize("kind", get_args(ErrorType))
def test_every_error_type_of_the_sdk_has_a_status_of_its_own(kind: str) -> None:
    known = status_of_error_event(orjson.loads(body(kind, "x")))
    unknown = status_of_error_event(orjson.loads(body("some_future_error", "x")))
    assert known != unknown or kind == "api_error"


def test_an_error_code_inside_a_stream_error_event_reaches_the_client() -> None:
    details = {
        "error_code": "image_dimensions_too_large",
        "max_side_length_pixels": 8000,
        "paths": ["messages.0.content.0"],
    }
    error = from_error_event(orjson.loads(body("invalid_request_error", "too large", details=details)))
    assert (error.status_code, error.code) == (400, "image_dimensions_too_large")
