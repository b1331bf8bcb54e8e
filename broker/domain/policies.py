"""Named upload policies (what may be uploaded, how big, where, for how long) from a TOML file."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator

from broker.config import ConfigError, Settings, check_media_type_patterns, describe
from broker.domain.rate_limits import Rate, RateLimits, RateRule, parse_rate

DEFAULT = "default"
KEY_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*/$")
POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_OBJECT_BYTES = 5 * 1024**4  # MinIO's (and S3's) largest object
Seconds = Annotated[int, Field(ge=1, le=604800)]


class Quota(BaseModel):
    """Per-owner limits on live (pending + finalized) uploads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: ByteSize | None = Field(default=None, gt=0)
    count: int | None = Field(default=None, gt=0)


class Sniff(StrEnum):
    """What finalization does with the type detected in an object's first bytes."""

    REJECT = "reject"  # a type that contradicts the declared one rejects the upload
    RECORD = "record"  # the detected type is stored on the record, nothing is refused
    OFF = "off"  # the bytes are not read


class ScanFailure(StrEnum):
    """What happens to a scanned policy's uploads while no scanner answers."""

    CLOSED = "closed"  # they stay scanning, retried with backoff, never downloadable
    OPEN = "open"  # they are finalized, recorded as scan_result = skipped


class Policy(BaseModel):
    """One named set of upload rules, in the spirit of UploadThing's file routes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    content_types: tuple[str, ...] = ("*/*",)
    min_size: ByteSize = ByteSize(1)
    max_size: ByteSize = ByteSize(5 * 1024**3)
    key_prefix: str = "uploads/"
    url_ttl_seconds: Seconds = 900
    pending_ttl_seconds: int = Field(default=86400, ge=60)
    multipart: bool = True
    quota: Quota = Quota()
    # None: reject for a policy with a type allow-list, record for one that takes any type.
    sniff: Sniff | None = None
    scan: bool = False
    scan_fail: ScanFailure = ScanFailure.CLOSED
    # Downloads always as an attachment, even for types that may be shown inline.
    attachment_only: bool = False
    # Per-owner limits of this policy's creates, part signings and downloads.
    rate_limits: RateLimits = RateLimits()

    @property
    def sniff_mode(self) -> Sniff:
        if self.sniff is not None:
            return self.sniff
        return Sniff.RECORD if "*/*" in self.content_types else Sniff.REJECT

    @field_validator("content_types")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_media_type_patterns(value)

    @field_validator("min_size", "max_size")
    @classmethod
    def _check_size(cls, value: ByteSize) -> ByteSize:
        if not 1 <= value <= MAX_OBJECT_BYTES:
            raise ValueError(f"must be between 1 byte and 5 TiB, not {value}")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not KEY_PREFIX.match(value):
            raise ValueError("must be lower-case path segments ending in '/', like 'avatars/'")
        return value

    def allows_content_type(self, essence: str) -> bool:
        """Whether a lower-case `type/subtype` matches one of the policy's patterns."""
        return any(fnmatch.fnmatchcase(essence, pattern) for pattern in self.content_types)


class Policies(BaseModel):
    """Every policy by name, and the quota across all of them."""

    model_config = ConfigDict(frozen=True)

    by_name: dict[str, Policy]
    global_quota: Quota = Quota()
    # Failed authentications allowed per client address (BROKER_RATE_LIMIT_FAILED_AUTH).
    failed_auth_limit: RateRule | None = None

    def get(self, name: str | None) -> Policy | None:
        return self.by_name.get(name or DEFAULT)

    @property
    def default(self) -> Policy:
        return self.by_name[DEFAULT]

    @property
    def limit_downloads(self) -> bool:
        """Whether any policy limits its owners' downloads."""
        return any(policy.rate_limits.downloads for policy in self.by_name.values())


def default_policy(settings: Settings) -> Policy:
    """The policy that applies without a policies file, built from the BROKER_* limits."""
    return Policy(
        name=DEFAULT,
        content_types=settings.allowed_content_types,
        max_size=ByteSize(settings.max_upload_bytes),
        url_ttl_seconds=settings.upload_url_ttl_seconds,
        pending_ttl_seconds=settings.pending_ttl_seconds,
    )


def _setting_rate(settings: Settings, name: str) -> Rate | None:
    """A BROKER_RATE_LIMIT_* setting as a Rate (None when empty), or ConfigError naming it."""
    value = getattr(settings, name).strip()
    if not value:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise ConfigError(f"BROKER_{name.upper()}: {exc}") from None


def _default_rate_limits(settings: Settings) -> RateLimits:
    return RateLimits(
        create=_setting_rate(settings, "rate_limit_create"),
        parts=_setting_rate(settings, "rate_limit_parts"),
        downloads=_setting_rate(settings, "rate_limit_downloads"),
    )


def load_policies(settings: Settings) -> Policies:
    """The policies of BROKER_POLICIES_FILE (plus the built-in default), or ConfigError.

    The BROKER_RATE_LIMIT_* limits apply to every policy that sets none of its own.
    """
    defaults = _default_rate_limits(settings)
    failed_auth = _setting_rate(settings, "rate_limit_failed_auth")
    builtin = default_policy(settings)
    builtin = builtin.model_copy(update={"rate_limits": defaults})
    if settings.policies_file is None:
        return Policies(by_name={DEFAULT: builtin}, failed_auth_limit=failed_auth)
    path = settings.policies_file
    where = f"BROKER_POLICIES_FILE ({path})"
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = set(document) - {"policies", "quota"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level keys {sorted(unknown)}")
    by_name = {DEFAULT: builtin}
    for name, table in document.get("policies", {}).items():
        if not POLICY_NAME.match(name):
            raise ConfigError(f"{where}: policy name {name!r} must be like 'avatars'")
        policy = _parse(where, f"policy {name!r}", Policy, {"name": name, **table})
        limits = policy.rate_limits.over(defaults)
        by_name[name] = policy.model_copy(update={"rate_limits": limits})
    global_quota = _parse(where, "[quota]", Quota, document.get("quota", {}))
    for policy in by_name.values():
        if policy.min_size > policy.max_size:
            raise ConfigError(f"{where}: policy {policy.name!r}: min_size exceeds max_size")
    return Policies(by_name=by_name, global_quota=global_quota, failed_auth_limit=failed_auth)


def _parse(where: str, what: str, model: type[Any], table: object) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {what} must be a table")
    try:
        return model(**table)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {what}: {describe(exc)}") from None
