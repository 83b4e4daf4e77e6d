"""What the Responses request and response translators share.

- `ToolNames`: the Claude tool names sent upstream → the client's tools (namespaces and custom
  tools are flattened on the way in and restored on the way out).
- `claude_call_id` / `client_call_id`: tool-call ids the client chose → ids Claude accepts
  (``^[a-zA-Z0-9_-]+$``), reversibly.
- `seal_reasoning` / `open_reasoning`: Claude's signed thinking blocks ↔ the opaque
  `encrypted_content` of a reasoning item, so that a client with `store: false` (Codex) can carry
  them between turns and the gateway keeps no state.
- `item_id`: deterministic output item ids.
- `ResponsesRequest`: what the request translator hands the pipeline.

Everything here is pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from proxy.errors import InvalidRequest

__all__ = [
    "CUSTOM_TOOL_INPUT",
    "ResponsesRequest",
    "ToolName",
    "ToolNames",
    "claude_call_id",
    "client_call_id",
    "item_id",
    "open_reasoning",
    "seal_reasoning",
]


# Tool names ------------------------------------------------------------------------------------

# A custom tool (freeform text) becomes a Claude tool taking one string in this field.
CUSTOM_TOOL_INPUT: Final = "input"


@dataclass(frozen=True, slots=True)
class ToolName:
    kind: Literal["function", "custom"]
    name: str  # the client's tool name (inside its namespace, if any)
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class ToolNames:
    by_claude: Mapping[str, ToolName] = field(default_factory=dict)  # Claude tool name → the client's tool

    def client(self, claude_name: str) -> ToolName:
        """The client's tool for a name Claude called; a name the request did not define (the
        model may invent one) comes back as a plain function of that name."""
        found = self.by_claude.get(claude_name)
        return found if found is not None else ToolName("function", claude_name)


# Call ids --------------------------------------------------------------------------------------

_CLAUDE_ID: Final = re.compile(r"[a-zA-Z0-9_-]+")
# Marks an id the gateway encoded. A client id that happens to start with it is encoded too, so
# that decoding is never ambiguous.
_ENCODED: Final = "cpx_"


def claude_call_id(call_id: str) -> str:
    """`call_id` as Claude accepts it: unchanged when it already matches ``^[a-zA-Z0-9_-]+$``
    (every id OpenAI, Codex and Claude make), else ``cpx_`` + its UTF-8 in unpadded base64url."""
    if _CLAUDE_ID.fullmatch(call_id) and not call_id.startswith(_ENCODED):
        return call_id
    return _ENCODED + _b64(call_id.encode("utf-8", "surrogatepass"))


def _b64(raw: bytes) -> str:
    """Unpadded base64url: only characters Claude's id pattern allows."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def client_call_id(claude_id: str) -> str:
    """The inverse of `claude_call_id`; any other id (``toolu_…`` made by Claude) is unchanged."""
    if not claude_id.startswith(_ENCODED):
        return claude_id
    encoded = claude_id[len(_ENCODED) :]
    try:
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return claude_id
    # Only an id `claude_call_id` could have made decodes; anything else is someone else's id.
    return decoded if claude_call_id(decoded) == claude_id else claude_id


# Sealed reasoning -------------------------------------------------------------------------------

# `encrypted_content` = version, then base64url(digest ‖ JSON of the blocks). The digest is not a
# secret: Claude itself verifies each thinking block's signature, so a forged block fails
# upstream. The digest only turns a value that was cut short or altered in transit into a clean
# 400 naming the item, instead of an upstream 400 about `messages.N.content.M`.
_SEAL_VERSION: Final = "cpr1."
_DIGEST_SIZE: Final = 16
_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "thinking": ("type", "thinking", "signature"),
    "redacted_thinking": ("type", "data"),
}


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST_SIZE, person=b"cproxy-reasoning").digest()


def seal_reasoning(blocks: Sequence[Mapping[str, Any]]) -> str:
    """Claude's `thinking` / `redacted_thinking` blocks → an opaque `encrypted_content` string.
    Each block keeps exactly the fields Claude needs back, their values untouched."""
    kept = []
    for block in blocks:
        names = _FIELDS.get(str(block.get("type")))
        if names is None:
            raise ValueError(f"not a thinking block: {block.get('type')!r}")
        kept.append({name: block[name] for name in names})
    payload = orjson.dumps(kept)
    return _SEAL_VERSION + _b64(_digest(payload) + payload)


def open_reasoning(value: Any, path: str) -> list[dict[str, Any]]:
    """The blocks `seal_reasoning` sealed in `value`. Anything it did not make (another type,
    version, digest or shape) is an `InvalidRequest` naming `path`, never another exception."""
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid type for '{path}': expected a string, but got a {type(value).__name__} instead.",
            param=path,
            code="invalid_type",
        )
    if not value.startswith(_SEAL_VERSION):
        _unreadable(path, "it was not produced by this gateway (or by a version it no longer reads)")
    encoded = value[len(_SEAL_VERSION) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        _unreadable(path, "it is not valid base64")
    if _b64(raw) != encoded:  # characters base64 decoding skips, or bits it ignores: a changed value
        _unreadable(path, "it was altered or truncated")
    digest, payload = raw[:_DIGEST_SIZE], raw[_DIGEST_SIZE:]
    if len(digest) != _DIGEST_SIZE or digest != _digest(payload):
        _unreadable(path, "it was altered or truncated")
    try:
        blocks = orjson.loads(payload)
    except orjson.JSONDecodeError:
        _unreadable(path, "its content is malformed")
    if not isinstance(blocks, list) or not all(_is_sealed_block(block) for block in blocks):
        _unreadable(path, "its content is malformed")
    opened: list[dict[str, Any]] = blocks
    return opened


def _is_sealed_block(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    names = _FIELDS.get(str(block.get("type")))
    return names is not None and set(block) == set(names) and all(isinstance(block[name], str) for name in names)


def _unreadable(path: str, why: str) -> Any:
    raise InvalidRequest(
        f"Invalid value for '{path}': the encrypted reasoning cannot be read: {why}. Send the "
        "reasoning item back exactly as this gateway returned it, or leave it out.",
        param=path,
        code="invalid_encrypted_content",
    )


# Item ids ---------------------------------------------------------------------------------------


def item_id(prefix: str, response_id: str, index: int) -> str:
    """A deterministic output item id: `prefix` ("msg", "fc", "rs", "ctc", "ws"; a trailing "_" is
    optional), the response id without its ``resp_`` prefix, and the item's position. Unique
    within a response (by position) and across responses (response ids are)."""
    body = response_id.removeprefix("resp_")
    return f"{prefix.rstrip('_')}_{body}_{index}"


# The translated request ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    upstream: dict[str, Any]  # the Messages API body; "stream": True iff the client streams
    model: str  # resolved upstream model id
    requested_model: str  # as the client sent it (the Response's `model` echoes this)
    stream: bool
    store: bool  # default True, as OpenAI's API
    include_encrypted_reasoning: bool  # "reasoning.encrypted_content" in `include`
    tool_names: ToolNames
    # This request's own input as input items (a string input → one user message item); kept for
    # storage and /input_items.
    input_items: list[dict[str, Any]]
    # The fields a Response object repeats from its request, with OpenAI's defaults.
    echo: dict[str, Any]
    # Paths of the fields the client sent that did not reach the upstream as sent (ignored or
    # adapted), list positions left out, in body order: `params.dropped_fields`.
    dropped: tuple[str, ...] = ()
