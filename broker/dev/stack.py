"""`broker dev`: PostgreSQL, MinIO, clamd and the broker in the foreground, settings in a state
folder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from dotenv import dotenv_values

from broker import config, serving
from broker.dev import clamd, devstack


def dev(
    state_dir: Path,
    host: str,
    port: int,
    initialize: Callable[[config.Settings], None],
    serve: Callable[[str, int, int], None],
) -> None:
    """Run PostgreSQL, MinIO, clamd and the broker locally in the foreground; Ctrl-C stops all.

    `initialize` (migrations, bucket) and `serve` are the command line's own, passed in so
    that this module never imports broker.cli: the command line imports broker.dev, not
    the other way round.
    """
    env_file = state_dir / "dev.env"
    values = _dev_environment(state_dir, env_file)
    os.environ.update({k: v for k, v in values.items() if k not in os.environ})
    # A Next.js dev server on this machine receives real webhooks, with no tunnel.
    os.environ.setdefault("BROKER_WEBHOOK_ALLOWED_HOSTS", "localhost:3000")
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
    # clamd on the local test signature, unless the environment names an engine already.
    scanner = None
    if not os.environ.get("BROKER_CLAMD_ADDRESS") and not os.environ.get("BROKER_SCAN_COMMAND"):
        scanner = clamd.LocalClamd(state_dir / "clamd")
        os.environ["BROKER_CLAMD_ADDRESS"] = scanner.address

    def stop_services() -> None:
        if scanner is not None:
            scanner.stop()
        minio.stop()
        postgres.stop()
        print("stopped clamd, MinIO and PostgreSQL", flush=True)

    # A second signal forces the broker out past this function's `finally`.
    serving.on_forced_exit(stop_services)
    try:
        print(f"starting PostgreSQL on 127.0.0.1:{pg_port} ...", flush=True)
        postgres.start()
        print(f"starting MinIO on 127.0.0.1:{minio_port} ...", flush=True)
        minio.start()
        if scanner is not None:
            print(f"starting clamd on {scanner.address} ...", flush=True)
            scanner.start()
        initialize(config.load_settings())
        print(
            f"\nbroker      http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n"
            f"minio       {minio.endpoint}  (credentials in {env_file})\n"
            f"postgres    127.0.0.1:{pg_port}, data in {postgres.data_dir}\n"
            f"clamd       {os.environ.get('BROKER_CLAMD_ADDRESS') or 'none'}"
            f"{'  (test signature only: the EICAR string)' if scanner else ''}\n"
            f"state       {state_dir.resolve()}  (delete it to start from scratch)\n"
            f"token       make token SUB=alice\n",
            flush=True,
        )
        serve(host, port, 1)
    finally:
        stop_services()


def _dev_environment(state_dir: Path, env_file: Path) -> dict[str, str]:
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
