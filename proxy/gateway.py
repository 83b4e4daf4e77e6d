"""``Gateway``: what every request handler needs, built once at start-up.

Its own module so that the pipeline (``proxy/pipeline.py``), the other routes and the app factory
(``proxy/app.py``) all depend on it, and it on none of them: no import cycle.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson
import pydantic
from starlette.requests import ClientDisconnect, Request

from proxy.abuse import BadKeyThrottle, refuse_if_throttled
from proxy.config import Settings
from proxy.errors import AuthenticationFailed, BodyTooLarge, InvalidRequest, UpstreamError
from proxy.exchange import Exchange, exchange_of
from proxy.keys import KeyService, Principal
from proxy.models import ModelTable
from proxy.models_upstream import upstream_rows
from proxy.translate.errors import from_upstream
from proxy.upstream import Upstream

log = logging.getLogger("proxy")


class Gateway:
    """What every request handler needs, built once at start-up."""

    def __init__(self, settings: Settings, upstream: Upstream, keys: KeyService) -> None:
        self.settings = settings
        # Swapped whole by `refresh_models` (the upstream's capabilities); read it once per request.
        self.models: ModelTable = settings.model_table()
        self.keys = keys
        self.upstream = upstream
        self.bad_keys = BadKeyThrottle(settings.bad_key_max_failures, settings.bad_key_window)
        self._model_list: tuple[float, list[dict[str, Any]]] | None = None

    async def authenticate(self, request: Request, exchange: Exchange | None = None) -> Principal:
        """The caller's key, checked before anything else. An address that keeps sending wrong keys
        is throttled: its guesses get 429 whatever they are, while keys already used from it keep
        working (see `proxy.abuse`)."""
        address = request.client.host if request.client else None
        try:
            principal = await self.keys.authenticate(request.headers)
        except AuthenticationFailed as exc:
            if exc.code == "missing_api_key":  # a misconfigured client, not a guess
                raise
            refuse_if_throttled(self.bad_keys.refuse_bad_key(address))
            raise
        refuse_if_throttled(self.bad_keys.refuse_valid_key(address, principal.name))
        (exchange or exchange_of(request.scope)).key_name = principal.name
        return principal

    async def read_json(self, request: Request) -> Any:
        """The request body parsed as JSON, refusing bodies over the configured limit early."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
        except ClientDisconnect:
            raise InvalidRequest("the client closed the connection before sending the whole body") from None
        raw = b"".join(parts)
        if not raw:
            raise InvalidRequest("The request body is empty; send a JSON object.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's models in OpenAI's shape, cached briefly, plus the configured aliases. Retired
        models are left out: the upstream lists them only as a record, they serve nothing."""
        now = time.monotonic()
        if self._model_list and now - self._model_list[0] < self.settings.models_cache_seconds:
            return self._model_list[1]
        return await self.refresh_models()

    async def refresh_models(self) -> list[dict[str, Any]]:
        """Read the upstream's model list and install what it says of each model into ``models`` (a new
        table, swapped in whole); returns the client-facing list. Fails with the upstream's error, or a
        502 for a malformed list, leaving ``models`` as it was."""
        infos = await _fetch_model_infos(self.upstream)
        self.models = self.models.with_upstream(upstream_rows(infos))
        models = [_openai_model(info) for info in infos if info.get("lifecycle") != "retired"]
        for alias in self.models.aliases:
            models.append({"id": alias, "object": "model", "created": 0, "owned_by": "claude-proxy"})
        self._model_list = (time.monotonic(), models)
        return models


# Every lifecycle stage: without the filter the API leaves retired models out, and the gateway needs
# them to say "retired" rather than "unknown" (``lifecycle[]``, URL-encoded, is how the anthropic SDK sends a list).
MODELS_PATH = "/v1/models?limit=1000&lifecycle%5B%5D=active&lifecycle%5B%5D=deprecated&lifecycle%5B%5D=retired"
MAX_MODEL_PAGES = 20  # 20,000 models; a cursor that never ends must not keep the refresh busy forever


async def _fetch_model_infos(upstream: Upstream) -> list[dict[str, Any]]:
    """Every ``ModelInfo`` the upstream lists, following ``has_more`` / ``last_id``."""
    infos: list[dict[str, Any]] = []
    path = MODELS_PATH
    for _ in range(MAX_MODEL_PAGES):
        reply = await upstream.request("GET", path)
        if reply.status != 200:
            raise from_upstream(reply.status, reply.body, reply.headers)
        page = _upstream_models(reply.body)
        infos += [{**(entry.model_extra or {}), "id": entry.id, "created_at": entry.created_at} for entry in page.data]
        if page.has_more is not True or not isinstance(page.last_id, str) or not page.last_id:
            break
        path = f"{MODELS_PATH}&after_id={quote(page.last_id, safe='')}"
    return infos


class _UpstreamModel(pydantic.BaseModel):
    """One entry of the upstream's model list: ``id`` checked, the rest kept as sent for
    ``proxy.models_upstream`` to read defensively."""

    model_config = pydantic.ConfigDict(strict=True, extra="allow")

    id: str = pydantic.Field(min_length=1)
    created_at: Any = None  # cosmetic: one that cannot be read is shown as 0, not refused


class _UpstreamModelList(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)

    data: list[_UpstreamModel]
    has_more: Any = False
    last_id: Any = None


def _upstream_models(body: bytes) -> _UpstreamModelList:
    """The upstream's ``GET /v1/models`` answer checked; anything but a list of models is a 502."""
    try:
        return _UpstreamModelList.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[:3]  # a list of 1000 bad entries stays one line
        log.warning("the upstream model list is malformed (%d errors): %s", exc.error_count(), first)
        raise UpstreamError("the upstream API answered the model list with malformed data") from None


def _openai_model(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": info["id"],
        "object": "model",
        "created": _epoch(info.get("created_at")),
        "owned_by": "anthropic",
    }


def _epoch(rfc3339: Any) -> int:
    if not isinstance(rfc3339, str):
        return 0
    try:
        return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"The request body is larger than this gateway accepts ({limit} bytes).")
