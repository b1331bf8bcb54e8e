"""Trusted token issuers (identity providers) from BROKER_ISSUERS_FILE (TOML) or
BROKER_ISSUERS (the same document as JSON). Pure: reading the file is the only I/O.

The broker always trusts its own HS256 tokens as the issuer named `local` (tokens without
an `iss` claim); each issuer configured here adds one whose RS256/ES256/EdDSA tokens are
checked against the keys it publishes (JWKS).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.config import ConfigError, Settings, describe

LOCAL = "local"
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
# Public-key algorithms only: an HS* token would be checked with a secret the provider
# shares with every app, and `none` is no signature at all.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DISCOVERY_PATH = "/.well-known/openid-configuration"


class ClaimGrant(BaseModel):
    """A claim that grants something when it equals `value` or is a list holding it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: str = Field(min_length=1)
    value: str | bool = True

    def granted_by(self, claims: dict[str, Any]) -> bool:
        found = claim_value(claims, self.claim)
        if isinstance(found, list):
            return self.value in found
        return found == self.value


class Issuer(BaseModel):
    """One identity provider whose tokens the broker accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # owners of this issuer are "<name>:<owner claim>"
    issuer: str = Field(min_length=1)  # the exact `iss` of its tokens
    audience: tuple[str, ...] = Field(min_length=1)  # `aud` must hold one of these
    jwks_url: str | None = None  # None: found by OIDC discovery from the issuer's URL
    algorithms: tuple[str, ...] = ("RS256",)
    owner_claim: str = "sub"
    admin: ClaimGrant | None = None
    # A claim listing the policies (and so the quotas) its owner may upload under; None:
    # every policy.
    policies_claim: str | None = None
    leeway_seconds: int | None = Field(default=None, ge=0, le=600)  # None: BROKER_JWT_LEEWAY
    jwks_refresh_seconds: float = Field(default=300, ge=1, le=86400)
    # While the provider does not answer, cached keys are used until they are this old.
    jwks_max_age_seconds: float = Field(default=3600, ge=1, le=7 * 86400)
    # At most one fetch per interval, whatever the tokens ask (unknown kids included).
    jwks_min_fetch_interval_seconds: float = Field(default=10, ge=0, le=3600)
    jwks_timeout_seconds: float = Field(default=5, gt=0, le=60)
    allow_http: bool = False  # plain http for a provider that is not on loopback

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("must be lower-case letters, digits and '-', like 'auth0'")
        if value == LOCAL:
            raise ValueError("'local' is the broker's own HS256 issuer")
        return value

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = sorted(set(value) - ASYMMETRIC_ALGORITHMS)
        if refused or not value:
            raise ValueError(
                f"{refused or 'an empty list'} not allowed: choose from "
                f"{sorted(ASYMMETRIC_ALGORITHMS)} (HS* and none are never accepted "
                "from an identity provider)"
            )
        return value

    @model_validator(mode="after")
    def _check_urls(self) -> Issuer:
        if self.jwks_url is None:
            self._check_url("issuer (for OIDC discovery)", self.issuer)
        else:
            self._check_url("jwks_url", self.jwks_url)
        return self

    def _check_url(self, what: str, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return
        if (
            parts.scheme == "http"
            and parts.hostname
            and (self.allow_http or _is_loopback(parts.hostname))
        ):
            return
        raise ValueError(
            f"{what} must be an https URL (http only on loopback, or with allow_http = true)"
        )

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + DISCOVERY_PATH

    def leeway(self, default: int) -> int:
        return default if self.leeway_seconds is None else self.leeway_seconds

    def owner_of(self, subject: str) -> str:
        return f"{self.name}:{subject}"


def claim_value(claims: dict[str, Any], name: str) -> Any:
    """A claim by its exact name (Auth0's are URLs, dots and all), else by a dotted path
    into nested objects (Keycloak's `realm_access.roles`)."""
    if name in claims:
        return claims[name]
    found: Any = claims
    for part in name.split("."):
        if not isinstance(found, dict) or part not in found:
            return None
        found = found[part]
    return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_issuers(settings: Settings) -> tuple[Issuer, ...]:
    """The configured identity providers (none by default), or ConfigError naming the
    variable."""
    if settings.issuers_file is not None and settings.issuers:
        raise ConfigError("BROKER_ISSUERS_FILE and BROKER_ISSUERS are both set; choose one")
    if settings.issuers_file is not None:
        where = f"BROKER_ISSUERS_FILE ({settings.issuers_file})"
        try:
            document: Any = tomllib.loads(Path(settings.issuers_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    elif settings.issuers:
        where = "BROKER_ISSUERS"
        try:
            document = json.loads(settings.issuers)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON: {exc}") from None
    else:
        return ()
    if not isinstance(document, dict) or set(document) - {"issuers"}:
        raise ConfigError(f"{where}: expected one top-level key, 'issuers'")
    tables = document.get("issuers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: 'issuers' must map names to tables")
    issuers = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: issuer {name!r} must be a table")
        try:
            issuers.append(Issuer(**{**table, "name": name}))
        except ValidationError as exc:
            raise ConfigError(f"{where}: issuer {name!r}: {describe(exc)}") from None
    seen = [issuer.issuer for issuer in issuers]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"{where}: two issuers have the same `issuer` (iss)")
    return tuple(issuers)
