"""Command line: ``python -m proxy serve|check-config|simulator`` (also installed as ``claude-proxy``)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import uvicorn
import yaml
from starlette.types import ASGIApp

from proxy import logs, server
from proxy.config import ConfigError, Settings, load_settings
from proxy.keys import StoreError, keys_stored
from proxy.keys.cli import register as register_keys
from proxy.keys.sqlite_store import StoreInUse, claim_for_gateway
from proxy.keys.store import is_redis_url, redact_url, sqlite_path
from proxy.upstream.keypool import label

log = logging.getLogger("proxy")


def app_factory() -> ASGIApp:
    """Builds the gateway from the environment; uvicorn calls this in every worker process."""
    from proxy.app import create_app

    settings = load_settings()
    logs.setup(settings.log_level, settings.log_format)  # each worker process configures its own logging
    app: ASGIApp = create_app(settings, drain_on_signal=True)
    if settings.simulating:
        from proxy.simulator.marker import MarkSimulatorAnswers

        app = MarkSimulatorAnswers(app)
    # Everything imported so far lives as long as the process: keep the collector from rescanning it,
    # and collect the young generation less often (the hot path allocates many short-lived objects).
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    return app


def check_can_serve(settings: Settings) -> None:
    """Every reason ``serve`` has to refuse a configuration. ``check-config`` runs this same function,
    so the two cannot disagree. Raises ``ConfigError``."""
    settings.check_can_serve(stored_keys=keys_stored(settings.store))


def serve(args: argparse.Namespace) -> int:
    if args.config:
        # Workers are separate processes that read settings again; the environment carries the path.
        os.environ["PROXY_CONFIG"] = args.config
    settings = load_settings(host=args.host, port=args.port, workers=args.workers)
    check_can_serve(settings)
    logs.setup(settings.log_level, settings.log_format)
    if not is_redis_url(settings.store):
        _claim_sqlite_store(settings)
    server.run(settings)
    return 0


def _claim_sqlite_store(settings: Settings) -> None:
    """One gateway process per SQLite file, as its limits assume (see proxy.keys.sqlite_store). Taken
    here, in the process that stays for the whole run, so ``--workers`` share the one claim."""
    try:
        claim_for_gateway(sqlite_path(settings.store))
    except StoreInUse as exc:
        if not settings.allow_per_process_limits:
            raise ConfigError(
                f"{exc}. Each gateway process enforces rpm, tpm and token budgets on its own, so two on one "
                "file would each admit up to a key's whole budget. Use PROXY_STORE=redis://host:6379/0 to "
                "share one store (and its limits) between gateways, or give each gateway its own file; or "
                "accept per-process limits with PROXY_ALLOW_PER_PROCESS_LIMITS=true."
            ) from None
        log.warning("%s: PROXY_ALLOW_PER_PROCESS_LIMITS is set, so limits and budgets hold per process only", exc)
    if settings.workers > 1:
        log.warning(
            "%d workers on the SQLite key store %s (PROXY_ALLOW_PER_PROCESS_LIMITS): each enforces rpm, tpm "
            "and token budgets on its own, so a key can get %d times its budget; use PROXY_STORE=redis://… "
            "for limits shared across workers and replicas",
            settings.workers,
            settings.store,
            settings.workers,
        )


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print the effective settings, secrets masked. Exits 2 when
    ``serve`` would refuse it."""
    settings = load_settings(args.config, host=args.host, port=args.port, workers=args.workers)
    effective = settings.model_dump(mode="json")
    effective["simulating"] = settings.simulating
    effective["anthropic_api_key"] = [
        {"key": label(k.secret()), "weight": k.weight} for k in settings.anthropic_api_key
    ]
    # URLs may carry credentials (redis://:password@host, https://user:password@host).
    effective["store"] = redact_url(settings.store)
    effective["anthropic_base_url"] = redact_url(settings.anthropic_base_url)
    print(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True), end="")
    check_can_serve(settings)
    return 0


def simulator(args: argparse.Namespace) -> int:
    from proxy.simulator import create_app as create_simulator

    logs.setup("info", "text")
    app = create_simulator(api_key=args.api_key, event_delay=args.event_delay)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False)
    return 0


def port(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: ports are 0-65535")
    return value


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


SERVE_HELP = """\
environment (the YAML file's settings can also be set as PROXY_<NAME>):
  ANTHROPIC_API_KEY       upstream key(s) to Anthropic, comma-separated for a pool
  ANTHROPIC_BASE_URL      upstream base URL (default https://api.anthropic.com)
  PROXY_API_KEYS          client keys the gateway accepts, comma-separated
  PROXY_ADMIN_KEY         enables the /admin/ key API with this key
  PROXY_STORE             key store: a SQLite path (default ./claude-proxy.db) or redis://host:port/db
  PROXY_CONFIG            YAML settings file (same as --config)
  PROXY_ALLOW_ANONYMOUS   true: serve a non-loopback address without client keys
  PROXY_SIMULATE          true: answer from the built-in simulator on purpose

simulator mode: without ANTHROPIC_API_KEY, answers come from a built-in simulator of the Messages
API, not from Claude, and every response carries `x-claude-proxy-simulator: 1`. That needs no key
and no network on 127.0.0.1; on any other address serve refuses to start unless PROXY_SIMULATE=true.
check-config exits 2 for every configuration serve refuses.
"""


def _package_version() -> str:
    try:
        return version("claude-proxy")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _add_bind_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML settings file (default: $PROXY_CONFIG)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=port, help="port, 0-65535 (default 8080)")
    parser.add_argument("--workers", type=positive, help="worker processes (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-proxy", description="An OpenAI-compatible gateway for Claude.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "serve",
        help="serve the gateway",
        description="Serve the OpenAI-compatible gateway.",
        epilog=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_bind_arguments(run)
    run.set_defaults(handler=serve)

    register_keys(commands)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print the effective settings",
        description="Validate the configuration and print the effective settings, secrets masked. "
        "Exits 2 when serve would refuse the configuration (with the same flags).",
    )
    _add_bind_arguments(check)
    check.set_defaults(handler=check_config)

    sim = commands.add_parser("simulator", help="serve the built-in Messages API simulator over HTTP")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=port, default=8081)
    sim.add_argument("--api-key", help="accept only this key (default: any key)")
    sim.add_argument("--event-delay", type=float, default=0.0, help="seconds between stream events")
    sim.set_defaults(handler=simulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:  # no command: say what there is
        parser.print_help()
        return 0
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
