"""LiteLLM's proxy, the peer claude-proxy is compared with, in its own venv (``bench/.venv-litellm``).

The pin is ``litellm[proxy]==1.110.2``. PyPI does not serve three of that extra's exact pins
(``litellm-proxy==1.110.2`` at all, ``litellm-proxy-extras==0.4.114.post1``,
``litellm-enterprise==0.1.83.post1``), so when the pinned install fails we install the same
``litellm==1.110.2`` wheel, whose package carries the whole proxy server, with the rest of the
extra's requirements from ``bench/litellm-fallback.txt``. The method used is recorded in the results.

It runs as LiteLLM's production docs advise: ``litellm --config … --num_workers 1`` with a master
key, ``set_verbose: false`` and ``LITELLM_LOG=ERROR``; ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps
it from fetching its price list from the internet at start-up (all traffic stays on loopback).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import LOOPBACK, Services, free_port
from bench.targets import LITELLM, MODEL, REPO, Target, clean_env, request_bodies

VERSION = "1.110.2"
PINNED = f"litellm[proxy]=={VERSION}"
VENV = REPO / "bench" / ".venv-litellm"
FALLBACK = REPO / "bench" / "litellm-fallback.txt"
MARKER = VENV / ".bench-install.json"
MASTER_KEY = "sk-bench-key"  # LiteLLM wants master keys to start with sk-
INSTALL_TIMEOUT = 1200.0
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Install:
    ok: bool
    method: str  # "pinned", "fallback" or "" when it failed
    note: str
    seconds: float = 0.0  # time spent installing in this run (0 when the venv was reused)


def _bin(name: str) -> Path:
    return VENV / "bin" / name


def _pip(args: list[str], log: Path) -> bool:
    with log.open("ab") as out:
        done = subprocess.run(
            [str(_bin("python")), "-m", "pip", "install", "--disable-pip-version-check", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    return done.returncode == 0


def _imports_proxy(log: Path) -> bool:
    with log.open("ab") as out:
        done = subprocess.run(
            [str(_bin("python")), "-c", "import litellm.proxy.proxy_server"],
            env=clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR"),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    return done.returncode == 0


def ensure_installed(log_dir: Path) -> Install:
    """Reuse ``bench/.venv-litellm`` when it holds this version; otherwise build it (minutes, once)."""
    if MARKER.exists() and _bin("litellm").exists():
        try:
            recorded = json.loads(MARKER.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("version") == VERSION:
            return Install(True, str(recorded.get("method", "")), f"reused {VENV.relative_to(REPO)}")
    log = log_dir / "litellm-install.log"
    started = time.monotonic()
    print(f"installing {PINNED} into {VENV.relative_to(REPO)} (first run only; log: {log}) …", flush=True)
    try:
        if not _bin("python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        method = "pinned"
        if not _pip(["--quiet", PINNED], log):
            print(f"  {PINNED} cannot be installed from PyPI; using {FALLBACK.relative_to(REPO)}", flush=True)
            method = "fallback"
            if not _pip(["--quiet", "-r", str(FALLBACK)], log):
                return Install(False, "", f"pip failed for {PINNED} and for the fallback list; see {log}")
        if not _imports_proxy(log):
            return Install(False, "", f"litellm {VERSION} installed but its proxy server does not import; see {log}")
    except (OSError, subprocess.SubprocessError) as exc:
        return Install(False, "", f"installing LiteLLM failed: {exc}")
    MARKER.write_text(json.dumps({"version": VERSION, "method": method}))
    return Install(True, method, f"installed ({method})", time.monotonic() - started)


def start(services: Services, workdir: Path, upstream_port: int) -> tuple[Target, dict[str, object]]:
    config: dict[str, object] = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"anthropic/{MODEL}",
                    "api_base": f"http://{LOOPBACK}:{upstream_port}",
                    "api_key": "anything",
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"set_verbose": False, "request_timeout": 600},
    }
    config_path = workdir / "litellm.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    argv = [str(_bin("litellm")), "--config", str(config_path), "--host", LOOPBACK, "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = clean_env(LITELLM_LOG="ERROR", LITELLM_LOCAL_MODEL_COST_MAP="True")
    env.pop("PYTHONPATH", None)
    service = services.start(
        "litellm", argv, port=port, env=env, cwd=workdir, health_path="/health/liveliness", timeout=START_TIMEOUT
    )
    plain, stream = request_bodies()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}
    return Target(LITELLM, service, "/v1/chat/completions", headers, plain, stream, "openai"), config
