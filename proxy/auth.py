"""Client authentication: who is calling, decided before any upstream work.

Keys are kept only as SHA-256 digests and compared with ``hmac.compare_digest`` against every
known digest, so neither the stored form nor the timing reveals a key.

The helpers here (``presented_key``, ``digest``, ``redact``) are shared with ``proxy.keys``, whose
``KeyService`` authenticates these same static keys beside stored and configured client keys, with
model allowlists, rate limits and budgets; ``ClientKeys`` remains for the static keys alone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from proxy.errors import AuthenticationFailed


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller; ``name`` is safe to log, the key itself is never kept."""

    name: str


ANONYMOUS = Identity(name="anonymous")


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


class ClientKeys:
    """The static client keys from ``PROXY_API_KEYS`` / the config file."""

    def __init__(self, keys: Iterable[SecretStr]) -> None:
        self._digests = [(f"key-{i + 1}", digest(k.get_secret_value())) for i, k in enumerate(keys)]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def authenticate(self, headers: Mapping[str, str]) -> Identity:
        if not self._digests:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                code="missing_api_key",
            )
        candidate = digest(key)
        match: str | None = None
        for name, known in self._digests:
            # No early exit: every digest is compared, so timing does not depend on which key matched.
            if hmac.compare_digest(candidate, known):
                match = name
        if match is None:
            raise AuthenticationFailed(f"Incorrect API key provided: {redact(key)}.")
        return Identity(name=match)


def redact(key: str) -> str:
    # The same courtesy OpenAI extends: enough to recognise your own key, not enough to use it.
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}…{key[-4:]}"
