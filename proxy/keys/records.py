"""Client keys as data: the stored record, new secrets, and keys declared in the config file.

A client key is a name (unique, safe to log) plus a secret. The secret is shown once, when the key
is created, and kept only as its SHA-256 digest: the secrets are 256-bit random strings, so a plain
SHA-256 is as strong as any password hash here and costs nothing to check on every request.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SECRET_PREFIX = "sk-cp-"
_BASE62 = string.digits + string.ascii_letters
_SECRET_CHARS = 43  # 43 base62 characters carry 256 bits
# Used with ``fullmatch`` only: ``$`` in ``match`` also accepts a trailing "\n" ("team\n" would pass
# as a name that the CLI shows as "team" and no admin URL can reach).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STATIC_NAME_RE = re.compile(r"key-[0-9]+")  # the names PROXY_API_KEYS keys go by
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_METADATA_BYTES = 8192

KeyStatus = Literal["active", "disabled", "expired", "revoked"]
KeySource = Literal["store", "config"]


def new_secret() -> str:
    """A fresh client secret: ``sk-cp-`` and 43 random base62 characters (256 bits)."""
    return SECRET_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(_SECRET_CHARS))


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest a secret is stored and looked up by."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_hint(secret: str) -> str:
    """Enough of a secret to recognise it by (``sk-cp-…AbCd``), not enough to use it."""
    return f"{secret[:6]}…{secret[-4:]}" if len(secret) > 16 else "…"


def utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in the year 10000 in UTC; a ValueError is a 400
        raise ValueError("the moment is outside the years 1-9999 once converted to UTC") from None


def _not_static_name(name: str) -> str:
    if STATIC_NAME_RE.fullmatch(name):
        raise ValueError(f"the name {name!r} is reserved for the keys in PROXY_API_KEYS (key-1, key-2, …)")
    return name


def _model_list(value: Any) -> Any:
    # "claude-haiku-*,claude-sonnet-4-5" (CLI, environment) or a YAML/JSON list.
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class KeyFields(BaseModel):
    """What an operator chooses for a key. Shared by the stored record, the create request (CLI and
    admin API) and the config file rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="unique; letters, digits, '.', '_' and '-', at most 64; safe to log")
    models: tuple[str, ...] = Field(
        default=(), description="glob patterns matched against the model after alias resolution; empty: all"
    )
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens (prompt + completion) per minute")
    daily_tokens: int | None = Field(None, ge=1, description="token budget per UTC day")
    monthly_tokens: int | None = Field(None, ge=1, description="token budget per UTC calendar month")
    expires_at: datetime | None = Field(None, description="after this instant the key is refused (UTC if naive)")
    enabled: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form JSON object, at most 8 KiB")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        return _model_list(value)

    @field_validator("models")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern or any(ch.isspace() for ch in pattern):
                raise ValueError(f"model pattern {pattern!r} must be a non-empty glob without spaces")
        return value

    @field_validator("expires_at")
    @classmethod
    def _expiry_utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(orjson.dumps(value))
        except TypeError as exc:
            raise ValueError(f"metadata must be JSON: {exc}") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes of JSON; at most {MAX_METADATA_BYTES} are kept")
        return value


class NewKey(KeyFields):
    """A request to create a key (``keys create``, ``POST /admin/keys``)."""

    @model_validator(mode="before")
    @classmethod
    def _expires_alias(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "expires" in value and "expires_at" not in value:
            value = dict(value)
            value["expires_at"] = value.pop("expires")
        return value

    @field_validator("name")
    @classmethod
    def _not_static(cls, value: str) -> str:
        return _not_static_name(value)


class ClientKeyRecord(KeyFields):
    """One client key as the gateway knows it. Holds the secret's digest, never the secret."""

    digest: str = Field(description="SHA-256 hex digest of the secret")
    hint: str | None = Field(None, description="the secret's first and last characters, for recognition")
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    source: KeySource = "store"

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX64.fullmatch(value):
            raise ValueError("a key digest is 64 lowercase hex characters (SHA-256)")
        return value

    @field_validator("created_at", "revoked_at")
    @classmethod
    def _moments_utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if not self.enabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at.timestamp() <= now:
            return "expired"
        return "active"

    def view(self, now: float) -> dict[str, Any]:
        """The key as the CLI and admin API show it: everything but the digest."""
        return {
            "object": "client_key",
            "name": self.name,
            "status": self.status(now),
            "source": self.source,
            "hint": self.hint,
            "models": list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "daily_tokens": self.daily_tokens,
            "monthly_tokens": self.monthly_tokens,
            "expires_at": iso(self.expires_at),
            "enabled": self.enabled,
            "metadata": self.metadata,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
        }


def new_record(spec: NewKey, now: float) -> tuple[ClientKeyRecord, str]:
    """A record for ``spec`` and its freshly drawn secret (to show once, then forget)."""
    if spec.expires_at is not None and spec.expires_at.timestamp() <= now:
        raise ValueError(f"expires_at {iso(spec.expires_at)} is already in the past")
    secret = new_secret()
    record = ClientKeyRecord(
        **spec.model_dump(),
        digest=hash_secret(secret),
        hint=secret_hint(secret),
        created_at=utc(now),
    )
    return record, secret


class ClientKeyConfig(KeyFields):
    """One row of the ``client_keys:`` config section.

    The secret never appears in the file: give either ``secret_env``, the name of an environment
    variable holding it, or ``sha256``, its SHA-256 hex digest (``python -m proxy keys hash`` prints
    one). Every other field is optional and means what it means for stored keys::

        client_keys:
          - name: ci-bot
            secret_env: CI_BOT_KEY          # or: sha256: 3f1d…(64 hex)
            models: ["claude-haiku-*"]       # globs, matched after alias resolution; omitted: all
            rpm: 60                          # requests per minute
            tpm: 100000                      # tokens per minute
            daily_tokens: 2000000            # per UTC day
            monthly_tokens: 40000000         # per UTC month
            expires_at: 2027-01-01T00:00:00Z
            enabled: true
            metadata: {team: platform}

    Config keys cannot be revoked through the CLI or the admin API: remove them from the file.
    """

    secret_env: str | None = None
    sha256: str | None = None

    @field_validator("name")
    @classmethod
    def _not_static(cls, value: str) -> str:
        return _not_static_name(value)

    @model_validator(mode="after")
    def _one_secret_source(self) -> ClientKeyConfig:
        if (self.secret_env is None) == (self.sha256 is None):
            raise ValueError(f"client key {self.name!r}: give exactly one of `secret_env:` or `sha256:`")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256.strip().lower()):
            raise ValueError(f"client key {self.name!r}: `sha256:` must be 64 hex characters")
        return self

    def record(self) -> ClientKeyRecord:
        if self.secret_env is not None:
            secret = os.environ.get(self.secret_env, "").strip()
            if not secret:
                raise ValueError(
                    f"client key {self.name!r}: environment variable {self.secret_env} (its `secret_env:`) is not set"
                )
            digest, hint = hash_secret(secret), secret_hint(secret)
        else:
            digest, hint = (self.sha256 or "").strip().lower(), None
        fields = self.model_dump(exclude={"secret_env", "sha256"})
        return ClientKeyRecord(**fields, digest=digest, hint=hint, source="config")


def keys_from_config(rows: Iterable[Mapping[str, Any] | ClientKeyConfig] | None) -> list[ClientKeyRecord]:
    """The ``client_keys:`` section as records. Raises ``ValueError`` naming the row at fault
    (unknown field, missing or unset secret, duplicate name or secret)."""
    records: list[ClientKeyRecord] = []
    names: set[str] = set()
    digests: set[str] = set()
    for index, row in enumerate(rows or ()):
        try:
            config = row if isinstance(row, ClientKeyConfig) else ClientKeyConfig.model_validate(dict(row))
            record = config.record()
        except ValueError as exc:
            raise ValueError(f"client_keys[{index}]: {exc}") from None
        if record.name in names:
            raise ValueError(f"client_keys[{index}]: the name {record.name!r} is used twice")
        if record.digest in digests:
            raise ValueError(f"client_keys[{index}]: {record.name!r} has the same secret as another key")
        names.add(record.name)
        digests.add(record.digest)
        records.append(record)
    return records
