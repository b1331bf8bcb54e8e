"""Every use case, built once from the settings and the two adapters.

The API (app.py's lifespan) and the operators' commands (ops/commands.py) both start here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import tenacity

from broker import auth
from broker.adapters import db, http, jwks, queries, scanners, sniffer, storage
from broker.config import ConfigError, Settings
from broker.domain.policies import Policies, load_policies
from broker.flows import (
    admin,
    app_webhooks,
    companion,
    download_audit,
    finalization,
    health,
    live,
    multipart,
    rate_limits,
    reconciler,
    scanning,
    uploads,
    webhook_sender,
)
from broker.flows.ports import ContentSniffer, ObjectStore, Queries, Scanner, WebhookPoster
from broker.issuers import Issuer, load_issuers

log = logging.getLogger("broker.wiring")


@dataclass(frozen=True)
class Flows:
    """The use cases of one process, sharing one pool and one storage client."""

    uploads: uploads.Uploads
    multipart: multipart.Multipart
    companion: companion.Companion
    finalizer: finalization.Finalizer
    reconciler: reconciler.Reconciler
    admin: admin.Admin
    downloads: download_audit.DownloadAudit
    live: live.LiveStatus
    probes: health.Probes
    webhooks: app_webhooks.AppWebhooks
    webhook_sender: webhook_sender.WebhookSender
    scanner: scanning.MalwareScanner
    authenticator: auth.Authenticator
    rate_limiter: rate_limits.RateLimiter


def build(
    settings: Settings,
    statements: Queries,
    store: ObjectStore,
    poster: WebhookPoster,
    listen: Callable[[str], live.Listen],
    sniff: ContentSniffer,
    engine: Scanner | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    keys: auth.KeySource | None = None,
) -> Flows:
    """Wire the use cases to implementations of their ports (no I/O): the adapters in
    `connected`, the in-memory fakes in the unit suite. `listen(channel)` runs a LISTEN."""
    policies: Policies = load_policies(settings)
    # One limiter for the native and the Uppy routes: both count against the same limits.
    limiter = rate_limits.RateLimiter(
        statements, policies.failed_auth_limit, clock=lambda: clock().timestamp()
    )

    def new_uploads(part_size: int) -> uploads.Uploads:
        return uploads.Uploads(
            statements,
            store,
            policies,
            multipart_threshold=settings.multipart_threshold_bytes,
            part_size=part_size,
            download_ttl=settings.download_url_ttl_seconds,
            check_grace=settings.reconcile_check_grace_seconds,
            limiter=limiter,
        )

    native = new_uploads(settings.multipart_part_size_bytes)
    finalizer = finalization.Finalizer(statements, store, policies, sniff)
    checker = reconciler.Reconciler(
        statements,
        store,
        finalizer,
        policies,
        orphan_grace_seconds=settings.orphan_grace_seconds,
        limiter=limiter,
        download_audit_retention_days=settings.download_audit_retention_days,
        clock=clock,
    )
    return Flows(
        uploads=native,
        multipart=multipart.Multipart(native),
        # Uppy cuts multipart files by its own rule: its uploads plan parts the same way.
        companion=companion.Companion(new_uploads(companion.UPPY_MIN_PART_SIZE)),
        finalizer=finalizer,
        reconciler=checker,
        admin=admin.Admin(statements, store, checker),
        downloads=download_audit.DownloadAudit(statements),
        live=live.LiveStatus(statements, listen(live.CHANNEL), settings.sse_heartbeat_seconds),
        probes=health.Probes(statements, store),
        webhooks=app_webhooks.AppWebhooks(
            statements,
            allowed_hosts=frozenset(settings.webhook_allowed_hosts),
            policies=frozenset(policies.by_name),
            clock=clock,
        ),
        webhook_sender=webhook_sender.WebhookSender(
            statements,
            poster,
            listen(webhook_sender.CHANNEL),
            webhook_sender.SenderLimits(
                lease_seconds=settings.webhook_lease_seconds,
                poll_seconds=settings.webhook_poll_seconds,
                concurrency=settings.webhook_concurrency,
                per_endpoint=settings.webhook_endpoint_concurrency,
            ),
            clock=clock,
        ),
        scanner=scanning.MalwareScanner(
            statements,
            store,
            engine,
            policies,
            listen(scanning.CHANNEL),
            # A lease outlives the engine's timeout for one whole scan, with room to record.
            scanning.ScannerLimits(
                lease_seconds=settings.scan_timeout_seconds * 2 + 30,
                concurrency=settings.scan_concurrency,
            ),
            clock=clock,
        ),
        authenticator=auth.Authenticator(
            settings.jwt_secret, load_issuers(settings), keys, settings.jwt_leeway_seconds
        ),
        rate_limiter=limiter,
    )


async def claim_owner_namespaces(statements: queries.Queries, issuers: tuple[Issuer, ...]) -> None:
    """Refuse to start when local owners already use a new identity provider's namespace:
    the provider's users would own their uploads."""
    for issuer in issuers:
        taken = await statements.claim_issuer_namespace(issuer.name, issuer.owner_of(""))
        if taken is not None:
            raise ConfigError(
                f"BROKER_ISSUERS: issuer name {issuer.name!r} is taken: local owners such as "
                f"{taken[:100]!r} start with {issuer.owner_of('')!r}; choose another name"
            )


def webhook_poster(settings: Settings) -> http.WebhookPoster:
    """The HTTP client that sends the apps' webhooks, behind the SSRF guard."""
    return http.WebhookPoster(
        allowed_hosts=frozenset(settings.webhook_allowed_hosts),
        timeout_seconds=settings.webhook_timeout_seconds,
    )


def _waiting(what: str, settings: Settings) -> tenacity.AsyncRetrying:
    """Bounded retries while a dependency comes up, saying what we wait for."""

    def say(state: tenacity.RetryCallState) -> None:
        log.info(
            "startup.waiting",
            extra={
                "for": what,
                "attempt": state.attempt_number,
                "error": repr(state.outcome and state.outcome.exception()),
            },
        )

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(settings.startup_timeout_seconds),
        wait=tenacity.wait_exponential(multiplier=0.2, max=2),
        before_sleep=say,
        reraise=True,
    )


@asynccontextmanager
async def _within_startup_timeout(what: str, settings: Settings) -> AsyncIterator[None]:
    """The whole wait for `what` bounded by BROKER_STARTUP_TIMEOUT_SECONDS, an attempt that
    hangs included (a frozen server accepts the connection and never answers); one clear
    error line, naming the dependency and the setting, when it gives up (the exception still
    ends the start: a container exits non-zero)."""
    try:
        async with asyncio.timeout(settings.startup_timeout_seconds):
            yield
    except Exception as exc:
        log.error(
            "startup.failed",
            extra={
                "for": what,
                "detail": f"{what} did not become ready within "
                f"{settings.startup_timeout_seconds:g} s (BROKER_STARTUP_TIMEOUT_SECONDS)",
                "error": repr(exc),
            },
        )
        raise


@asynccontextmanager
async def connected(settings: Settings, *, pool_min: int, pool_max: int) -> AsyncIterator[Flows]:
    """The use cases on a pool and a storage client, once PostgreSQL and MinIO answer
    (retried until BROKER_STARTUP_TIMEOUT_SECONDS); the pool is closed on the way out."""
    database: db.Database | None = None
    async with _within_startup_timeout("postgres", settings):
        async for attempt in _waiting("postgres", settings):
            with attempt:
                database = await db.Database.connect(
                    settings.database_url, min_size=pool_min, max_size=pool_max
                )
    assert database is not None
    try:
        store = storage.Storage(settings)
        async with _within_startup_timeout("minio", settings):
            async for attempt in _waiting("minio", settings):
                with attempt:
                    await store.ping()
        statements = queries.Queries(database)
        issuers = load_issuers(settings)
        await claim_owner_namespaces(statements, issuers)
        poster = webhook_poster(settings)
        keys = jwks.JwksKeys()
        keys.prefetch(issuers)
        try:
            yield build(
                settings,
                statements,
                store,
                poster,
                lambda channel: functools.partial(
                    db.listen_forever, settings.database_url, channel
                ),
                sniffer.detect,
                scanners.scanner_from_settings(settings),
                keys=keys,
            )
        finally:
            await keys.aclose()
            await poster.aclose()
    finally:
        await database.close()
