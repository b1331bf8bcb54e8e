"""The baseline the broker is measured against: the least a FastAPI service can do for the
same request, i.e. validate the same body shape and run the broker's own `insert_upload`.

No auth, no presign, no error mapping. Run it like `broker serve` runs the broker:

    BROKER_DATABASE_URL=postgresql://... python -m bench.baseline_app --port 8001

Fairness: it gets the same start-up treatment as the broker (broker/app.py, broker/adapters/db.py):
the same pool size (BROKER_DB_POOL_MIN/MAX), the same jsonb codec, no reset round trip
when a connection goes back to the pool, and gc.freeze() once the pool is open; uvicorn
runs it with one worker, uvloop/httptools and no access log, as `broker serve` does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI, Request, status
from pydantic import BaseModel

from broker.adapters.db import load_queries

OWNER = "bench"
BUCKET = "uploads"
PENDING_TTL_SECONDS = 86400.0  # the broker's default BROKER_PENDING_TTL_SECONDS
# What the broker passes for the rest of insert_upload's parameters for a plain PUT of the
# default policy; request_hash is a SHA-256 hex digest in the broker, a constant of the
# same length here (the baseline does not fingerprint requests).
FIXED_VALUES: dict[str, object] = {
    "owner": OWNER,
    "size_limit": None,
    "sha256": None,
    "metadata": {},
    "bucket": BUCKET,
    "policy": "default",
    "transfer": "put",
    "multipart_upload_id": None,
    "part_size": None,
    "part_count": None,
    "checksum_algorithm": None,
    "idempotency_key": None,
    "request_hash": "0" * 64,
    "pending_seconds": PENDING_TTL_SECONDS,
    "check_after_seconds": 900.0 + 30.0,  # the default URL lifetime + the check grace
}


class CreateUpload(BaseModel):
    """The shape of the broker's request body, without its extra validators."""

    filename: str
    content_type: str
    size: int


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Same codec as broker.db, so the metadata parameter is encoded the same way.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset-on-release round trip, as broker.db._keep_session."""


def create_app() -> FastAPI:
    insert_upload = load_queries()["insert_upload"]
    per_request = {"id", "filename", "content_type", "size", "object_key"}
    if set(insert_upload.parameters) != per_request | set(FIXED_VALUES):
        raise RuntimeError(
            f"broker's insert_upload now takes {sorted(insert_upload.parameters)}: add what "
            "Uploads.create passes for the new ones to FIXED_VALUES in bench/baseline_app.py"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            os.environ["BROKER_DATABASE_URL"],
            min_size=int(os.environ.get("BROKER_DB_POOL_MIN", "10")),
            max_size=int(os.environ.get("BROKER_DB_POOL_MAX", "10")),
            init=_init_connection,
            reset=_keep_session,
            command_timeout=30,
        )
        app.state.pool = pool
        # As the broker does: keep start-up objects out of the collector's full passes.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="baseline", lifespan=lifespan)

    @app.post("/baseline/uploads", status_code=status.HTTP_201_CREATED)
    async def create_upload(body: CreateUpload, request: Request) -> dict[str, Any]:
        upload_id = uuid.uuid4()
        values = {
            **FIXED_VALUES,
            "id": upload_id,
            "filename": body.filename,
            "content_type": body.content_type,
            "size": body.size,
            "object_key": f"uploads/{upload_id}",
        }
        row = await request.app.state.pool.fetchrow(
            insert_upload.sql, *insert_upload.arguments(values)
        )
        return dict(row)

    @app.get("/baseline/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # The same uvicorn options as broker.cli.serve.
    uvicorn.run(
        "bench.baseline_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
