"""wrk, the throughput load generator: the same binary and settings against every target.

Each run gets a generated Lua script that sets the POST body and headers and, in ``done``, prints
one JSON line with the request count, error counts and latency percentiles, which we parse.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.procs import LOOPBACK

MARKER = "BENCH_JSON "

_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,' ..
    '"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write and timeout errors
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def ensure_wrk() -> str:
    """wrk from Debian's package, installed on first use when we are root and apt is there."""
    found = wrk_binary()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get update && apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=False,
            timeout=300,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = wrk_binary()
    if not found:
        raise WrkError("wrk is not installed and could not be installed; run: apt-get install -y wrk")
    return found


def wrk_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" [")[0].strip() if first else "unknown"


def write_script(script_dir: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    """The Lua script for one request shape (named by its content, so reruns reuse it)."""
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    text = _LUA.format(body=body.decode(), headers=header_lines, marker=MARKER)
    script = script_dir / f"wrk-{hashlib.sha256(text.encode()).hexdigest()[:12]}.lua"
    script.write_text(text)
    return script


def wrk_argv(binary: str, script: Path, url: str, *, connections: int, seconds: float, timeout_s: float) -> list[str]:
    threads = max(1, min(2, connections))  # two cores: never more load threads than cores
    return [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        url,
    ]


def run_wrk(
    binary: str,
    script_dir: Path,
    *,
    port: int,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    timeout_s: float = 10.0,
) -> WrkResult:
    script = write_script(script_dir, body, headers)
    url = f"http://{LOOPBACK}:{port}{path}"
    argv = wrk_argv(binary, script, url, connections=connections, seconds=seconds, timeout_s=timeout_s)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            break
    else:
        raise WrkError(f"wrk printed no summary (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=int(data["connect"] + data["read"] + data["write"] + data["timeout"]),
        non_2xx=int(data["status"]),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
    )
