"""Command line: `broker serve | migrate | init | token | dev`, and the operator commands
`broker uploads | stats | reconcile | webhooks | audit`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from dotenv import dotenv_values
from fastapi import FastAPI

from broker import auth, config, logs, serving
from broker.adapters import migrate, storage
from broker.app import create_app
from broker.domain import errors, policies
from broker.domain.model import (
    SUBSCRIBABLE_EVENT_TYPES,
    DeliveryStatus,
    UploadFilters,
    UploadStatus,
    WebhookEventType,
)
from broker.domain.webhooks import DeliveryFilters
from broker.ops import audit_commands, commands, webhook_commands

GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Garbage-collector settings for a serving process, applied once it has started."""
    # Start-up objects live for the whole process: keep them out of the collector's full
    # passes, which otherwise stall the event loop under load.
    gc.collect()
    gc.freeze()
    # Requests free their objects by reference counting; the cycle collector's passes
    # (young every 700 allocations by default) mostly find nothing and cost latency.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 100, 100)


def app_from_env() -> FastAPI:
    """uvicorn factory of `broker serve`: the app configured from the environment, with the
    serving process's GC settings."""
    settings = config.load_settings()
    logs.configure(settings.log_level)
    return create_app(settings, after_startup=tune_gc)


def serve(host: str, port: int, workers: int) -> None:
    """Serve the API with uvicorn (uvloop + httptools when installed). One process (the
    usual deployment: scale with replicas) drains on SIGTERM (broker/serving.py); with
    --workers N, uvicorn's supervisor stops its workers its own way."""
    # Fail here, with a message naming the variable, before uvicorn forks workers.
    settings = config.load_settings()
    policies.load_policies(settings)
    if workers == 1:
        serving.serve(
            app_from_env(),
            host,
            port,
            timeout_seconds=settings.shutdown_timeout_seconds,
            drain_seconds=settings.shutdown_drain_seconds,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
        return
    uvicorn.run(
        "broker.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        **serving.proxy_options(settings.forwarded_allow_ips),  # type: ignore[arg-type]
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


async def webhooks_command(args: argparse.Namespace, settings: config.Settings) -> str:
    """Run `broker webhooks ...` and return what to print."""
    action, as_json = args.webhooks_command, args.json
    if action == "add":
        return await webhook_commands.add(
            settings,
            args.url,
            event_types=args.event_type or [],
            policy=args.policy,
            description=args.description,
            as_json=as_json,
        )
    if action == "list":
        return await webhook_commands.list_endpoints(settings, as_json)
    if action == "rotate":
        return await webhook_commands.rotate(settings, args.endpoint_id, as_json)
    if action == "test":
        return await webhook_commands.send_test(settings, args.endpoint_id, as_json)
    if action == "deliveries":
        filters = DeliveryFilters(
            endpoint_id=args.endpoint,
            status=DeliveryStatus(args.status) if args.status else None,
            upload_id=args.upload,
            type=WebhookEventType(args.type) if args.type else None,
        )
        return await webhook_commands.deliveries(settings, filters, args.limit, as_json)
    if action == "replay":
        since = commands.parse_duration(args.since)
        return await webhook_commands.replay(settings, args.endpoint_id, since, as_json)
    if action == "retry":
        return await webhook_commands.retry(settings, args.delivery_id, as_json)
    reason = getattr(args, "reason", "")
    return await webhook_commands.set_enabled(
        settings, args.endpoint_id, action == "enable", reason, as_json
    )


async def operator_command(args: argparse.Namespace, settings: config.Settings) -> str:
    """Run `broker uploads | stats | reconcile | webhooks | audit` and return what to print."""
    if args.command == "webhooks":
        return await webhooks_command(args, settings)
    if args.command == "audit":
        since = commands.parse_duration(args.since)
        output = "csv" if args.csv else "json" if args.json else "table"
        return await audit_commands.downloads(settings, since, args.upload, output)
    if args.command == "stats":
        return await commands.show_stats(settings, args.json)
    if args.command == "reconcile":
        return await commands.reconcile(settings, args.dry_run, args.json)
    if args.uploads_command == "show":
        return await commands.show_upload(settings, args.upload_id, args.json)
    if args.uploads_command in ("release", "delete"):
        decide = (
            commands.release_upload
            if args.uploads_command == "release"
            else (commands.delete_upload)
        )
        return await decide(settings, args.upload_id, args.reason, args.by, args.json)
    longer = args.pending_longer_than
    filters = UploadFilters(
        status=UploadStatus(args.status) if args.status else None,
        owner=args.owner,
        policy=args.policy,
        pending_longer_than_seconds=commands.parse_duration(longer) if longer else None,
        search=commands.search_text(args.search) if args.search else None,
    )
    return await commands.list_uploads(settings, filters, args.limit, args.json)


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a UUID)") from None


def add_webhooks_parser(commands: Any) -> None:
    """`broker webhooks ...`: the apps' webhook endpoints and their deliveries."""
    p_webhooks = commands.add_parser("webhooks", help="apps' webhook endpoints and deliveries")
    actions = p_webhooks.add_subparsers(dest="webhooks_command", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help)
        parser.add_argument("--json", action="store_true")
        return parser

    p_add = action("add", "register an endpoint; prints its secret, this once")
    p_add.add_argument("url", help="https://..., or http:// for an allowed local host:port")
    p_add.add_argument(
        "--event-type",
        action="append",
        metavar="TYPE",
        choices=sorted(kind.value for kind in SUBSCRIBABLE_EVENT_TYPES),
        help="repeat for several; none: every upload.* type",
    )
    p_add.add_argument("--policy", help="only uploads of this policy")
    p_add.add_argument("--description", default="")
    action("list", "every endpoint (never a secret)")
    for name, help in (
        ("rotate", "a new secret, printed this once; the old one signs too for 24 hours"),
        ("test", "queue a webhook.test event to the endpoint now"),
        ("enable", "send to the endpoint again, waiting deliveries first"),
    ):
        action(name, help).add_argument("endpoint_id", type=_uuid)
    p_disable = action("disable", "stop sending to the endpoint; deliveries wait")
    p_disable.add_argument("endpoint_id", type=_uuid)
    p_disable.add_argument("--reason", default=webhook_commands.CLI_DISABLE_REASON)
    p_deliveries = action("deliveries", "deliveries, newest first")
    p_deliveries.add_argument("--endpoint", type=_uuid, metavar="ENDPOINT_ID")
    p_deliveries.add_argument("--status", choices=[status.value for status in DeliveryStatus])
    p_deliveries.add_argument("--upload", type=_uuid, metavar="UPLOAD_ID")
    p_deliveries.add_argument("--type", choices=[kind.value for kind in WebhookEventType])
    p_deliveries.add_argument("--limit", type=int, default=50, help="1 to 500")
    p_replay = action("replay", "send the endpoint's delivered and dead events again")
    p_replay.add_argument("endpoint_id", type=_uuid)
    p_replay.add_argument(
        "--since", required=True, metavar="DURATION", help="changes this long ago: 90s, 15m, 2h, 2d"
    )
    p_retry = action("retry", "send a dead delivery again, with a fresh schedule")
    p_retry.add_argument("delivery_id", type=int)


def add_audit_parser(commands: Any) -> None:
    """`broker audit downloads`: who was given a download URL, and when."""
    p_audit = commands.add_parser("audit", help="the download audit")
    audits = p_audit.add_subparsers(dest="audit_command", required=True)
    p_downloads = audits.add_parser("downloads", help="download URLs issued, newest first")
    p_downloads.add_argument(
        "--since", default="24h", metavar="DURATION", help="this long ago: 90s, 15m, 24h, 7d"
    )
    p_downloads.add_argument("--upload", type=_uuid, metavar="UPLOAD_ID", help="only this one")
    output = p_downloads.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV with a header row, times UTC")
    output.add_argument("--json", action="store_true")


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

    p_uploads = commands.add_parser(
        "uploads", help="list, show, release or delete uploads (operators)"
    )
    uploads_commands = p_uploads.add_subparsers(dest="uploads_command", required=True)
    p_list = uploads_commands.add_parser("list", help="uploads, newest first")
    p_list.add_argument("--status", choices=[status.value for status in UploadStatus])
    p_list.add_argument("--owner")
    p_list.add_argument("--policy")
    p_list.add_argument(
        "--pending-longer-than",
        metavar="DURATION",
        help="e.g. 90s, 15m, 1h, 2d (implies --status pending)",
    )
    p_list.add_argument(
        "--search", metavar="TEXT", help="part of the filename, any case (holi: Holiday.JPG)"
    )
    p_list.add_argument("--limit", type=int, default=50)
    p_list.add_argument("--json", action="store_true")
    p_show = uploads_commands.add_parser("show", help="one upload, its history and storage state")
    p_show.add_argument("upload_id", type=uuid.UUID)
    p_show.add_argument("--json", action="store_true")
    for name, help in (
        ("release", "release a quarantined upload: finalized and downloadable"),
        ("delete", "delete a live upload (a quarantined one, say) and its object"),
    ):
        p_decide = uploads_commands.add_parser(name, help=help)
        p_decide.add_argument("upload_id", type=_uuid)
        p_decide.add_argument("--reason", required=True, help="kept in the upload's history")
        p_decide.add_argument(
            "--by", default=getpass.getuser(), help="your name, recorded as admin:<by>"
        )
        p_decide.add_argument("--json", action="store_true")

    p_stats = commands.add_parser("stats", help="counts, pending ages, hourly activity")
    p_stats.add_argument("--json", action="store_true")

    p_reconcile = commands.add_parser(
        "reconcile", help="settle or expire stale pending uploads, sweep orphans"
    )
    p_reconcile.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p_reconcile.add_argument("--json", action="store_true")

    add_webhooks_parser(commands)
    add_audit_parser(commands)

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
            # Development only: the service itself never imports broker.dev.
            from broker.dev import devstack, stack

            try:
                stack.dev(args.state_dir, args.host, args.port, initialize, serve)
            except devstack.StackError as exc:
                print(f"broker: {exc}", file=sys.stderr)
                return 2
        else:
            print(asyncio.run(operator_command(args, config.load_settings())))
    except (config.ConfigError, migrate.MigrationError, ValueError) as exc:
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
