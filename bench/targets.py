"""What is measured: the fake upstream itself (direct), claude-proxy, LiteLLM's proxy (its start-up
lives in ``litellm_peer.py``) and, on request, the reference forwarder of ``reference.py``.

A ``Target`` says how to reach one (port, path, headers, request bodies) and how to tell a correct
answer from a wrong one, so every scenario can check what it measured.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bench.fake_upstream import DEFAULT_MODEL, REPLY_TEXT
from bench.procs import LOOPBACK, Service, Services, free_port, http_call

REPO = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODEL
PROMPT = [{"role": "user", "content": "Hello, Claude. Please answer briefly."}]
MAX_TOKENS = 256
CLIENT_KEY = "bench-key"
RESPONSES_PATH = "/v1/responses"
# A Responses stream ends with exactly one of these (no `[DONE]`); only the first means success.
RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")

Dialect = Literal["anthropic", "openai", "responses"]

DIRECT = "direct"
CLAUDE_PROXY = "claude-proxy"
LITELLM = "litellm"
REFERENCE = "reference"


@dataclass
class Target:
    name: str
    service: Service  # whose memory is sampled: the upstream itself for ``direct``
    path: str
    headers: dict[str, str]
    body: bytes
    stream_body: bytes
    dialect: Dialect
    # The dialect of streamed answers when it differs: the reference's bare relay passes the
    # upstream's Messages events through untranslated, whatever the client asked.
    stream_dialect: Dialect | None = None

    @property
    def port(self) -> int:
        return self.service.port

    def check(self, stream: bool, status: int, body: bytes) -> str | None:
        """None when the reply is the fake upstream's answer, translated; else what is wrong."""
        return check_reply((self.stream_dialect or self.dialect) if stream else self.dialect, stream, status, body)

    def verify(self) -> str | None:
        """One plain and one streamed request; None when both come back right."""
        for stream, body in ((False, self.body), (True, self.stream_body)):
            try:
                status, reply = http_call(self.port, "POST", self.path, body, self.headers, timeout=30)
            except (OSError, http.client.HTTPException) as exc:
                return f"{'stream' if stream else 'request'} failed: {exc!r}"
            problem = self.check(stream, status, reply)
            if problem:
                return f"{'stream' if stream else 'request'}: {problem}"
        return None


def check_reply(dialect: Dialect, stream: bool, status: int, body: bytes) -> str | None:
    """None when ``body`` is the fake upstream's answer in ``dialect``: every event of a stream is
    parsed and its text joined; else what is wrong. A function, so the separate load generator of
    open10000 checks with the same code."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    try:
        text = _stream_text(body, dialect) if stream else _message_text(body, dialect)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unreadable reply ({exc!r}): {body[:200]!r}"
    if text != REPLY_TEXT:
        return f"wrong text {text[:80]!r}…"
    return None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def request_bodies() -> tuple[bytes, bytes]:
    """The same conversation as the OpenAI and the Messages request (identical JSON here)."""
    plain = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": PROMPT}
    return _dumps(plain), _dumps({**plain, "stream": True})


def responses_bodies(*, store: bool) -> tuple[bytes, bytes]:
    """The same conversation as a Responses request: the one user turn as the `input` string and
    the same output cap. ``store: false`` measures the translation path alone; ``store`` left out
    takes the API's default (true), so the gateway also keeps the response."""
    plain: dict[str, Any] = {"model": MODEL, "input": PROMPT[0]["content"], "max_output_tokens": MAX_TOKENS}
    if not store:
        plain["store"] = False
    return _dumps(plain), _dumps({**plain, "stream": True})


def responses_variant(target: Target, *, store: bool) -> Target:
    """The same gateway (same process, port and key) asked through `POST /v1/responses`."""
    plain, stream = responses_bodies(store=store)
    return replace(target, path=RESPONSES_PATH, body=plain, stream_body=stream, dialect="responses")


def _message_text(body: bytes, dialect: str) -> str:
    data = json.loads(body)
    if dialect == "anthropic":
        return "".join(block["text"] for block in data["content"] if block["type"] == "text")
    if dialect == "responses":
        if data["status"] != "completed":
            raise ValueError(f"response status {data['status']!r}")
        return _responses_output_text(data)
    return str(data["choices"][0]["message"]["content"])


def _responses_output_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def _responses_stream_text(datas: list[bytes]) -> str:
    """The text of a Responses stream, checked: strictly increasing `sequence_number`s, one
    terminal event and it is the last and `response.completed`, whose response holds the same text
    as the deltas."""
    events = [json.loads(data) for data in datas]
    numbers = [event["sequence_number"] for event in events]
    if any(later <= earlier for earlier, later in itertools.pairwise(numbers)):
        raise ValueError("sequence_number does not increase strictly")
    terminal = [event["type"] for event in events if event["type"] in RESPONSES_TERMINAL]
    if terminal != ["response.completed"] or events[-1]["type"] != "response.completed":
        raise ValueError(f"terminal events {terminal}, last event {events[-1]['type'] if events else None!r}")
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    if _responses_output_text(events[-1]["response"]) != text:
        raise ValueError("the completed response's text differs from the deltas'")
    return text


def _stream_text(body: bytes, dialect: str) -> str:
    parts: list[str] = []
    datas = [line[5:].strip() for line in body.split(b"\n") if line.startswith(b"data:")]
    if dialect == "responses":
        return _responses_stream_text(datas)
    if dialect == "openai":
        if not datas or datas[-1] != b"[DONE]":
            raise ValueError("stream did not end with [DONE]")
        for data in datas[:-1]:
            chunk = json.loads(data)
            if "error" in chunk:
                raise ValueError(f"error chunk {chunk['error']}")
            for choice in chunk.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts)
    events = [json.loads(data) for data in datas]
    if not events or events[-1]["type"] != "message_stop":
        raise ValueError("stream did not end with message_stop")
    return "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")


def clean_env(**extra: str) -> dict[str, str]:
    """The benchmark's environment without settings that would change what is measured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROXY_", "ANTHROPIC_", "LITELLM_", "OPENAI_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.update(extra)
    return env


def start_fake_upstream(services: Services, workdir: Path) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)]
    env = clean_env(PYTHONPATH=str(REPO))
    return services.start("fake-upstream", argv, port=port, env=env, cwd=workdir, health_path="/healthz", timeout=20)


def set_event_delay(upstream: Service, seconds: float, pings: int = 0) -> None:
    """The fake upstream's gap between stream events, and how many ping events a slow stream adds."""
    settings = {"event_delay": seconds, "pings": pings}
    status, body = http_call(upstream.port, "POST", "/_bench/config", _dumps(settings))
    if status != 200:
        raise RuntimeError(f"fake upstream refused event_delay={seconds}: {body!r}")


def direct_target(upstream: Service) -> Target:
    plain, stream = request_bodies()
    headers = {"Content-Type": "application/json", "x-api-key": "anything", "anthropic-version": "2023-06-01"}
    return Target(DIRECT, upstream, "/v1/messages", headers, plain, stream, "anthropic")


def default_transport() -> str:
    """The upstream transport claude-proxy ships with, read from its settings model."""
    try:
        from proxy.config import UpstreamSettings

        return str(UpstreamSettings().transport)
    except Exception:  # the gateway's code is not ours to fix here; report what we can
        return "default"


def start_claude_proxy(
    services: Services,
    workdir: Path,
    upstream: Service,
    *,
    transport: str | None,
    max_in_flight: int,
    code: Path = REPO,
    label: str | None = None,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
    key: str = CLIENT_KEY,
) -> tuple[Target, dict[str, Any]]:
    """claude-proxy as shipped (uvicorn with uvloop + httptools, its own logging; one worker unless
    ``workers``), with ``upstream.max_in_flight`` raised to hold the open-streams scenarios and,
    when given, the upstream transport. ``config`` adds top-level settings (e.g. ``client_keys``),
    ``env`` environment variables (e.g. ``PROXY_STORE``, ``PROXY_TRACING``); ``key`` is the client
    key the target sends. ``code`` is the checkout whose ``proxy`` package runs (another commit's
    work tree for --against)."""
    upstream_settings: dict[str, Any] = {"max_in_flight": max_in_flight}
    if transport is not None:
        upstream_settings["transport"] = transport
    settings = {**(config or {}), "upstream": upstream_settings}
    label = label or transport or "default"
    config_path = workdir / f"claude-proxy-{label}.yaml"
    config_path.write_text(json.dumps(settings))  # JSON is YAML
    port = free_port()
    argv = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--config", str(config_path)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    environment = clean_env(
        PYTHONPATH=str(code),
        ANTHROPIC_API_KEY="anything",
        ANTHROPIC_BASE_URL=f"http://{LOOPBACK}:{upstream.port}",
        PROXY_API_KEYS=CLIENT_KEY,
        PROXY_STORE=str(workdir / f"claude-proxy-{label}.db"),
    )
    environment.update(env or {})
    service = services.start(
        f"claude-proxy-{label}", argv, port=port, env=environment, cwd=workdir, health_path="/healthz", timeout=30
    )
    plain, stream = request_bodies()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return Target(CLAUDE_PROXY, service, "/v1/chat/completions", headers, plain, stream, "openai"), settings


def start_reference(services: Services, workdir: Path, upstream: Service) -> Target:
    """The calibration forwarder of bench/reference.py on the same server stack as claude-proxy:
    it translates plain requests (chat and Responses) and relays streams untranslated."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.reference", "--port", str(port)]
    argv += ["--upstream", f"http://{LOOPBACK}:{upstream.port}"]
    env = clean_env(PYTHONPATH=str(REPO))
    service = services.start("reference", argv, port=port, env=env, cwd=workdir, health_path="/healthz", timeout=30)
    plain, stream = request_bodies()
    headers = {"Content-Type": "application/json"}
    path = "/v1/chat/completions"
    return Target(REFERENCE, service, path, headers, plain, stream, "openai", stream_dialect="anthropic")
