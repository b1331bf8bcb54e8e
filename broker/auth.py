"""Bearer tokens: who is asking. Pure, but for the issuers' keys, which come through a
KeySource (broker/adapters/jwks.py fetches them).

Two kinds of issuer:
- `local`: HS256 tokens signed with BROKER_JWT_SECRET, without an `iss` claim (the app's
  server mints them, as does `broker token`). Their `sub` is the owner.
- identity providers (broker/issuers.py): RS256/ES256/EdDSA tokens whose `iss` names one,
  checked against the keys it publishes. The owner is "<issuer name>:<owner claim>", so the
  same `sub` from two issuers is two owners, and a local `sub` may not take that form.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import jwt

from broker.hmac_key import HmacSha256Key
from broker.issuers import LOCAL, Issuer, claim_value

ALGORITHM = "HS256"
UPPY_SCOPE = "uppy"
MAX_OWNER_CLAIM = 255


class InvalidToken(Exception):
    """The token is missing, expired, forged, malformed, or not from a trusted issuer.

    `reason` says which, in a word the API turns into a stable error code: malformed,
    expired, signature, audience, issuer, algorithm, unknown_key, claims, scope.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class KeysUnavailable(Exception):
    """An issuer's keys could not be fetched and none cached are recent enough to use."""

    def __init__(self, issuer: str, retry_after: int) -> None:
        super().__init__(f"the signing keys of issuer {issuer!r} cannot be fetched")
        self.issuer = issuer
        self.retry_after = retry_after


class SigningKey(NamedTuple):
    """One key of an issuer's JWKS: the public key, and the algorithm it is declared for
    (its `alg` member), if it declares one."""

    key: Any
    algorithm: str | None


class KeySource(Protocol):
    async def key(self, issuer: Issuer, kid: str | None) -> SigningKey | None:
        """The issuer's key with this `kid` (its only key when `kid` is None), None when
        it has no such key; raises KeysUnavailable."""
        ...


class NoKeys:
    """The key source without identity providers."""

    async def key(self, issuer: Issuer, kid: str | None) -> SigningKey | None:
        return None


@dataclass(frozen=True)
class Principal:
    """Who is asking."""

    owner: str  # the key the records are owned by
    issuer: str = LOCAL
    admin: bool = False
    policies: frozenset[str] | None = None  # the policies it may upload under; None: all

    def may_use(self, policy: str) -> bool:
        return self.policies is None or policy in self.policies


def issue_token(
    secret: str,
    subject: str,
    ttl_seconds: int = 3600,
    admin: bool = False,
    scope: str | None = None,
) -> str:
    """A signed token of the local issuer for `subject`, valid for `ttl_seconds`; a
    `scope` narrows it to the routes that ask for that scope (and nothing else accepts it)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["admin"] = True
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def issue_events_token(secret: str, subject: str, upload_id: str, ttl_seconds: int = 600) -> str:
    """A token that only opens the live status stream of one upload, for its owner.

    EventSource cannot send headers, so it travels in the URL: hence short-lived and
    narrow. A bare HMAC (not a JWT) because it is minted with every create, on the hot path.
    """
    expires = int(time.time()) + ttl_seconds
    return f"{expires}.{_events_signature(secret, subject, upload_id, expires)}"


def verify_events_token(secret: str, token: str, upload_id: str, owner: str) -> Principal:
    """The owner, if `token` was issued for exactly this upload of theirs and is unexpired."""
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or int(expires_text) < time.time():
        raise InvalidToken("expired", "the stream token is malformed or expired")
    expected = _events_signature(secret, owner, upload_id, int(expires_text))
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("signature", "this token does not open this upload's stream")
    return Principal(owner=owner)


_EVENTS_KEYS: dict[str, HmacSha256Key] = {}  # by secret: one per process in practice


def _events_signature(secret: str, subject: str, upload_id: str, expires: int) -> str:
    key = _EVENTS_KEYS.get(secret)
    if key is None:
        key = _EVENTS_KEYS[secret] = HmacSha256Key(secret.encode())
    digest = key.digest(f"upload-events\n{upload_id}\n{subject}\n{expires}".encode())
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Authenticator:
    """Verifies the bearer tokens of the local issuer and of the configured providers."""

    # Verified tokens and their expiry: a client sends the same token with every request,
    # and checking a signature costs more than the rest of the auth step.
    CACHE_MAX = 4096

    def __init__(
        self,
        secret: str,
        issuers: Sequence[Issuer] = (),
        keys: KeySource | None = None,
        leeway_seconds: int = 0,
    ) -> None:
        self._secret = secret
        self._by_iss = {issuer.issuer: issuer for issuer in issuers}
        self._namespaces = tuple(f"{issuer.name}:" for issuer in issuers)
        self._keys = keys or NoKeys()
        self._leeway = leeway_seconds
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; InvalidToken, or KeysUnavailable when its
        issuer's keys cannot be had. A local token with a `scope` is refused: scoped tokens
        are good for their routes only (verify_scoped)."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        issuer = self._issuer_of(token)
        if issuer is None:
            claims = self._local_claims(token)
            if "scope" in claims:
                raise InvalidToken("scope", "a scoped token cannot be used here")
            principal = self._local_principal(claims)
        else:
            claims = await self._provider_claims(issuer, token)
            principal = _provider_principal(issuer, claims)
        if len(self._verified) >= self.CACHE_MAX:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    def verify_scoped(self, token: str, scope: str) -> Principal:
        """The principal of a local token issued with exactly this scope, or InvalidToken."""
        if self._issuer_of(token) is not None:
            raise InvalidToken("scope", f"this route needs a local token with scope {scope!r}")
        claims = self._local_claims(token)
        if claims.get("scope") != scope:
            raise InvalidToken("scope", f"this route needs a token with scope {scope!r}")
        return self._local_principal(claims)

    def _issuer_of(self, token: str) -> Issuer | None:
        """The provider named by the token's (unverified) `iss`; None for a local token."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed", f"the token is not a JWT: {exc}") from exc
        iss = unverified.get("iss")
        if iss is None:
            return None
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise InvalidToken("issuer", f"tokens of issuer {str(iss)[:200]!r} are not trusted")
        return issuer

    def _local_claims(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(  # type: ignore[no-any-return]
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=self._leeway,
                options={"require": ["sub", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise _invalid(exc) from exc

    def _local_principal(self, claims: dict[str, Any]) -> Principal:
        owner = _owner_claim(claims, "sub")
        if owner.startswith(self._namespaces):
            raise InvalidToken(
                "claims", "a local token's sub may not start with an identity provider's name"
            )
        return Principal(owner=owner, admin=claims.get("admin") is True)

    async def _provider_claims(self, issuer: Issuer, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in issuer.algorithms:
            raise InvalidToken(
                "algorithm",
                f"issuer {issuer.name!r} tokens must be signed with one of "
                f"{list(issuer.algorithms)}, not {str(algorithm)[:20]!r}",
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed", "the token's kid is not a string")
        signing = await self._keys.key(issuer, kid)
        if signing is None:
            raise InvalidToken(
                "unknown_key", f"issuer {issuer.name!r} publishes no key {str(kid)[:100]!r}"
            )
        if signing.algorithm is not None and signing.algorithm != algorithm:
            raise InvalidToken("algorithm", f"key {kid!r} is for {signing.algorithm}")
        try:
            return jwt.decode(  # type: ignore[no-any-return]
                token,
                signing.key,
                algorithms=[algorithm],
                audience=list(issuer.audience),
                issuer=issuer.issuer,
                leeway=issuer.leeway(self._leeway),
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise _invalid(exc) from exc


def _provider_principal(issuer: Issuer, claims: dict[str, Any]) -> Principal:
    subject = _owner_claim(claims, issuer.owner_claim)
    policies: frozenset[str] | None = None
    if issuer.policies_claim is not None:
        granted = claim_value(claims, issuer.policies_claim)
        if isinstance(granted, str):
            granted = [granted]
        if not isinstance(granted, list):
            granted = []
        policies = frozenset(name for name in granted if isinstance(name, str))
    return Principal(
        owner=issuer.owner_of(subject),
        issuer=issuer.name,
        admin=issuer.admin is not None and issuer.admin.granted_by(claims),
        policies=policies,
    )


def _owner_claim(claims: dict[str, Any], name: str) -> str:
    owner = claim_value(claims, name)
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER_CLAIM:
        raise InvalidToken(
            "claims", f"{name} must be a non-empty string of at most {MAX_OWNER_CLAIM} characters"
        )
    return owner


def _invalid(exc: jwt.PyJWTError) -> InvalidToken:
    """PyJWT's verdict as an InvalidToken with its reason."""
    reasons: list[tuple[type[jwt.PyJWTError], str]] = [
        (jwt.ExpiredSignatureError, "expired"),
        (jwt.InvalidAudienceError, "audience"),
        (jwt.InvalidIssuerError, "issuer"),
        (jwt.InvalidAlgorithmError, "algorithm"),
        (jwt.InvalidSignatureError, "signature"),
        (jwt.InvalidKeyError, "signature"),
        (jwt.MissingRequiredClaimError, "claims"),
        (jwt.ImmatureSignatureError, "claims"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return InvalidToken(reason, str(exc))
    return InvalidToken("malformed", str(exc))
