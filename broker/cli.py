"""Command line: `broker serve | migrate | init | token | dev`."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from dotenv import dotenv_values
from fastapi import FastAPI

from broker import auth, config, logs
from broker.adapters import migrate, storage
from broker.app import create_app
from broker.dev import devstack
from broker.domain import errors, policies
from broker.flows import admin
from broker.ops import commands


def app_from_env() -> FastAPI:
    """uvicorn factory: the app configured from the environment."""
    settings = config.load_settings()
    logs.configure(settings.log_level)
    return create_app(settings)


def serve(host: str, port: int, workers: int) -> None:
    """Serve the API with uvicorn (uvloop + httptools when installed)."""
    # Fail here, with a message naming the variable, before uvicorn forks workers.
    policies.load_policies(config.load_settings())
    uvicorn.run(
        "broker.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )


def initialize(settings: config.Settings) -> None:
    """Apply migrations, create the bucket and subscribe it to the broker's webhook targets."""
    print("\n".join(asyncio.run(migrate.run(settings.database_url, "up"))))
    storage.Storage(settings).ensure_bucket(list(settings.s3_notify_arns))
    print(f"bucket {settings.s3_bucket!r} subscribed to {', '.join(settings.s3_notify_arns)}")


def mint_token(env_file: str, subject: str, ttl: int, admin: bool, scope: str | None) -> str:
    """A token signed with BROKER_JWT_SECRET from the environment or `env_file`."""
    secret = os.environ.get("BROKER_JWT_SECRET") or dotenv_values(env_file).get("BROKER_JWT_SECRET")
    if not secret:
        raise config.ConfigError(f"BROKER_JWT_SECRET is not set (nor in {env_file})")
    return auth.issue_token(secret, subject, ttl, admin=admin, scope=scope)


def dev(state_dir: Path, host: str, port: int) -> None:
    """Run PostgreSQL, MinIO and the broker locally in the foreground; Ctrl-C stops all three."""
    env_file = state_dir / "dev.env"
    values = _dev_environment(state_dir, env_file, port)
    os.environ.update({k: v for k, v in values.items() if k not in os.environ})
    pg_port = int(os.environ["BROKER_DEV_PG_PORT"])
    minio_port = int(os.environ["BROKER_DEV_MINIO_PORT"])
    postgres = devstack.LocalPostgres(state_dir / "pg", pg_port, values["BROKER_DEV_PG_PASSWORD"])
    minio = devstack.LocalMinio(
        data_dir=state_dir / "minio",
        port=minio_port,
        root_user=os.environ["BROKER_S3_ACCESS_KEY"],
        root_password=os.environ["BROKER_S3_SECRET_KEY"],
        webhook_endpoint=f"http://127.0.0.1:{port}/v1/webhooks/minio",
        webhook_token=os.environ["BROKER_WEBHOOK_TOKEN"],
        # MinIO's CORS is global (no per-bucket rules in the community edition): the same
        # origins as the broker's, or any origin when none are set.
        cors_origins=os.environ.get("BROKER_CORS_ORIGINS") or "*",
    )
    try:
        print(f"starting PostgreSQL on 127.0.0.1:{pg_port} ...", flush=True)
        postgres.start()
        print(f"starting MinIO on 127.0.0.1:{minio_port} ...", flush=True)
        minio.start()
        settings = config.load_settings()
        initialize(settings)
        print(
            f"\nbroker      http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n"
            f"minio       {minio.endpoint}  (credentials in {env_file})\n"
            f"postgres    127.0.0.1:{pg_port}, data in {postgres.data_dir}\n"
            f"state       {state_dir.resolve()}  (delete it to start from scratch)\n"
            f"token       make token SUB=alice\n",
            flush=True,
        )
        serve(host, port, workers=1)
    finally:
        minio.stop()
        postgres.stop()
        print("stopped MinIO and PostgreSQL", flush=True)


def _dev_environment(state_dir: Path, env_file: Path, port: int) -> dict[str, str]:
    """The local stack's settings, generated once into `env_file` and reused after."""
    values: dict[str, str] = {}
    if env_file.exists():
        values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        minio_port = int(os.environ.get("BROKER_DEV_MINIO_PORT", "9000"))
        values = {
            "BROKER_DEV_PG_PORT": os.environ.get("BROKER_DEV_PG_PORT", "55432"),
            "BROKER_DEV_PG_PASSWORD": secrets.token_hex(16),
            "BROKER_DEV_MINIO_PORT": str(minio_port),
            "BROKER_S3_ENDPOINT": f"http://127.0.0.1:{minio_port}",
            "BROKER_S3_ACCESS_KEY": "broker-dev",
            "BROKER_S3_SECRET_KEY": secrets.token_hex(20),
            "BROKER_S3_BUCKET": "uploads",
            "BROKER_JWT_SECRET": secrets.token_hex(32),
            "BROKER_WEBHOOK_TOKEN": secrets.token_hex(24),
        }
    # Kept in the file too, so that `make broker ARGS=...` reaches the same database.
    values.setdefault(
        "BROKER_DATABASE_URL",
        f"postgresql://broker:{values['BROKER_DEV_PG_PASSWORD']}"
        f"@127.0.0.1:{values['BROKER_DEV_PG_PORT']}/broker",
    )
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env_file.chmod(0o600)
    return values


async def operator_command(args: argparse.Namespace, settings: config.Settings) -> str:
    """Run `broker uploads | stats | reconcile` and return what to print."""
    if args.command == "stats":
        return await commands.show_stats(settings, args.json)
    if args.command == "reconcile":
        return await commands.reconcile(settings, args.dry_run, args.json)
    if args.uploads_command == "show":
        return await commands.show_upload(settings, args.upload_id, args.json)
    longer = args.pending_longer_than
    filters = admin.Filters(
        status=args.status,
        owner=args.owner,
        policy=args.policy,
        pending_longer_than_seconds=commands.parse_duration(longer) if longer else None,
    )
    return await commands.list_uploads(settings, filters, args.limit, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="serve the API (settings from BROKER_* variables)")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--workers", type=int, default=1)

    p_migrate = commands.add_parser("migrate", help="apply, revert or list schema migrations")
    p_migrate.add_argument("action", nargs="?", choices=["up", "down", "status"], default="up")
    p_migrate.add_argument("steps", nargs="?", type=int, default=1, help="with down: how many")

    commands.add_parser("init", help="migrate, create the bucket and subscribe it to the webhook")

    p_token = commands.add_parser("token", help="print a bearer token for local use")
    p_token.add_argument("--sub", required=True, help="the owner the token speaks for")
    p_token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    p_token.add_argument("--admin", action="store_true", help="add the admin claim")
    p_token.add_argument(
        "--scope",
        choices=[auth.UPPY_SCOPE],
        help="narrow the token: uppy = only the /uppy/{token}/s3 routes",
    )
    p_token.add_argument("--env-file", default=".env")

    p_uploads = commands.add_parser("uploads", help="list or show uploads (operators)")
    uploads_commands = p_uploads.add_subparsers(dest="uploads_command", required=True)
    p_list = uploads_commands.add_parser("list", help="uploads, newest first")
    p_list.add_argument(
        "--status", choices=["pending", "finalized", "rejected", "expired", "deleted"]
    )
    p_list.add_argument("--owner")
    p_list.add_argument("--policy")
    p_list.add_argument(
        "--pending-longer-than",
        metavar="DURATION",
        help="e.g. 90s, 15m, 1h, 2d (implies --status pending)",
    )
    p_list.add_argument("--limit", type=int, default=50)
    p_list.add_argument("--json", action="store_true")
    p_show = uploads_commands.add_parser("show", help="one upload, its history and storage state")
    p_show.add_argument("upload_id", type=uuid.UUID)
    p_show.add_argument("--json", action="store_true")

    p_stats = commands.add_parser("stats", help="counts, pending ages, hourly activity")
    p_stats.add_argument("--json", action="store_true")

    p_reconcile = commands.add_parser(
        "reconcile", help="settle or expire stale pending uploads, sweep orphans"
    )
    p_reconcile.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p_reconcile.add_argument("--json", action="store_true")

    p_dev = commands.add_parser("dev", help="run PostgreSQL, MinIO and the broker locally")
    p_dev.add_argument("--state-dir", type=Path, default=Path(".state"))
    p_dev.add_argument("--host", default="127.0.0.1")
    p_dev.add_argument("--port", type=int, default=8000)

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.host, args.port, args.workers)
        elif args.command == "migrate":
            database_url = config.load_settings().database_url
            print("\n".join(asyncio.run(migrate.run(database_url, args.action, args.steps))))
        elif args.command == "init":
            initialize(config.load_settings())
        elif args.command == "token":
            print(mint_token(args.env_file, args.sub, args.ttl, args.admin, args.scope))
        elif args.command == "dev":
            dev(args.state_dir, args.host, args.port)
        else:
            print(asyncio.run(operator_command(args, config.load_settings())))
    except (config.ConfigError, migrate.MigrationError, devstack.StackError, ValueError) as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2
    except errors.BrokerError as exc:
        print(f"broker: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
