"""Command line: ``python -m proxy serve|check-config|simulator`` (also installed as ``claude-proxy``)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
import yaml
from starlette.applications import Starlette

from proxy import logs, server
from proxy.config import ConfigError, load_settings
from proxy.keypool import label
from proxy.keys import keys_stored
from proxy.keys.cli import register as register_keys
from proxy.keys.store import is_redis_url


def app_factory() -> Starlette:
    """Builds the gateway from the environment; uvicorn calls this in every worker process."""
    from proxy.app import create_app

    settings = load_settings()
    logs.setup(settings.log_level, settings.log_format)  # each worker process configures its own logging
    app = create_app(settings, drain_on_signal=True)
    # Everything imported so far lives as long as the process: keep the collector from rescanning it,
    # and collect the young generation less often (the hot path allocates many short-lived objects).
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    return app


def serve(args: argparse.Namespace) -> int:
    if args.config:
        # Workers are separate processes that read settings again; the environment carries the path.
        os.environ["PROXY_CONFIG"] = args.config
    settings = load_settings(host=args.host, port=args.port, workers=args.workers)
    settings.check_can_serve(stored_keys=keys_stored(settings.store))
    logs.setup(settings.log_level, settings.log_format)
    if settings.workers > 1 and not is_redis_url(settings.store):
        logging.getLogger("proxy").warning(
            "with %d workers on a SQLite key store, rpm/tpm limits are enforced per worker; "
            "use PROXY_STORE=redis://… for exact limits across workers and replicas",
            settings.workers,
        )
    server.run(settings)
    return 0


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print the effective settings, secrets masked."""
    settings = load_settings(args.config)
    effective = settings.model_dump(mode="json")
    effective["simulating"] = settings.simulating
    effective["anthropic_api_key"] = [
        {"key": label(k.secret()), "weight": k.weight} for k in settings.anthropic_api_key
    ]
    print(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True), end="")
    try:
        settings.check_can_serve()
    except ConfigError as exc:
        print(f"warning: {exc}", file=sys.stderr)
    return 0


def simulator(args: argparse.Namespace) -> int:
    from proxy.simulator import create_app as create_simulator

    logs.setup("info", "text")
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

    register_keys(commands)

    check = commands.add_parser("check-config", help="validate the configuration and print the effective settings")
    check.add_argument("--config", help="YAML settings file (default: $PROXY_CONFIG)")
    check.set_defaults(handler=check_config)

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
