"""`innominatus up`, `serve` and `migrate`: the commands that run the platform itself."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from innominatus.kit.config import SERVICES, Settings

SERVABLE = (*SERVICES, "gateway")


def add_commands(subparsers) -> None:
    up = subparsers.add_parser(
        "up",
        help="run the whole platform in one process (embedded defaults)",
        description="Run the five services and the gateway in one process, each on its own port over mTLS. "
        "Uses SQLite files and in-process Rego unless INNOMINATUS_DATABASE_URL / INNOMINATUS_OPA_URL are set.",
    )
    up.add_argument("--data-dir", type=Path, default=None, help="state directory (default ./.innominatus)")
    up.add_argument("--port", type=int, default=None, help="gateway port (default 8080; 0 picks a free port)")
    up.set_defaults(func=cmd_up)

    serve = subparsers.add_parser("serve", help="run one service (production)")
    serve.add_argument("service", choices=SERVABLE)
    serve.add_argument("--listen", default=None, help="host:port to listen on (default INNOMINATUS_LISTEN or 0.0.0.0:50051; "
                       "for the gateway INNOMINATUS_GATEWAY_LISTEN)")
    serve.set_defaults(func=cmd_serve)

    migrate = subparsers.add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument("--service", choices=SERVICES, action="append", help="only this service (repeatable)")
    migrate.set_defaults(func=cmd_migrate)


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings.from_env()
    if data_dir is not None:
        settings = settings.with_changes(data_dir=data_dir)
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    from innominatus.kit.logs import configure

    settings = _settings(args.data_dir)
    configure(settings.log_level)
    port = args.port if args.port is not None else int(settings.gateway_listen.rsplit(":", 1)[1])
    return asyncio.run(_up(settings, port))


async def _up(settings: Settings, port: int) -> int:
    from innominatus.kit.embedded import EmbeddedPlatform
    from innominatus.kit.server import run_until_signalled

    started = time.monotonic()
    bootstrap_file = settings.data_dir / "bootstrap-admin.json"
    first_start = not bootstrap_file.exists()
    platform = EmbeddedPlatform(settings)
    try:
        await platform.start(gateway_port=port)
    except OSError as exc:
        await platform.stop()
        print(f"error: could not start the platform: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    lines = [
        f"innominatus is up in {elapsed:.1f}s",
        f"  gateway:    {platform.gateway_url}  (API under /api/v1, OpenAPI at /api/v1/openapi.json)",
        f"  endpoints:  {settings.data_dir / 'endpoints.json'}",
    ]
    if first_start and bootstrap_file.exists():
        lines.append(f"  first start: the admin's password is in {bootstrap_file} (mode 0600); it is shown only there")
    lines.append(f"  log in:     innominatus login --server {platform.gateway_url} --username admin --password-stdin")
    print("\n".join(lines), flush=True)
    await run_until_signalled(platform.stop)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from innominatus.kit.logs import configure

    settings = _settings()
    configure(settings.log_level, service=args.service)
    listen = args.listen or os.environ.get("INNOMINATUS_LISTEN")
    if args.service == "gateway":
        # The gateway listens on INNOMINATUS_GATEWAY_LISTEN unless --listen names another.
        if args.listen:
            settings = settings.with_changes(gateway_listen=args.listen)
    listen = listen or "0.0.0.0:50051"
    return asyncio.run(_serve(args.service, settings, listen))


async def _serve(service: str, settings: Settings, listen: str) -> int:
    from innominatus.kit.server import ServiceHost, load_definition, run_until_signalled

    if service == "gateway":
        from innominatus.gateway.app import serve

        await serve(settings)
        return 0
    if settings.metrics_listen:
        from prometheus_client import start_http_server

        metrics_host, _, metrics_port = settings.metrics_listen.rpartition(":")
        start_http_server(int(metrics_port), addr=metrics_host or "0.0.0.0")
    host = ServiceHost(load_definition(service), settings)
    await host.start(listen)
    await run_until_signalled(host.stop)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from innominatus.kit.db import Database

    settings = _settings()
    for name in args.service or SERVICES:
        Database(name, settings.database_url_for(name)).migrate()
        print(f"{name}: migrated")
    return 0
