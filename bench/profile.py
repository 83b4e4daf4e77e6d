"""Where claude-proxy spends its CPU: py-spy samples it while wrk drives it — under c32, resp-c32,
s32 and, when that gateway runs, c32 with a rate-limited key (limits-sqlite): ``profile_all``.

py-spy runs with ``--native`` so that time in C shows too, and writes collapsed stacks
(``--format raw``; speedscope.app opens them). Each sample is charged to one place: the cyclic
garbage collector, a libc call (socket reads and writes, mostly), the event loop's own C code, or
else the innermost Python frame (C code called from Python counts for its caller). The summary
sums those places by package and by function, and claude-proxy's own functions inclusively.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import LOOPBACK
from bench.scenarios import Bench
from bench.targets import Target, responses_variant
from bench.wrk import write_script, wrk_argv

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
GC = "garbage collector (CPython gc)"
LIBC = "libc calls (socket send/recv, clock)"
EVENT_LOOP = "event loop (uvloop/libuv C code)"


def profile_all(
    bench: Bench,
    gateway: Target,
    limited: Target | None,
    directory: Path,
    pattern: str,
    log: Callable[[str], None],
    seconds: float = 8.0,
) -> dict[str, dict[str, Any]]:
    """One py-spy profile per load that an issue-18 figure depends on; collapsed stacks in
    ``directory`` (``pattern`` formatted with the load's name)."""
    loads: list[tuple[str, Target, bool]] = [
        ("c32", gateway, False),
        ("resp-c32", responses_variant(gateway, store=False), False),
        ("s32", gateway, True),
    ]
    if limited is not None:
        loads.append(("limits-sqlite", limited, False))
    profiles = {}
    for name, target, stream in loads:
        log(f"  profiling claude-proxy under {name}")
        profiles[name] = profile_load(bench, target, directory / pattern.format(name), seconds, stream=stream)
        if profiles[name].get("error"):
            log(f"  profile failed: {profiles[name]['error']}")
    return profiles


def profile_load(
    bench: Bench, target: Target, out: Path, seconds: float = 10.0, *, stream: bool = False
) -> dict[str, Any]:
    """py-spy on ``target`` for ``seconds`` while wrk drives it with 32 connections (streams when
    ``stream``)."""
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    script = write_script(bench.workdir, target.stream_body if stream else target.body, target.headers)
    url = f"http://{LOOPBACK}:{target.port}{target.path}"
    argv = wrk_argv(bench.wrk, script, url, connections=32, seconds=seconds + 3, timeout_s=10)
    load = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        record = [pyspy, "record", "--pid", str(target.service.pid), "--duration", str(round(seconds))]
        # Blocking sampling (the default): --nonblocking reads a running process and garbles stacks.
        record += ["--rate", "100", "--native", "--format", "raw", "--output", str(out)]
        done = subprocess.run(record, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except BaseException:
        load.kill()
        load.wait()
        raise
    load.wait(timeout=seconds + 30)
    if done.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed: {(done.stderr or done.stdout).strip()[-300:]}"}
    summary = summarize(out)
    summary["collapsed_stacks"] = str(out)
    return summary


def _parse(frame: str) -> tuple[str, str]:
    found = _FRAME.match(frame)
    if not found:
        return frame, ""
    return found["func"], found["file"]


def _is_python(file: str) -> bool:
    return file.endswith(".py") or file.startswith("<frozen")


def _package(file: str) -> str:
    if file.startswith("<"):
        return "python internals"
    return file.split("/", 1)[0].removesuffix(".py")


def _place(frames: list[tuple[str, str]]) -> tuple[str, str]:
    """(package, function) a sample is charged to."""
    last_py = max((i for i, (_, file) in enumerate(frames) if _is_python(file)), default=-1)
    native_tail = frames[last_py + 1 :]
    if any(func.startswith("gc_collect") for func, _ in native_tail):
        return GC, GC
    if native_tail and "libc." in native_tail[-1][1]:
        return LIBC, LIBC
    if last_py < 0:
        return EVENT_LOOP, EVENT_LOOP
    func, file = frames[last_py]
    if func == "Runner.run" and file.startswith("asyncio/"):  # uvloop's run_forever, below it all
        return EVENT_LOOP, EVENT_LOOP
    return _package(file), f"{func} ({file})"


def summarize(collapsed: Path, top: int = 15) -> dict[str, Any]:
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    inclusive_proxy: Counter[str] = Counter()
    inclusive_package: Counter[str] = Counter()
    total = partial = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";")]
        if not any(func in ("_run_module_as_main", "<module>") for func, _ in frames[:4]):
            partial += count  # a stack py-spy could not read to its root: left out
            continue
        total += count
        package, function = _place(frames)
        by_package[package] += count
        by_function[function] += count
        for name in {f"{func} ({file})" for func, file in frames if file.startswith("proxy/")}:
            inclusive_proxy[name] += count
        if package == GC:
            inclusive_package[GC] += count
        for name in {_package(file) for _, file in frames if _is_python(file) and not file.startswith("<")}:
            inclusive_package[name] += count

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "partial_stacks_left_out": partial,
        "self_by_package_pct": shares(by_package),
        "self_by_function_pct": shares(by_function),
        # Time under any frame of the package (its callees included), e.g. all of logging.
        "inclusive_by_package_pct": shares(Counter({k: n for k, n in inclusive_package.items() if n < 0.85 * total})),
        # Start-up frames (``serve``, ``main``…) enclose every sample and say nothing: left out.
        "inclusive_proxy_pct": shares(Counter({k: n for k, n in inclusive_proxy.items() if n < 0.85 * total})),
    }
