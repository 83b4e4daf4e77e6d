"""Command line: ``python -m proxy serve|simulator`` (also installed as ``claude-proxy``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from proxy.config import ConfigError, load_settings


def app_factory() -> Starlette:
    """Builds the gateway from the environment; uvicorn calls this in every worker process."""
    from proxy.app import create_app

    return create_app(load_settings())


def serve(args: argparse.Namespace) -> int:
    if args.config:
        # Workers are separate processes that read settings again; the environment carries the path.
        os.environ["PROXY_CONFIG"] = args.config
    settings = load_settings(host=args.host, port=args.port, workers=args.workers)
    settings.check_can_serve()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "proxy.__main__:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        # Streams may idle between events; only drop truly idle keep-alive connections.
        timeout_keep_alive=30,
    )
    return 0


def simulator(args: argparse.Namespace) -> int:
    from proxy.simulator import create_app as create_simulator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_simulator(api_key=args.api_key, event_delay=args.event_delay)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-proxy", description="An OpenAI-compatible gateway for Claude.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="serve the gateway")
    run.add_argument("--config", help="YAML settings file (default: $PROXY_CONFIG)")
    run.add_argument("--host", help="bind address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default 8080)")
    run.add_argument("--workers", type=int, help="worker processes (default 1)")
    run.set_defaults(handler=serve)

    sim = commands.add_parser("simulator", help="serve the built-in Messages API simulator over HTTP")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8081)
    sim.add_argument("--api-key", help="accept only this key (default: any key)")
    sim.add_argument("--event-delay", type=float, default=0.0, help="seconds between stream events")
    sim.set_defaults(handler=simulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
