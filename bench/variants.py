"""The differently configured claude-proxy gateways of the variant scenarios (``VARIANTS`` in
scenarios.py): each runs c32's load and is reported over the plain gateway's c32 of the same round.

* ``limits-sqlite`` — the client key has rpm, tpm and a daily token budget (a ``client_keys:`` row
  of the config file), the key store is SQLite (the default); every request is admitted against
  the limits and settled into the ledger. The limits are far above what c32 reaches, so nothing is
  refused: the scenario measures what enforcing them costs.
* ``limits-redis`` — the same key on a Redis store (``PROXY_STORE=redis://…``), a private
  redis-server without persistence on a free port.
* ``workers2`` — ``--workers 2`` (no limits; SQLite with ``PROXY_ALLOW_PER_PROCESS_LIMITS``, which
  the gateway requires for several workers on SQLite).
* ``tracing`` — ``PROXY_TRACING=1`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``bench/otlp_sink.py``.
  A gateway that does not trace (it refuses the setting, or exports nothing) makes the scenario
  "n/a", with the reason, not a failure of the run.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import LOOPBACK, Service, Services, StartError, free_port, http_call, redis_ping
from bench.targets import REPO, Target, clean_env, start_claude_proxy

LIMITED_KEY = "bench-limited-key-0123456789"
LIMITED_KEY_ENV = "BENCH_LIMITED_KEY"
# Far above anything two cores reach (c32 ~2-4k rps = ~240k rpm), so the limits cost, never refuse.
LIMITS = {"rpm": 100_000_000, "tpm": 10_000_000_000, "daily_tokens": 1_000_000_000_000}
SPANS_WAIT_S = 8.0  # the OTLP batch exporter's default delay is 5 s
NOT_AVAILABLE = "n/a: "


@dataclass
class Variant:
    name: str
    target: Target | None
    problem: str | None = None  # why there is no target; starts with "n/a: " when not supported
    info: dict[str, Any] | None = None


def limited_config() -> dict[str, Any]:
    return {"client_keys": [{"name": "bench-limited", "secret_env": LIMITED_KEY_ENV, **LIMITS}]}


def start_redis(services: Services, workdir: Path) -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    return services.start(
        "redis", argv, port=port, env=clean_env(), cwd=workdir, health_path="", timeout=15, probe=redis_ping
    )


def start_sink(services: Services, workdir: Path) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)]
    env = clean_env(PYTHONPATH=str(REPO))
    return services.start("otlp-sink", argv, port=port, env=env, cwd=workdir, health_path="/healthz", timeout=20)


def sink_requests(sink: Service) -> int:
    status, body = http_call(sink.port, "GET", "/_bench/stats")
    return int(json.loads(body)["requests"]) if status == 200 else 0


def _gateway(
    services: Services,
    workdir: Path,
    upstream: Service,
    name: str,
    max_in_flight: int,
    **options: Any,
) -> Target:
    target, _ = start_claude_proxy(
        services, workdir, upstream, transport=None, max_in_flight=max_in_flight, label=name, **options
    )
    target.name = name
    return target


def start_variant(services: Services, workdir: Path, upstream: Service, name: str, max_in_flight: int) -> Variant:
    """Start ``name``'s gateway (and what it needs); a Variant without target says why not."""
    limited_env = {LIMITED_KEY_ENV: LIMITED_KEY}
    limited: dict[str, Any] = {"config": limited_config(), "env": limited_env, "key": LIMITED_KEY}
    try:
        if name == "limits-sqlite":
            return _limited(name, _gateway(services, workdir, upstream, name, max_in_flight, **limited))
        if name == "limits-redis":
            redis = start_redis(services, workdir)
            url = f"redis://{LOOPBACK}:{redis.port}/0"
            limited["env"] = {**limited_env, "PROXY_STORE": url}
            return _limited(name, _gateway(services, workdir, upstream, name, max_in_flight, **limited))
        if name == "workers2":
            env = {"PROXY_ALLOW_PER_PROCESS_LIMITS": "true"}
            return Variant(name, _gateway(services, workdir, upstream, name, max_in_flight, env=env, workers=2))
        if name == "tracing":
            return _tracing(services, workdir, upstream, max_in_flight)
    except StartError as exc:
        reason = str(exc).splitlines()[0][:200]
        return Variant(name, None, (NOT_AVAILABLE if name == "tracing" else "") + f"did not start: {reason}")
    raise ValueError(f"unknown variant {name!r}")


def _limited(name: str, target: Target) -> Variant:
    """The variant, once its answers show the key's limits are enforced (OpenAI's rate-limit headers)."""
    connection = http.client.HTTPConnection(LOOPBACK, target.port, timeout=30)
    try:
        connection.request("POST", target.path, body=target.body, headers=target.headers)
        reply = connection.getresponse()
        reply.read()
        limit = reply.getheader("x-ratelimit-limit-requests")
    finally:
        connection.close()
    if limit != str(LIMITS["rpm"]):
        return Variant(
            name, None, f"the limited key's answer says x-ratelimit-limit-requests {limit!r}, not the rpm set"
        )
    return Variant(name, target)


def _tracing(services: Services, workdir: Path, upstream: Service, max_in_flight: int) -> Variant:
    sink = start_sink(services, workdir)
    env = {
        "PROXY_TRACING": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{sink.port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    target = _gateway(services, workdir, upstream, "tracing", max_in_flight, env=env)
    problem = target.verify()
    if problem is None and not _eventually(lambda: sink_requests(sink) > 0, SPANS_WAIT_S):
        services.stop(target.service)
        return Variant(
            "tracing",
            None,
            f"{NOT_AVAILABLE}with PROXY_TRACING=1 the gateway exported no spans to the sink within "
            f"{SPANS_WAIT_S:g} s of two requests (it does not trace yet)",
        )
    return Variant("tracing", target, info={"sink": sink})


def _eventually(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()
