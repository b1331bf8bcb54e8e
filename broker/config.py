"""Settings from BROKER_* environment variables (and an optional .env file)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GIB = 1024**3
MEDIA_TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/([a-z0-9][a-z0-9!#$&^_.+-]*|\*)$")
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password"}


def check_media_type_patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    """Lower-cased media type patterns (image/png, image/*, */*), or ValueError."""
    value = tuple(pattern.strip().lower() for pattern in value)
    if not value:
        raise ValueError("needs at least one pattern such as image/* or */*")
    for pattern in value:
        if pattern != "*/*" and not MEDIA_TYPE_PATTERN.match(pattern):
            raise ValueError(f"{pattern!r} is not a media type pattern like image/png or image/*")
    return value


def parse_clamd_address(address: str) -> str | tuple[str, int]:
    """`unix:/path/to/clamd.ctl` -> the socket path; `tcp:host:port` -> (host, port)."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest.startswith("/"):
        return rest
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if kind == "tcp" and host and "/" not in host and port.isdigit() and 0 < int(port) < 65536:
        return host, int(port)
    raise ValueError(
        f"{address!r} is not a clamd address like unix:/run/clamav/clamd.ctl or tcp:127.0.0.1:3310"
    )


class ConfigError(Exception):
    """The configuration is missing or invalid; the message names the variable."""


class Settings(BaseSettings):
    """Every knob of the broker; see .env.example for the meaning of each."""

    model_config = SettingsConfigDict(
        env_prefix="BROKER_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str
    s3_endpoint: str
    s3_public_endpoint: str = ""
    s3_access_key: str = Field(min_length=1)
    s3_secret_key: str = Field(min_length=1)
    s3_region: str = "us-east-1"
    s3_bucket: str = "uploads"
    s3_notify_arns: Annotated[tuple[str, ...], NoDecode] = (
        "arn:minio:sqs::QUEUED:webhook",
        "arn:minio:sqs::DIRECT:webhook",
    )
    jwt_secret: str = Field(min_length=32)
    # Identity providers whose tokens are accepted too (broker/issuers.py): a TOML file, or
    # the same document as JSON in the environment.
    issuers_file: Path | None = None
    issuers: str = ""
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    webhook_token: str = Field(min_length=16)

    max_upload_bytes: int = Field(default=5 * GIB, ge=1, le=5 * 1024 * GIB)
    allowed_content_types: Annotated[tuple[str, ...], NoDecode] = ("*/*",)
    upload_url_ttl_seconds: int = Field(default=900, ge=1, le=604800)
    download_url_ttl_seconds: int = Field(default=300, ge=1, le=604800)
    pending_ttl_seconds: int = Field(default=86400, ge=60)

    policies_file: Path | None = None
    multipart_threshold_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2)
    multipart_part_size_bytes: int = Field(default=16 * 1024**2, ge=5 * 1024**2, le=5 * GIB)

    reconcile_interval_seconds: float = Field(default=60, ge=0)
    orphan_sweep_interval_seconds: float = Field(default=3600, gt=0)
    orphan_grace_seconds: int = Field(default=3600, ge=60)
    reconcile_check_grace_seconds: int = Field(default=30, ge=0, le=86400)
    # Days a download audit row is kept (the reconciler deletes older ones); 0: forever.
    download_audit_retention_days: int = Field(default=90, ge=0, le=36500)

    sse_heartbeat_seconds: float = Field(default=15, gt=0, le=300)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    cors_allow_credentials: bool = False

    webhook_sender: bool = True
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_poll_seconds: float = Field(default=5, gt=0, le=3600)
    webhook_lease_seconds: float = Field(default=60, gt=0, le=86400)
    webhook_timeout_seconds: float = Field(default=15, gt=0, le=300)
    webhook_concurrency: int = Field(default=64, ge=1, le=1000)
    webhook_endpoint_concurrency: int = Field(default=16, ge=1, le=100)

    # Malware scanning engines (broker/adapters/scanners.py): clamd, or a command; not both.
    clamd_address: str = ""
    scan_command: str = ""
    scan_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    scan_concurrency: int = Field(default=2, ge=1, le=64)
    scanner: bool = True  # run the scan-job task in this process
    shutdown_timeout_seconds: float = Field(default=25, ge=6, le=3600)
    shutdown_drain_seconds: float = Field(default=1, ge=0, le=60)

    # Rate limits ("60/minute"; empty: none): per owner for every policy that sets none of
    # its own, and per client address for failed authentications (docs/security.md).
    rate_limit_create: str = ""
    rate_limit_parts: str = ""
    rate_limit_downloads: str = ""
    rate_limit_failed_auth: str = ""
    # The proxies (comma-separated IPs or networks, or *) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; empty: none, the client address is the TCP peer.
    forwarded_allow_ips: str = ""

    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=10, ge=1)
    startup_timeout_seconds: float = Field(default=30, gt=0)
    log_level: str = "INFO"

    @field_validator(
        "allowed_content_types",
        "s3_notify_arns",
        "cors_origins",
        "webhook_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("policies_file", "issuers_file", mode="before")
    @classmethod
    def _no_file_when_empty(cls, value: object) -> object:
        # `BROKER_POLICIES_FILE=` (as in .env.example) means none, not the folder ".".
        return None if value == "" else value

    @field_validator("allowed_content_types")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_media_type_patterns(value)

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            parts = urlsplit(origin)
            exact = parts.scheme in ("http", "https") and parts.hostname and not parts.path
            if origin != "*" and (not exact or parts.query or parts.fragment):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return tuple(origin.rstrip("/") for origin in value)

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
                raise ValueError(f"{entry!r} is not a host:port like localhost:3000")
        return tuple(entry.lower() for entry in value)

    @field_validator("s3_notify_arns")
    @classmethod
    def _check_arns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arn in value:
            if not re.fullmatch(r"arn:minio:sqs:[^:]*:[^:]+:webhook", arn):
                raise ValueError(
                    f"{arn!r} is not a MinIO webhook ARN like arn:minio:sqs::ID:webhook"
                )
        return value

    @field_validator("s3_endpoint", "s3_public_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if value == "":
            return value
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise ValueError("must be an http(s) URL with no path, like http://127.0.0.1:9000")
        return value.rstrip("/")

    @field_validator("clamd_address")
    @classmethod
    def _check_clamd_address(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_clamd_address(value)
        return value

    @field_validator("scan_command")
    @classmethod
    def _check_scan_command(cls, value: str) -> str:
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"is not a command line ({exc})") from None
        if value.strip() and not argv:
            raise ValueError("is not a command line")
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("jwt_secret", "webhook_token")
    @classmethod
    def _reject_placeholders(cls, value: str) -> str:
        if value.lower().strip() in PLACEHOLDER_SECRETS or len(set(value)) < 8:
            raise ValueError("is a placeholder; generate one with: openssl rand -hex 32")
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("BROKER_DB_POOL_MIN must not exceed BROKER_DB_POOL_MAX")
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "BROKER_CORS_ORIGINS must list exact origins, not *, "
                "when BROKER_CORS_ALLOW_CREDENTIALS is on"
            )
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError(
                "BROKER_WEBHOOK_LEASE_SECONDS must exceed BROKER_WEBHOOK_TIMEOUT_SECONDS "
                "(a lease must outlast the POST it covers)"
            )
        if self.webhook_endpoint_concurrency > self.webhook_concurrency:
            raise ValueError(
                "BROKER_WEBHOOK_ENDPOINT_CONCURRENCY must not exceed BROKER_WEBHOOK_CONCURRENCY"
            )
        if self.clamd_address and self.scan_command:
            raise ValueError(
                "BROKER_CLAMD_ADDRESS and BROKER_SCAN_COMMAND are both set; choose one engine"
            )
        if self.shutdown_timeout_seconds < self.shutdown_drain_seconds + 6:
            raise ValueError(
                "BROKER_SHUTDOWN_TIMEOUT_SECONDS must be at least BROKER_SHUTDOWN_DRAIN_SECONDS"
                " + 6 (requests in flight and the lifespan need their time after draining)"
            )
        return self

    @property
    def public_endpoint(self) -> str:
        """The S3 endpoint browsers use; presigned URLs are signed for this host."""
        return self.s3_public_endpoint or self.s3_endpoint


def describe(exc: ValidationError) -> str:
    """A model's validation problems on one line, each prefixed with where it is."""
    return "; ".join(
        ".".join(str(part) for part in error["loc"])
        + ": "
        + error["msg"].removeprefix("Value error, ")
        for error in exc.errors()
    )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            name = f"BROKER_{field.upper()}" if field else "settings"
            message = "is required but not set" if error["type"] == "missing" else error["msg"]
            problems.append(f"{name} {message.removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
