"""Bearer tokens: the local issuer's and identity providers' (pure: keys from a dict)."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from broker import auth
from broker.issuers import ClaimGrant, Issuer
from tests.identity import Key, Provider, forge_hs256_with_public_key

SECRET = "0123456789abcdef0123456789abcdef"
PROVIDER = Provider(issuer="https://id.example.test/")
ISSUER = Issuer(
    name="acme",
    issuer=PROVIDER.issuer,
    audience=PROVIDER.audience,
    algorithms=("RS256", "ES256"),
    admin=ClaimGrant(claim="roles", value="upload-admin"),
    policies_claim="upload_policies",
)


class StaticKeys:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def key(self, issuer: Issuer, kid: str | None) -> auth.SigningKey | None:
        for key in self.provider.keys:
            if key.kid == kid:
                return auth.SigningKey(key.private.public_key(), key.algorithm)
        return None


def authenticator(leeway: int = 0) -> auth.Authenticator:
    return auth.Authenticator(SECRET, [ISSUER], StaticKeys(PROVIDER), leeway)


def verify(token: str, leeway: int = 0) -> auth.Principal:
    return asyncio.run(authenticator(leeway).verify(token))


def reason(token: str) -> str:
    with pytest.raises(auth.InvalidToken) as refused:
        verify(token)
    return refused.value.reason


def test_local_token_verifies_to_its_subject():
    assert verify(auth.issue_token(SECRET, "alice")) == auth.Principal(owner="alice")
    assert verify(auth.issue_token(SECRET, "root", admin=True)).admin


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (auth.issue_token("another-secret-0123456789abcdef!", "alice"), "signature"),
        (auth.issue_token(SECRET, "alice", ttl_seconds=-1), "expired"),
        (jwt.encode({"sub": "alice"}, SECRET, "HS256"), "claims"),
        (jwt.encode({"sub": "", "exp": 9999999999}, SECRET, "HS256"), "claims"),
        (jwt.encode({"sub": "alice", "exp": 9999999999}, SECRET * 2, "HS512"), "algorithm"),
        (jwt.encode({"sub": "alice", "exp": 9999999999}, None, "none"), "algorithm"),
        (auth.issue_token(SECRET, "alice", scope="uppy"), "scope"),
        # A local token may not name an owner in an identity provider's namespace.
        (auth.issue_token(SECRET, "acme:alice"), "claims"),
        ("garbage", "malformed"),
    ],
)
def test_bad_local_tokens_are_refused_with_their_reason(token, expected):
    assert reason(token) == expected


@pytest.mark.parametrize("key", [PROVIDER.keys[0], PROVIDER.keys[1]], ids=["RS256", "ES256"])
def test_provider_token_owner_is_namespaced_by_issuer(key):
    principal = verify(PROVIDER.token("alice", key=key))
    assert principal.owner == "acme:alice"
    assert principal.issuer == "acme"
    assert not principal.admin
    assert principal.policies == frozenset()


def test_claims_grant_admin_and_policies():
    token = PROVIDER.token("ops", roles=["viewer", "upload-admin"], upload_policies=["avatars"])
    principal = verify(token)
    assert principal.admin
    assert principal.may_use("avatars")
    assert not principal.may_use("default")
    assert verify(PROVIDER.token("bob", upload_policies="avatars")).policies == {"avatars"}


def test_provider_tokens_with_wrong_claims_are_refused():
    assert reason(PROVIDER.token(aud="https://someone-else.test")) == "audience"
    assert reason(PROVIDER.token(ttl=-60)) == "expired"
    assert reason(PROVIDER.token(exp=None)) == "claims"
    untrusted = Provider(issuer="https://evil.example.test/", keys=PROVIDER.keys)
    assert reason(untrusted.token()) == "issuer"


def test_clock_skew_allowance():
    late = PROVIDER.token(ttl=-20)
    with pytest.raises(auth.InvalidToken):
        verify(late, leeway=0)
    assert verify(late, leeway=30).owner == "acme:alice"


def test_forged_provider_tokens_are_refused():
    key = PROVIDER.keys[0]
    claims = jwt.decode(PROVIDER.token(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, "none", headers={"kid": key.kid})
    assert reason(unsigned) == "algorithm"
    assert reason(forge_hs256_with_public_key(claims, key)) == "algorithm"
    stranger = Key.rsa(kid=key.kid)  # the right kid, someone else's key
    assert reason(PROVIDER.token(key=stranger)) == "signature"
    assert reason(PROVIDER.token(key=Key.rsa())) == "unknown_key"


def test_a_key_declared_for_another_algorithm_is_refused():
    rsa_key = PROVIDER.keys[0]
    mislabelled = Key(rsa_key.kid, "PS256", rsa_key.private)
    issuer = Issuer(**{**ISSUER.model_dump(), "algorithms": ("RS256", "PS256")})
    checker = auth.Authenticator(SECRET, [issuer], StaticKeys(PROVIDER))
    with pytest.raises(auth.InvalidToken) as refused:
        asyncio.run(checker.verify(PROVIDER.token(key=mislabelled)))
    assert refused.value.reason == "algorithm"


def test_scoped_tokens_only_where_their_scope_is_asked():
    checker = authenticator()
    scoped = auth.issue_token(SECRET, "alice", scope=auth.UPPY_SCOPE)
    assert checker.verify_scoped(scoped, auth.UPPY_SCOPE).owner == "alice"
    for token in (auth.issue_token(SECRET, "alice"), PROVIDER.token()):
        with pytest.raises(auth.InvalidToken):
            checker.verify_scoped(token, auth.UPPY_SCOPE)


def test_events_token_opens_one_upload_of_one_owner():
    token = auth.issue_events_token(SECRET, "alice", "u1")
    assert auth.verify_events_token(SECRET, token, "u1", "alice").owner == "alice"
    for upload, owner in (("u2", "alice"), ("u1", "bob")):
        with pytest.raises(auth.InvalidToken):
            auth.verify_events_token(SECRET, token, upload, owner)
    expired = f"{int(time.time()) - 1}.{token.partition('.')[2]}"
    with pytest.raises(auth.InvalidToken):
        auth.verify_events_token(SECRET, expired, "u1", "alice")
