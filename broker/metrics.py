"""Prometheus metrics of the broker (one registry per process; see README for workers)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPLOADS_CREATED = Counter("broker_uploads_created_total", "Uploads created", ["policy", "transfer"])
UPLOADS_FINALIZED = Counter("broker_uploads_finalized_total", "Uploads finalized", ["policy", "by"])
UPLOADS_REJECTED = Counter(
    "broker_uploads_rejected_total", "Uploads rejected at finalization", ["policy", "reason"]
)
UPLOADS_EXPIRED = Counter("broker_uploads_expired_total", "Uploads expired", ["policy", "by"])
UPLOADS_DELETED = Counter("broker_uploads_deleted_total", "Uploads deleted", ["by"])
CREATE_TO_FINALIZED = Histogram(
    "broker_upload_create_to_finalized_seconds",
    "Time from an upload's creation to its finalization",
    ["policy"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
WEBHOOK_EVENTS = Counter(
    "broker_webhook_events_total", "Storage events received, by what they did", ["outcome"]
)
RECONCILER_OUTCOMES = Counter(
    "broker_reconciler_outcomes_total", "What reconciler passes did", ["outcome"]
)
RATE_LIMITED = Counter(
    "broker_rate_limited_total", "Requests refused 429 by a rate limit", ["action"]
)
PENDING = Gauge("broker_uploads_pending", "Uploads pending now (read at scrape)")
STUCK = Gauge("broker_uploads_stuck", "Pending uploads past their deadline (read at scrape)")
OLDEST_PENDING_AGE = Gauge(
    "broker_oldest_pending_age_seconds", "Age of the oldest pending upload (read at scrape)"
)
REQUEST_SECONDS = Histogram(
    "broker_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
WEBHOOK_DELIVERIES = Counter(
    "broker_webhook_deliveries_total",
    "Webhook POSTs to the apps' endpoints, by endpoint and outcome",
    ["endpoint", "outcome"],
)
WEBHOOK_CHANGE_TO_DELIVERED = Histogram(
    "broker_webhook_change_to_delivered_seconds",
    "Time from an upload's state change to its webhook's 2xx",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600, 86400),
)
WEBHOOK_BACKLOG = Gauge(
    "broker_webhook_deliveries_pending", "Webhook deliveries not yet delivered (read at scrape)"
)
WEBHOOK_OLDEST_PENDING_AGE = Gauge(
    "broker_webhook_oldest_pending_age_seconds",
    "Age of the state change of the oldest undelivered webhook (read at scrape)",
)
SCANS = Counter(
    "broker_scans_total",
    "Malware scans by engine and verdict (clean, infected, skipped, unavailable)",
    ["engine", "verdict"],
)
SCAN_SECONDS = Histogram(
    "broker_scan_seconds",
    "Time one scan took, streaming the object to the engine",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SCAN_BACKLOG = Gauge("broker_scan_jobs", "Uploads waiting for a malware verdict (read at scrape)")
SCAN_OLDEST_AGE = Gauge(
    "broker_scan_oldest_job_age_seconds", "Age of the oldest scan job (read at scrape)"
)
JWKS_FETCHES = Counter(
    "broker_jwks_fetches_total", "Fetches of identity providers' keys", ["issuer", "result"]
)
