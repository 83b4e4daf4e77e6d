"""Settings: defaults, then the YAML file, then the environment (the environment wins).

Every setting is documented, with its default, in ``config.example.yaml``. The handful of
environment variables fixed by the interface (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``,
``PROXY_API_KEYS``, ``PROXY_CONFIG``, ``PROXY_STORE``, ``PROXY_ADMIN_KEY``) are named explicitly;
any other top-level scalar can be set as ``PROXY_<NAME>`` (e.g. ``PROXY_PORT=9000``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from proxy.keys.records import ClientKeyConfig, keys_from_config
from proxy.keys.responses import DEFAULT_MAX_STORED_BYTES, DEFAULT_RETENTION
from proxy.keys.store import is_redis_url
from proxy.models import CapsRow, ModelTable
from proxy.tracing.extra import INSTALL_HINT, installed


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and how to fix it."""


def _split_csv(value: Any) -> Any:
    # Environment variables carry lists as "a,b,c"; YAML may carry a list or the same string.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


KeyList = Annotated[list[SecretStr], NoDecode]


class UpstreamKeySetting(BaseModel):
    """One Anthropic key of the pool: given inline, or named by the environment variable holding it."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr | None = None
    env: str | None = None
    weight: int = Field(1, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"key": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> UpstreamKeySetting:
        if (self.key is None) == (self.env is None):
            raise ValueError("give each upstream key as `key:` or `env:`, not both or neither")
        if self.env is not None and not os.environ.get(self.env):
            raise ValueError(f"environment variable {self.env} (named by an upstream key) is not set")
        return self

    def secret(self) -> str:
        if self.key is not None:
            return self.key.get_secret_value()
        return os.environ[self.env or ""]


class UpstreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["aiohttp", "httpx", "httpx2"] = Field(
        "aiohttp",
        description="the HTTP client for the upstream: aiohttp (the fastest under load; see bench/README.md), "
        "httpx, or httpx2 (pip install 'claude-proxy[httpx2]')",
    )
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection to the upstream")
    first_byte_timeout: float = Field(600.0, gt=0, description="seconds to wait for the upstream's response headers")
    idle_timeout: float = Field(
        300.0, gt=0, description="seconds allowed between two reads of an upstream body or stream"
    )
    request_timeout: float = Field(
        600.0, gt=0, description="deadline for a whole request (a stream: until its first byte), retries included"
    )
    max_attempts: int = Field(3, ge=1, le=10, description="upstream attempts per request, retries included")
    retry_deadline: float = Field(60.0, gt=0, description="seconds after which no new retry starts")
    max_backoff: float = Field(8.0, gt=0, description="longest exponential-backoff sleep between two attempts")
    max_retry_after: float = Field(
        20.0, ge=0, description="longest upstream retry-after honoured; a longer one is answered at once"
    )
    max_retry_hint: float = Field(
        3600.0,
        gt=0,
        description="longest upstream retry-after believed (a key rests that long, a client is told to wait that "
        "long); a longer one counts as this long",
    )
    max_response_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="largest upstream body read (non-streamed); a larger one is a 502 and its connection closed",
    )
    max_event_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="largest single upstream stream event buffered; a larger one ends the stream with an error",
    )
    max_in_flight: int = Field(
        512, ge=1, description="upstream calls in flight at once; beyond it new requests get 503 at once"
    )

    @field_validator("transport")
    @classmethod
    def _transport_installed(cls, value: str) -> str:
        if value == "httpx2" and importlib.util.find_spec("httpx2") is None:
            raise ValueError("httpx2 is not installed: pip install 'claude-proxy[httpx2]'")
        return value


class ShutdownSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drain_delay: float = Field(
        5.0,
        ge=0,
        description="after SIGTERM, seconds /readyz answers 503 while still accepting (load balancers notice)",
    )
    grace_period: float = Field(
        30.0, ge=0, description="then, seconds in-flight requests and streams may take to finish"
    )


class ResponsesSettings(BaseModel):
    """Stored Responses (``store: true`` on /v1/responses), kept in the key store (``store``)."""

    model_config = ConfigDict(extra="forbid")

    retention: float = Field(
        DEFAULT_RETENTION,
        gt=0,
        allow_inf_nan=False,
        description="seconds a stored response is kept for previous_response_id and GET (OpenAI keeps 30 days)",
    )
    max_stored_bytes: int = Field(
        DEFAULT_MAX_STORED_BYTES,
        ge=1024,
        description="largest stored response (its input, output and response object as JSON); a larger one is "
        "answered but not stored, as with store: false",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROXY_",
        extra="forbid",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    log_payloads: bool = False
    tracing: bool = Field(
        False,
        description="export OpenTelemetry traces over OTLP/HTTP, configured by the standard OTEL_* variables "
        f"(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...); needs {INSTALL_HINT}",
    )

    anthropic_api_key: Annotated[list[UpstreamKeySetting], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str = Field(
        "https://api.anthropic.com",
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url"),
    )
    anthropic_version: str = "2026-10-21"

    api_keys: KeyList = Field(default_factory=list, validation_alias=AliasChoices("PROXY_API_KEYS", "api_keys"))
    allow_anonymous: bool = False
    store: str = Field("./claude-proxy.db", validation_alias=AliasChoices("PROXY_STORE", "store"))
    admin_key: SecretStr | None = Field(None, validation_alias=AliasChoices("PROXY_ADMIN_KEY", "admin_key"))
    allow_per_process_limits: bool = Field(
        False,
        description="allow several gateway processes on one SQLite store (--workers N, or a second gateway on "
        "the file); each then enforces rpm, tpm and token budgets on its own, so a key can get N times its "
        "budget. Limits shared by every process and replica need PROXY_STORE=redis://…",
    )
    client_keys: list[ClientKeyConfig] = Field(default_factory=list)
    prices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    bad_key_max_failures: int = Field(10, ge=1, description="bad keys one address may send per window")
    bad_key_window: float = Field(60.0, gt=0, description="seconds of that window")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("FORWARDED_ALLOW_IPS", "PROXY_FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
        description="addresses or networks (or *) of reverse proxies whose X-Forwarded-For is believed; "
        "empty: nobody's, the client is the peer address",
    )

    simulate: bool | None = Field(
        None,
        description="answer from the built-in simulator: true on purpose (required on a non-loopback bind), "
        "false never; unset: when no ANTHROPIC_API_KEY is set",
    )
    max_n: int = Field(8, ge=1, le=128, description="largest `n` (choices per request) a client may ask for")
    max_messages: int = Field(
        100_000, ge=1, description="messages one chat request may hold (the Messages API's own limit); then 400"
    )
    max_content_blocks: int = Field(
        200_000,
        ge=1,
        description="content parts, tool calls and thinking blocks one chat request may hold in all; then 400",
    )
    max_tools: int = Field(
        10_000, ge=1, description="tool (or function) definitions one chat request may hold; then 400"
    )
    auto_cache: bool = False
    strict_fields: bool = Field(
        False,
        description="refuse (400, naming the field) a request field the gateway would ignore or adapt, "
        "instead of serving it and naming the field in the x-claude-proxy-dropped header",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    request_head_timeout: float = Field(
        30.0, gt=0, description="seconds a client may take to send a request's head (and to start one); then closed"
    )
    request_body_timeout: float = Field(
        300.0, gt=0, description="seconds a client may take to send a request's body; then 408 and closed"
    )
    models_cache_seconds: float = Field(300.0, ge=0)
    models_refresh_interval: float = Field(
        3600.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds between two reads of the upstream's model list (capabilities, lifecycle), in the "
        "background from start-up on; a failed read keeps the last good data and is retried sooner. 0: never "
        "read it on a schedule (GET /v1/models still does)",
    )
    models_startup_wait: float = Field(
        2.0,
        ge=0,
        allow_inf_nan=False,
        description="longest start-up wait for the first read of the model list; after it the gateway serves "
        "with its shipped model table while the read goes on in the background",
    )
    model_aliases: dict[str, str] = Field(default_factory=dict)
    models: dict[str, CapsRow] = Field(default_factory=dict)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)

    @model_validator(mode="after")
    def _config_keys_resolve(self) -> Settings:
        keys_from_config(self.client_keys)  # a secret_env that is not set fails here, at start-up
        return self

    @field_validator("tracing")
    @classmethod
    def _tracing_installed(cls, value: bool) -> bool:
        if value and not installed():
            raise ValueError(f"tracing is on but OpenTelemetry is not installed: {INSTALL_HINT}")
        return value

    @field_validator("anthropic_api_key", "api_keys", "forwarded_allow_ips", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; putting env first makes the environment win.
        return (env_settings, init_settings)

    # --- derived views -------------------------------------------------------------

    @property
    def simulating(self) -> bool:
        return self.simulate if self.simulate is not None else not self.anthropic_api_key

    @property
    def bind_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def model_table(self) -> ModelTable:
        return ModelTable.with_overrides(self.models, self.model_aliases)

    def check_can_serve(self, stored_keys: bool = False) -> None:
        """Refuse configurations that are unsafe to serve; ``serve`` and ``check-config`` both call this,
        so what one refuses the other reports. ``stored_keys``: whether the key store holds any key."""
        problems = [
            problem
            for problem in (self._open_to_all(stored_keys), self._simulating_in_public(), self._limits_per_process())
            if problem
        ]
        if problems:
            raise ConfigError("\n".join(problems))

    def _open_to_all(self, stored_keys: bool) -> str | None:
        if self.api_keys or self.client_keys or stored_keys or self.allow_anonymous or self.bind_is_loopback:
            return None
        return (
            f"refusing to serve on {self.host}:{self.port} without client keys: anyone who can reach "
            "this address could spend your Anthropic credit. Set PROXY_API_KEYS=key1,key2 (or `api_keys:` "
            "in the config file), or opt in to anonymous access explicitly with PROXY_ALLOW_ANONYMOUS=true."
        )

    def _simulating_in_public(self) -> str | None:
        # A missing secret (an empty ANTHROPIC_API_KEY) must not turn a public gateway into a simulator
        # that answers 200 to everyone; on loopback it is the out-of-the-box demo mode.
        if not self.simulating or self.simulate is True or self.bind_is_loopback:
            return None
        return (
            f"refusing to serve on {self.host}:{self.port} from the built-in simulator: ANTHROPIC_API_KEY is "
            "empty or unset, so every answer would be simulated, not Claude's. Set ANTHROPIC_API_KEY (or "
            "`anthropic_api_key:` in the config file), or serve the simulator on purpose with PROXY_SIMULATE=true."
        )

    def _limits_per_process(self) -> str | None:
        if self.workers == 1 or self.allow_per_process_limits or is_redis_url(self.store):
            return None
        return (
            f"refusing to run {self.workers} workers on the SQLite key store {self.store}: each worker would "
            f"enforce rpm, tpm and token budgets on its own, so a key could use {self.workers} times its budget. "
            "Use PROXY_STORE=redis://host:6379/0 for limits shared by every worker and replica, or accept "
            "per-process limits with PROXY_ALLOW_PER_PROCESS_LIMITS=true."
        )


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (``--config`` or ``PROXY_CONFIG``), then the environment, then ``overrides``."""
    path = config_file or os.environ.get("PROXY_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        file_values = loaded or {}
    try:
        settings = _with_overrides(Settings(**file_values), overrides)
        settings.model_table()  # validates the model rows now rather than on the first request
    except ValidationError as exc:
        problems = "; ".join(f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings


def _with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """``settings`` with the command line's values, which win over the environment, validated like
    every other source (``model_copy`` would not: ``--port 99999`` would reach the socket)."""
    given = {name: value for name, value in overrides.items() if value is not None}
    if not given:
        return settings
    # Assigned one by one, as a model with validate_assignment would: validating a whole new Settings
    # would read the environment again, and it would win.
    updated = settings.model_copy()
    for name, value in given.items():
        Settings.__pydantic_validator__.validate_assignment(updated, name, value)
    return updated


def _path(loc: tuple[int | str, ...]) -> str:
    """``("upstream", "max_attempts")`` → ``upstream.max_attempts``; list positions as ``[i]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"
