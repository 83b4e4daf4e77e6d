"""``claude-proxy keys …``: manage client keys in the store the gateway reads (``PROXY_STORE``).

    keys create --name NAME [--models GLOB,…] [--rpm N] [--tpm N] [--daily-tokens N]
                [--monthly-tokens N] [--expires ISO8601] [--metadata JSON] [--disabled]
    keys list [--json]
    keys revoke NAME
    keys disable NAME | keys enable NAME
    keys usage [NAME] [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--json]
    keys hash                 read a secret on stdin, print its SHA-256 (for `sha256:` in client_keys)

Each takes ``--config FILE`` (default ``$PROXY_CONFIG``) and ``--store URL`` (default: the
settings' ``store``). ``create`` prints the new secret as its last line; it is not stored anywhere
and cannot be shown again. Running gateways see created, revoked and disabled keys within a few
seconds, without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, TextIO

import orjson
from pydantic import ValidationError

from proxy.keys.admin import usage_summary
from proxy.keys.backends import open_store
from proxy.keys.records import STATIC_NAME_RE, ClientKeyRecord, NewKey, hash_secret, iso, new_record
from proxy.keys.store import (
    KeyExists,
    KeyNotFound,
    KeyRevoked,
    KeyStore,
    StoreError,
    day_of,
    redact_url,
)


class CommandError(Exception):
    """A usage error the user can fix; printed without a traceback."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``keys`` command group to an argparse ``add_subparsers()`` object."""
    keys: argparse.ArgumentParser = subparsers.add_parser(
        "keys",
        help="manage client keys: create, list, revoke, usage",
        description="Manage client keys in the store the gateway reads (PROXY_STORE). Running gateways see "
        "created, revoked and disabled keys within a few seconds.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML settings file (default: $PROXY_CONFIG)")
    common.add_argument("--store", help="key store URL (default: PROXY_STORE or the config's `store`)")
    commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND")

    create = commands.add_parser("create", parents=[common], help="create a key and print its secret")
    create.add_argument("--name", required=True, help="unique name: letters, digits, '.', '_', '-'")
    create.add_argument("--models", help="comma-separated globs of allowed models (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--daily-tokens", type=int, help="token budget per UTC day")
    create.add_argument("--monthly-tokens", type=int, help="token budget per UTC month")
    create.add_argument("--expires", help="expiry as ISO 8601, e.g. 2027-01-01T00:00:00Z (UTC if no offset)")
    create.add_argument("--metadata", help="a JSON object kept with the key")
    create.add_argument("--disabled", action="store_true", help="create the key disabled")

    listing = commands.add_parser("list", parents=[common], help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    revoke = commands.add_parser("revoke", parents=[common], help="revoke a key for good")
    revoke.add_argument("name")
    disable = commands.add_parser("disable", parents=[common], help="refuse a key until it is enabled again")
    disable.add_argument("name")
    enable = commands.add_parser("enable", parents=[common], help="accept a disabled key again")
    enable.add_argument("name")

    usage = commands.add_parser("usage", parents=[common], help="requests, tokens and cost per key, model and day")
    usage.add_argument("name", nargs="?", help="one key (default: all)")
    usage.add_argument("--since", help="first day, YYYY-MM-DD (default: the first of this UTC month)")
    usage.add_argument("--until", help="last day, YYYY-MM-DD (default: today, UTC)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")

    commands.add_parser("hash", help="read a secret on stdin and print its SHA-256, for `sha256:` in client_keys")

    keys.set_defaults(handler=handle, keys_help=keys.print_help)
    return keys


def handle(args: argparse.Namespace) -> int:
    """Runs a parsed ``keys`` command. Reads the store URL from ``--store`` or the settings."""
    if args.keys_command is None:  # bare `keys`: list the commands
        args.keys_help()
        return 0
    if args.keys_command == "hash":
        return _hash(sys.stdin, sys.stdout)
    store_url, config_names = _settings(args)
    try:
        return asyncio.run(_run(args, store_url, config_names, sys.stdout))
    except CommandError as exc:
        print(f"claude-proxy keys: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"claude-proxy keys: {exc}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace) -> tuple[str, set[str]]:
    from proxy.config import load_settings  # lazily: the settings module is heavier than this command

    settings = load_settings(getattr(args, "config", None))
    store_url = getattr(args, "store", None) or settings.store
    rows = getattr(settings, "client_keys", None) or []
    names = {row["name"] if isinstance(row, dict) else getattr(row, "name", "") for row in rows}
    return store_url, {name for name in names if name}


async def _run(args: argparse.Namespace, store_url: str, config_names: set[str], out: TextIO) -> int:
    command = args.keys_command
    store = open_store(store_url, create=command == "create")
    try:
        if command == "create":
            return await _create(args, store, config_names, out)
        if command == "list":
            return await _list(args, store, out)
        if command in ("revoke", "disable", "enable"):
            if args.name in config_names:
                raise CommandError(f"the key {args.name!r} is declared in the config file; change it there")
            if command == "revoke":
                await _refuse_if_revoked(store, args.name)
                record = await store.revoke_key(args.name, datetime.now(UTC))
                print(f"Revoked key {record.name!r}. Running gateways refuse it within a few seconds.", file=out)
            else:
                record = await store.set_enabled(args.name, command == "enable")
                print(f"Key {record.name!r} is {'enabled' if record.enabled else 'disabled'}.", file=out)
            return 0
        if command == "usage":
            return await _usage(args, store, config_names, out)
        raise CommandError(f"unknown command {command!r}")
    finally:
        await store.aclose()


async def _refuse_if_revoked(store: KeyStore, name: str) -> None:
    """Revoking twice is an error to the operator (it changes nothing), like revoking a missing key;
    the store itself keeps revocation idempotent for the admin API's DELETE."""
    record = await store.get_key(name)
    if record is not None and record.revoked_at is not None:
        raise KeyRevoked(f"the key {name!r} was already revoked at {iso(record.revoked_at)}")


def _spec(args: argparse.Namespace) -> NewKey:
    metadata: Any = {}
    if args.metadata:
        try:
            metadata = orjson.loads(args.metadata)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"--metadata is not valid JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise CommandError("--metadata must be a JSON object")
    fields: dict[str, Any] = {
        "name": args.name,
        "models": args.models,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "daily_tokens": args.daily_tokens,
        "monthly_tokens": args.monthly_tokens,
        "expires_at": args.expires,
        "enabled": not args.disabled,
        "metadata": metadata,
    }
    try:
        return NewKey.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(e['loc'][0]).replace('_', '-') if e['loc'] else 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise CommandError(problems.replace("--expires-at", "--expires")) from None


async def _create(args: argparse.Namespace, store: KeyStore, config_names: set[str], out: TextIO) -> int:
    spec = _spec(args)
    if spec.name in config_names:
        raise CommandError(f"a key named {spec.name!r} is declared in the config file")
    try:
        record, secret = new_record(spec, time.time())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        await store.create_key(record)
    except KeyExists as exc:
        raise CommandError(str(exc)) from None
    print(f"Created key {record.name!r} in {redact_url(store.url)}.", file=out)
    print("  " + _limits_line(record), file=out)
    print("Running gateways accept it within a few seconds. The secret below is shown only now:", file=out)
    print(secret, file=out)
    return 0


def _limits_line(record: ClientKeyRecord) -> str:
    def show(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    return (
        f"models: {','.join(record.models) or '*'}  rpm: {show(record.rpm)}  tpm: {show(record.tpm)}  "
        f"daily tokens: {show(record.daily_tokens)}  monthly tokens: {show(record.monthly_tokens)}  "
        f"expires: {iso(record.expires_at) or 'never'}{'' if record.enabled else '  (disabled)'}"
    )


async def _list(args: argparse.Namespace, store: KeyStore, out: TextIO) -> int:
    now = time.time()
    views = [record.view(now) for record in await store.list_keys()]
    if args.json:
        out.write(orjson.dumps(views, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not views:
        print(f"No keys in {redact_url(store.url)}.", file=out)
        return 0
    header = ["NAME", "STATUS", "MODELS", "RPM", "TPM", "DAILY", "MONTHLY", "EXPIRES", "CREATED", "HINT"]
    rows = [
        [
            v["name"],
            v["status"],
            ",".join(v["models"]) or "*",
            _cell(v["rpm"]),
            _cell(v["tpm"]),
            _cell(v["daily_tokens"]),
            _cell(v["monthly_tokens"]),
            _short(v["expires_at"]) or "never",
            _short(v["created_at"]),
            v["hint"] or "",
        ]
        for v in views
    ]
    _table(header, rows, out)
    return 0


def _short(moment: str | None) -> str:
    # 2026-11-25T21:32:14.307222Z -> 2026-11-25T21:32:14Z
    return f"{moment[:19]}Z" if moment else ""


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


def _date(value: str | None, default: str, flag: str) -> str:
    if not value:
        return default
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise CommandError(f"{flag} expects a date as YYYY-MM-DD, not {value!r}") from None


async def _usage(args: argparse.Namespace, store: KeyStore, config_names: set[str], out: TextIO) -> int:
    today = day_of(time.time())
    since = _date(args.since, today[:8] + "01", "--since")
    until = _date(args.until, today, "--until")
    rows = await store.usage(args.name, since, until)
    if args.name is not None and not rows and not await _known(store, config_names, args.name):
        raise KeyNotFound(f"no key named {args.name!r}")
    totals = usage_summary(rows)
    if args.json:
        body = {"key": args.name, "since": since, "until": until, "data": [r.view() for r in rows], "totals": totals}
        out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"Usage from {since} to {until} (UTC){f' for key {args.name!r}' if args.name else ''}:", file=out)
    header = ["DAY", "KEY", "MODEL", "REQUESTS", "INPUT", "OUTPUT", "CACHED", "CACHE WRITES", "COST USD"]
    table = [
        [
            r.day,
            r.key,
            r.model,
            str(r.requests),
            str(r.input_tokens),
            str(r.output_tokens),
            str(r.cached_tokens),
            str(r.cache_write_tokens),
            f"{r.cost_usd:.4f}",
        ]
        for r in rows
    ]
    table.append(
        [
            "TOTAL",
            "",
            "",
            str(totals["requests"]),
            str(totals["input_tokens"]),
            str(totals["output_tokens"]),
            str(totals["cached_tokens"]),
            str(totals["cache_write_tokens"]),
            f"{totals['cost_usd']:.4f}",
        ]
    )
    _table(header, table, out)
    return 0


async def _known(store: KeyStore, config_names: set[str], name: str) -> bool:
    """A key the store or the config file holds, or one of PROXY_API_KEYS (``key-N``), which are in
    neither: usage may still name them (and keys since removed from the config file)."""
    return name in config_names or STATIC_NAME_RE.fullmatch(name) is not None or await store.get_key(name) is not None


def _hash(stdin: TextIO, out: TextIO) -> int:
    secret = stdin.readline().strip()
    if not secret:
        print("claude-proxy keys hash: no secret on stdin", file=sys.stderr)
        return 2
    print(hash_secret(secret), file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m proxy.keys.cli keys …``: the same commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="claude-proxy")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from proxy.config import ConfigError

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
