"""Processes the benchmark starts: launch, wait until healthy, sample memory, and always stop them.

Every service runs in its own session (process group), so Ctrl-C in the terminal reaches only the
benchmark, which then stops each service it started by that group's id: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A service did not come up; the message names it and quotes the end of its log."""


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the service and every process below it."""
        return sum(_rss_of(pid) for pid in _process_tree(self.pid))

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the service and every process below it."""
        return sum(_cpu_of(pid) for pid in _process_tree(self.pid))

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM; a second SIGTERM after a second (gateways that drain first stop at once on the
        second signal); SIGKILL if it is still there after ``grace``."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)  # the group this service leads: it and its children
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Services:
    """Every service started in a ``with`` block is stopped when the block ends, however it ends."""

    log_dir: Path
    running: list[Service] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        health_path: str,
        timeout: float,
        probe: Callable[[int], bool] | None = None,
    ) -> Service:
        """Start ``argv`` and wait until ``GET health_path`` answers 200 (or ``probe(port)`` is
        true, for a service that does not speak HTTP)."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, port, process, log_path)
        self.running.append(service)
        try:
            wait_healthy(service, health_path, timeout, probe)
        except StartError:
            self.stop(service)
            raise
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.running:
            self.running.remove(service)

    def stop_all_but(self, *keep: Service) -> None:
        for service in reversed(self.running[:]):
            if service not in keep:
                self.stop(service)

    def stop_all(self) -> None:
        for service in reversed(self.running[:]):
            self.stop(service)

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request on a fresh loopback connection: ``(status, body)``."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_healthy(service: Service, path: str, timeout: float, probe: Callable[[int], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise StartError(f"{service.name} exited with code {service.process.returncode}:\n{service.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if probe is not None:
                if probe(service.port):
                    return
            elif http_call(service.port, "GET", path, timeout=2.0)[0] == 200:
                return
        time.sleep(0.2)
    raise StartError(
        f"{service.name} was not healthy on :{service.port}{path} within {timeout:g}s:\n{service.log_tail()}"
    )


def _process_tree(root: int) -> list[int]:
    found: list[int] = []
    pending = [root]
    while pending and len(found) < 256:
        pid = pending.pop()
        found.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    pending += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def _cpu_of(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; utime and stime are fields 14, 15
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def _rss_of(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a service's RSS on a background thread while a scenario runs; ``peak`` in bytes."""

    def __init__(self, service: Service, interval: float = 0.1) -> None:
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{service.name}", daemon=True)
        self.peak = 0
        self.samples: list[int] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._service.rss_bytes()
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _machine_busy_seconds() -> float:
    """CPU seconds all processors spent running processes since boot (user, nice, system).
    Interrupt time is left out: loopback networking runs there and is charged to no process."""
    user, nice, system = (int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:4])
    return (user + nice + system) / CLOCK_TICKS


def _own_cpu_seconds(services: Sequence[Service]) -> float:
    times = os.times()  # this process, plus children it has waited for (wrk, py-spy)
    own = times.user + times.system + times.children_user + times.children_system
    return own + sum(service.cpu_seconds() for service in services)


class ForeignCpu:
    """How much CPU processes the benchmark did not start used while it measured: the machine's
    busy time less ours. ``share`` is of the whole machine (all cores), 0..1."""

    def __init__(self, services: Sequence[Service]) -> None:
        self._services = list({id(s): s for s in services}.values())
        self.share = 0.0

    def __enter__(self) -> ForeignCpu:
        self._start = (time.monotonic(), _machine_busy_seconds(), _own_cpu_seconds(self._services))
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, own0 = self._start
        wall = time.monotonic() - wall0
        foreign = (_machine_busy_seconds() - busy0) - (_own_cpu_seconds(self._services) - own0)
        self.share = max(0.0, foreign / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the same cleanup runs as for Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit; the services, wrk and the load
    generator inherit it. open10000 needs two sockets per stream in the gateway (~20,000).
    Returns the soft limit (before, after)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, fd_limit()


def fd_limit() -> int:
    """The open-file soft limit this process (and every process it starts) has now."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def redis_ping(port: int) -> bool:
    """True once a redis-server on ``port`` answers PING (its readiness probe)."""
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (TcpExt
    ListenOverflows, machine-wide); 0 where /proc/net/netstat does not say."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0
