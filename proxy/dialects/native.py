"""Anthropic-native clients as a dialect: `POST /v1/messages` and `/v1/messages/count_tokens`, forwarded.

The body is checked only as far as routing needs (a JSON object naming a model), the model alias
is resolved, and the rest goes upstream as the client wrote it: it is the client's contract with
the Messages API, judged upstream, so a native client gets every feature the API has, including
ones this gateway does not translate. The answer, an upstream error and the stream come back as
the upstream sent them; only the usage is read on the way (a usage whose counts are not
non-negative integers is left unmetered and logged, never breaking the client's reply). Errors the
gateway makes itself are in Anthropic's shape, which Anthropic SDKs parse. `count_tokens` counts
against the key's requests per minute like every request; it reserves and books no tokens
(counting is free upstream).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from proxy.dialects.base import Answer, Dialect, Endpoint, Inbound, Outbound
from proxy.errors import InvalidRequest, ProxyError, UpstreamError, stream_ended_early
from proxy.translate.checks import invalid_type, requested_model
from proxy.translate.errors import from_upstream
from proxy.translators import StreamTranslator
from proxy.upstream import UpstreamReply
from proxy.usage import Usage, checked_usage

log = logging.getLogger("proxy.native")

# Headers a native client may set that the upstream should see; credentials are never among them.
FORWARDED_HEADERS: Final = ("anthropic-beta", "anthropic-version")
# Reply headers passed on with the upstream's body.
_PASSED_ON: Final = ("retry-after", "content-type")


class NativeMessages(Dialect):
    endpoints = (
        Endpoint("/v1/messages", "native_messages"),
        Endpoint("/v1/messages/count_tokens", "native_count_tokens", {"count_tokens": True}),
    )
    passthrough = True

    def owns(self, path: str) -> bool:
        return path == "/v1/messages" or path.startswith("/v1/messages/")

    def parse(self, endpoint: Endpoint, body: Any, inbound: Inbound) -> Outbound:
        counting = bool(endpoint.options.get("count_tokens"))
        requested = requested_model(body)
        stream = False
        if not counting:
            flag = body.get("stream")
            if flag is not None and not isinstance(flag, bool):
                invalid_type("stream", "a boolean", flag)
            stream = flag is True
        model = inbound.models.resolve(requested)
        forwarded = body if model == requested else {**body, "model": model}
        try:
            payload = orjson.dumps(forwarded)
        except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes
            raise InvalidRequest(f"The request cannot be forwarded: {exc}.") from None
        headers = {name: inbound.headers[name] for name in FORWARDED_HEADERS if name in inbound.headers}
        return Outbound(
            path=endpoint.path,
            payload=payload,
            model=model,
            stream=stream,
            body=forwarded,
            reserves_tokens=not counting,
            headers=headers,
            hints=counting,
        )

    def answer(self, replies: Sequence[UpstreamReply], outbound: Outbound) -> Answer:
        (reply,) = replies
        usage = None
        if not outbound.hints:  # count_tokens books nothing
            try:
                counted = message_usage(reply.json())
            except orjson.JSONDecodeError:
                counted = None
            usage = Usage.from_anthropic(counted) if counted else None
        return Answer(reply.body, usage, headers=_passed_on(reply.headers))

    def relay(self, outbound: Outbound) -> StreamTranslator:
        return NativeStream()

    def upstream_failure(self, reply: UpstreamReply) -> ProxyError | Answer:
        if reply.status == 401:  # the gateway's own upstream key was refused: not the client's fault
            return from_upstream(reply.status, reply.body, reply.headers)
        return Answer(reply.body, status=reply.status, headers=_passed_on(reply.headers))

    def error_body(self, error: ProxyError) -> bytes:
        return anthropic_error(error)


def _passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in _PASSED_ON if name in headers}


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


class NativeStream:
    """A native stream, forwarded unchanged (the dialect is a passthrough): this watches its events
    for the usage and for its end.

    `message_start` carries the input counts, `message_delta` the cumulative final ones (a null
    count leaves the earlier one standing). Only those two events are parsed. A stream that closes
    before `message_stop` gets the gateway's one "ended early" error event, as in every dialect.
    """

    __slots__ = ("_done", "_usage")

    def __init__(self) -> None:
        self._usage: dict[str, Any] | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def usage(self) -> dict[str, Any] | None:
        """Anthropic's usage so far; None before `message_start`."""
        return self._usage

    @property
    def tokens(self) -> Usage | None:
        """The same as the gateway meters it; None before `message_start`."""
        return None if self._usage is None else Usage.from_anthropic(self._usage)

    def feed(self, event: str, data: bytes) -> bytes:
        if event == "message_stop" or event == "error":
            self._done = True
            return b""
        # An event without an `event:` line is named by its payload's type; the rest go unparsed.
        anonymous = event == "message" and any(name in data for name in _WATCHED_NAMES)
        if event not in _USAGE_EVENTS and not anonymous:
            return b""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""  # metering never breaks a stream the client is reading
        if not isinstance(payload, dict):
            return b""
        kind = payload.get("type")
        if kind == "message_start":
            usage = message_usage(payload.get("message"))
            if usage is not None:
                self._usage = dict(usage)
        elif kind == "message_delta":
            usage = _countable(payload.get("usage"))
            if usage is not None:
                current = self._usage if self._usage is not None else {}
                current.update((key, value) for key, value in usage.items() if value is not None)
                self._usage = current
        elif kind in ("message_stop", "error"):
            self._done = True
        return b""

    def end(self) -> bytes:
        return b"" if self._done else self.fail(stream_ended_early())

    def fail(self, error: ProxyError) -> bytes:
        if self._done:
            return b""
        self._done = True
        return anthropic_error_event(error)


_USAGE_EVENTS: Final = ("message_start", "message_delta")
_WATCHED_NAMES: Final = (b"message_start", b"message_delta", b"message_stop", b'"error"')

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
