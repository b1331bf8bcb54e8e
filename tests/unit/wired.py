"""The use cases wired to the in-memory fakes by broker.wiring.build itself (the same wiring
as the service's), under the unit suite's policies and settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import config, wiring
from broker.adapters import sniffer
from broker.domain.policies import Policies, load_policies
from broker.flows import live, scanning, webhook_sender
from tests.unit.fake_webhooks import FakePoster
from tests.unit.fakes import Clock, FakeScanner, MemoryQueries, MemoryStore

MIB = 1024**2

# Named policies of the unit suite; the default one comes from SETTINGS below.
POLICIES = """
[policies.avatars]
content_types = ["image/png", "image/jpeg"]
max_size = "64 KiB"
key_prefix = "avatars/"
multipart = false
url_ttl_seconds = 120

[policies.docs]
content_types = ["application/pdf", "text/*"]
min_size = 10
pending_ttl_seconds = 600

[policies.single]
max_size = "64 MiB"
key_prefix = "single/"
multipart = false

[policies.counted]
quota = { count = 3 }

[policies.metered]
max_size = "100 KiB"
quota = { bytes = "250 KiB" }

[policies.big]
max_size = "64 MiB"
quota = { count = 1 }
"""

SETTINGS = {
    "database_url": "postgresql://unit:unit@127.0.0.1:1/unit",  # never connected to
    "s3_endpoint": "http://127.0.0.1:1",
    "s3_access_key": "unit",
    "s3_secret_key": "unit-secret",
    "jwt_secret": "0123456789abcdef0123456789abcdef",
    "webhook_token": "webhook-token-0123456789",
    # Every knob a unit test relies on is pinned here, whatever BROKER_* the shell exports.
    "s3_bucket": "uploads",
    "max_upload_bytes": 64 * MIB,
    "allowed_content_types": ("text/*", "image/*", "application/octet-stream"),
    "multipart_threshold_bytes": 8 * MIB,
    "multipart_part_size_bytes": 5 * MIB,
    "upload_url_ttl_seconds": 900,
    "download_url_ttl_seconds": 300,
    "pending_ttl_seconds": 86400,
    "orphan_grace_seconds": 3600,
    "download_audit_retention_days": 90,
    "sse_heartbeat_seconds": 60,
}


@dataclass
class Flows:
    """broker.wiring.Flows (its use cases are this object's attributes too), on fakes that a
    test inspects and steers."""

    clock: Clock
    queries: MemoryQueries
    store: MemoryStore
    poster: FakePoster
    engine: FakeScanner
    settings: config.Settings
    policies: Policies
    wired: wiring.Flows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wired, name)


def build(settings: config.Settings) -> Flows:
    """broker.wiring.build itself, with MemoryQueries, MemoryStore and FakePoster sharing one
    hand-moved clock."""
    clock = Clock()
    queries = MemoryQueries(clock)
    store = MemoryStore(clock, bucket=settings.s3_bucket)
    poster = FakePoster()

    engine = FakeScanner()

    def listen(channel: str) -> live.Listen:
        return {
            webhook_sender.CHANNEL: queries.listen_webhooks,
            scanning.CHANNEL: queries.listen_scan_jobs,
        }.get(channel, queries.listen)

    # The real sniffer: libmagic is a library, not a service.
    wired = wiring.build(
        settings, queries, store, poster, listen, sniffer.detect, engine, clock=clock
    )
    return Flows(clock, queries, store, poster, engine, settings, load_policies(settings), wired)


def flows_in(directory: Path, policies_toml: str = POLICIES, **settings: Any) -> Flows:
    """Flows for a policies file (TOML text, written into `directory`) and settings other
    than the suite's."""
    policies_file = directory / f"policies-{len(list(directory.iterdir()))}.toml"
    policies_file.write_text(policies_toml)
    values = {**SETTINGS, "policies_file": policies_file, **settings}
    return build(config.Settings(_env_file=None, **values))  # type: ignore[call-arg]
