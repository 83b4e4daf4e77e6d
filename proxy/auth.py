"""Reading and checking a client's key: the pieces `proxy.keys.KeyService` authenticates with.

Keys are kept only as SHA-256 digests and compared with ``hmac.compare_digest`` against every
known digest, so neither the stored form nor the timing reveals a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer …`` or ``x-api-key``, as OpenAI and Anthropic clients send it."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


def matching_name(candidate: bytes, known: Iterable[tuple[str, bytes]]) -> str | None:
    """The name whose digest equals ``candidate``, comparing against every one of them: no early
    exit, so the time taken does not depend on which key matched, or whether one did."""
    match: str | None = None
    for name, known_digest in known:
        if hmac.compare_digest(candidate, known_digest):
            match = name
    return match


def redact(key: str) -> str:
    # The same courtesy OpenAI extends: enough to recognise your own key, not enough to use it.
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}…{key[-4:]}"
