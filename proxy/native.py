"""Anthropic-native clients: ``POST /v1/messages`` and ``/v1/messages/count_tokens``, forwarded.

Pure helpers for the route glue. `prepare_native` checks a body only as far as routing needs (a
JSON object naming a model), resolves the model alias and returns the bytes to forward: the rest
of the body is the client's contract with the Messages API, judged upstream, so a native client
gets every feature the API has, including ones this gateway does not translate. `message_usage`
and `NativeUsage` read what a reply used, for metering (a usage whose counts are not
non-negative integers is left unmetered and logged: the client still gets the upstream's bytes
as they are). Errors on these routes belong in
Anthropic's shape, which Anthropic SDKs parse (`anthropic_error`, `anthropic_error_event`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import orjson

from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.models import ModelTable
from proxy.translate.messages import invalid_type, requested_model
from proxy.translate.stream import checked_usage
from proxy.usage import Usage

__all__ = [
    "NativeRequest",
    "NativeUsage",
    "anthropic_error",
    "anthropic_error_event",
    "message_usage",
    "prepare_native",
]

log = logging.getLogger("proxy.native")


@dataclass(frozen=True, slots=True)
class NativeRequest:
    payload: bytes  # the body to forward, with the model alias resolved
    model: str  # resolved upstream model id
    requested_model: str  # the model as the client sent it
    stream: bool  # the client asked for a stream (always False for count_tokens)


def prepare_native(body: Any, table: ModelTable, *, count_tokens: bool = False) -> NativeRequest:
    """The request to forward for a native body; `InvalidRequest` when it cannot be routed."""
    requested = requested_model(body)
    stream = False
    if not count_tokens:
        flag = body.get("stream")
        if flag is not None and not isinstance(flag, bool):
            invalid_type("stream", "a boolean", flag)
        stream = flag is True
    model = table.resolve(requested)
    forwarded = body if model == requested else {**body, "model": model}
    try:
        payload = orjson.dumps(forwarded)
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes
        raise InvalidRequest(f"The request cannot be forwarded: {exc}.") from None
    return NativeRequest(payload=payload, model=model, requested_model=requested, stream=stream)


def message_usage(message: Any) -> dict[str, Any] | None:
    """The Anthropic `usage` of a native (non-streamed) Message, if it has one that can be counted."""
    return _countable(message.get("usage") if isinstance(message, dict) else None)


def _countable(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    try:
        return checked_usage(usage)
    except UpstreamError as exc:  # metering never breaks a reply the client is reading
        log.warning("native reply usage left unmetered: %s", exc.message)
        return None


class NativeUsage:
    """Usage of a native stream, read from its events as they are forwarded unchanged.

    `message_start` carries the input counts, `message_delta` the cumulative final ones (a null
    count leaves the earlier one standing). Only those two events are parsed.
    """

    __slots__ = ("_usage",)

    def __init__(self) -> None:
        self._usage: dict[str, Any] | None = None

    @property
    def usage(self) -> dict[str, Any] | None:
        """Anthropic's usage so far; None before `message_start`."""
        return self._usage

    @property
    def tokens(self) -> Usage | None:
        """The same as the gateway meters it; None before `message_start`."""
        return None if self._usage is None else Usage.from_anthropic(self._usage)

    def feed(self, event: str, data: bytes) -> None:
        # An event without an `event:` line is named by its payload's type; the rest go unparsed.
        anonymous = event == "message" and any(name in data for name in _USAGE_NAMES)
        if event not in _USAGE_EVENTS and not anonymous:
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # metering never breaks a stream the client is reading
        if not isinstance(payload, dict):
            return
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            usage = message_usage(message)
            if usage is not None:
                self._usage = dict(usage)
        elif kind == "message_delta":
            usage = _countable(payload.get("usage"))
            if usage is not None:
                current = self._usage if self._usage is not None else {}
                current.update((key, value) for key, value in usage.items() if value is not None)
                self._usage = current


_USAGE_EVENTS: Final = ("message_start", "message_delta")
_USAGE_NAMES: Final = tuple(name.encode() for name in _USAGE_EVENTS)

# The gateway's own error types → Anthropic's (anthropic.types.shared.ErrorType). A refused
# upstream key is the gateway's fault, not the client's: api_error, never authentication_error.
_ANTHROPIC_TYPES: Final[dict[str, str]] = {
    "invalid_request_error": "invalid_request_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "overloaded_error": "overloaded_error",
    "timeout_error": "timeout_error",
}


def _error_payload(error: ProxyError) -> dict[str, Any]:
    # A 413 stays invalid_request_error: the SDK's ErrorType has no request_too_large.
    kind = "authentication_error" if error.status_code == 401 else _ANTHROPIC_TYPES.get(error.type, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_error(error: ProxyError) -> bytes:
    """The error response body an Anthropic client expects: ``{"type": "error", "error": {...}}``."""
    return orjson.dumps(_error_payload(error))


def anthropic_error_event(error: ProxyError) -> bytes:
    """The same as an SSE ``error`` event, for a native stream that fails after its first byte."""
    return b"event: error\ndata: " + orjson.dumps(_error_payload(error)) + b"\n\n"
