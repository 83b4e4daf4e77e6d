"""The load generator of open10000, in a process of its own: N streams at once, each on its own
connection, every one checked in full; one JSON summary on stdout.

A separate process so that 10,000 sockets, their reads and their checks take neither the bench's
event loop nor its file descriptors, and its CPU is not the bench's. It raises its own
file-descriptor soft limit to the hard one.

Run: ``python -m bench.loadgen --port P --request FILE --dialect openai --count N --ramp S --limit S``
(``FILE`` holds the whole raw HTTP request, as ``bench.client.build_request`` makes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from bench.client import CLIENT_ERRORS, one
from bench.procs import raise_fd_limit
from bench.targets import Dialect, check_reply

MARKER = "LOADGEN_JSON "
OPENING = 512  # streams awaiting their response head at once: well inside uvicorn's listen backlog (2048)


async def streams(
    port: int, raw: bytes, dialect: Dialect, count: int, ramp: float, limit_s: float, opening: int = OPENING
) -> dict[str, Any]:
    """``count`` streams started evenly over ``ramp`` seconds at the earliest, and with at most
    ``opening`` of them waiting for their response head at any moment: a gateway whose event loop
    falls behind slows the ramp instead of overflowing its listen queue (the kernel then resets
    connections nobody will ever accept, which would measure the queue, not the gateway). Each
    reply is checked, then dropped. ``peak_open`` says how many were open at once."""
    durations: list[float] = []
    firsts: list[float] = []
    reasons: Counter[str] = Counter()
    open_now = peak_open = 0
    gate = asyncio.Semaphore(opening)
    last_started = 0.0

    async def run(index: int) -> None:
        nonlocal open_now, peak_open, last_started
        await asyncio.sleep(ramp * index / count)
        await gate.acquire()
        released = False

        def headed() -> None:
            nonlocal released
            if not released:
                released = True
                gate.release()

        open_now += 1
        peak_open = max(peak_open, open_now)
        last_started = time.monotonic() - started
        try:
            reply = await one(port, raw, limit_s, on_head=headed)
        except CLIENT_ERRORS as exc:
            reasons[f"{type(exc).__name__}: {exc}"[:120]] += 1
            return
        finally:
            headed()
            open_now -= 1
        problem = check_reply(dialect, True, reply.status, reply.body)
        if problem:
            reasons[problem[:120]] += 1
            return
        durations.append(reply.total)
        firsts.append(reply.ttfb)

    started = time.monotonic()
    await asyncio.gather(*(run(i) for i in range(count)))
    return {
        "streams": count,
        "completed": len(durations),
        "peak_open": peak_open,
        "seconds": time.monotonic() - started,
        "ramp_s": last_started,  # when the last stream started: longer than asked when the gateway lagged
        "durations_s": sorted(durations),
        "ttfb_s": sorted(firsts),
        "failures": dict(reasons.most_common(3)),
    }


def run_loadgen(
    port: int, raw: bytes, dialect: Dialect, count: int, ramp: float, limit_s: float, workdir: Path
) -> dict[str, Any]:
    """Run the load generator as a child process and return its summary (``error`` if it failed)."""
    request = workdir / "loadgen-request.http"
    request.write_bytes(raw)
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--request", str(request)]
    argv += ["--dialect", dialect, "--count", str(count), "--ramp", str(ramp), "--limit", str(limit_s)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=ramp + limit_s + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return cast(dict[str, Any], json.loads(line[len(MARKER) :]))
    return {"error": f"load generator exited {done.returncode}: {done.stderr.strip()[-300:]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description="many concurrent checked streams (open10000's load)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request", type=Path, required=True, help="file with the raw HTTP request")
    parser.add_argument("--dialect", choices=["anthropic", "openai", "responses"], required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which the streams start")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds each stream may take")
    args = parser.parse_args()
    raise_fd_limit()
    coro = streams(args.port, args.request.read_bytes(), args.dialect, args.count, args.ramp, args.limit)
    try:
        import uvloop
    except ImportError:
        summary = asyncio.run(coro)
    else:
        summary = uvloop.run(coro)
    # uvloop may leave stdout non-blocking: a summary longer than the pipe's buffer (10,000 stream
    # durations) would then be cut short. Blocking again, it is written whole.
    os.set_blocking(sys.stdout.fileno(), True)
    print(MARKER + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
