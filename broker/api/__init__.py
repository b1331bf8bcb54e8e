"""HTTP routes, one module per resource; ROUTERS is every router, in the order the app adds them.

Routes parse, authenticate, call one use case and render; they never run SQL or call storage.
"""

from __future__ import annotations

from broker.api import (
    admin,
    api_docs,
    companion,
    download_audit,
    health,
    ops,
    parts,
    status_stream,
    uploads,
    webhook_endpoints,
    webhooks,
)

ROUTERS = (
    uploads.router,
    parts.router,
    status_stream.router,
    admin.router,
    download_audit.router,
    webhook_endpoints.router,
    webhooks.router,
    health.router,
    ops.router,
    companion.router,
    api_docs.router,
)
