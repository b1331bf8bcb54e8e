"""Tokens of identity providers (RS256/ES256 with a JWKS), against the real broker,
PostgreSQL and MinIO, with two local providers serving their keys over HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from broker import auth, config, wiring
from broker.adapters import db, queries
from broker.issuers import load_issuers
from tests.conftest import create_upload, put_bytes, wait_for_status
from tests.identity import Key, ProviderServer, forge_hs256_with_public_key, provider_server
from tests.integration.test_companion import Plugin, meta
from tests.waiting import until

# Short cache times, so the test sees rotation, an outage and the cache running out.
ACME = {
    "audience": "https://uploads.example.test",
    "algorithms": ["RS256", "ES256"],
    "admin": {"claim": "roles", "value": "upload-admin"},
    "jwks_min_fetch_interval_seconds": 0.5,
}
GLOBEX = {
    "audience": "https://uploads.example.test",
    "jwks_refresh_seconds": 1,
    "jwks_max_age_seconds": 3,
    "jwks_min_fetch_interval_seconds": 0.5,
    "policies_claim": "upload_policies",
}


@pytest.fixture(scope="module")
def acme() -> Iterator[ProviderServer]:
    with provider_server() as server:
        yield server


@pytest.fixture(scope="module")
def globex() -> Iterator[ProviderServer]:
    with provider_server() as server:
        yield server


@pytest.fixture
def settings(settings: config.Settings, acme: ProviderServer, globex: ProviderServer) -> Any:
    """The suite's broker, trusting both providers: acme by OIDC discovery, globex by its
    JWKS URL."""
    acme.failing = globex.failing = False
    issuers = {
        "acme": {**ACME, "issuer": acme.provider.issuer},
        "globex": {
            **GLOBEX,
            "issuer": globex.provider.issuer,
            "jwks_url": f"{globex.provider.issuer}/jwks.json",
        },
    }
    return settings.model_copy(update={"issuers": json.dumps({"issuers": issuers})})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(api: httpx.Client, token: str, **body: Any) -> httpx.Response:
    request = {"filename": "a.txt", "content_type": "text/plain", "size": 5, **body}
    return api.post("/v1/uploads", json=request, headers=bearer(token))


def refused(api: httpx.Client, token: str) -> str:
    response = create(api, token)
    assert response.status_code == 401, response.text
    return str(response.json()["error"]["code"])


@pytest.mark.parametrize("key_index", [0, 1], ids=["RS256", "ES256"])
def test_a_provider_token_uploads_with_no_shared_secret(api, acme, key_index):
    token = acme.provider.token("alice", key=acme.provider.keys[key_index])
    upload = create_upload(api, bearer(token), b"hello")
    assert put_bytes(upload, b"hello").status_code == 200
    wait_for_status(api, bearer(token), upload["id"], "finalized")
    download = api.get(f"/v1/uploads/{upload['id']}/download", headers=bearer(token))
    assert httpx.get(download.json()["url"]).content == b"hello"


def test_tokens_with_wrong_claims_or_forged_signatures_are_401_with_their_code(api, acme):
    provider = acme.provider
    key = provider.keys[0]
    claims = jwt.decode(provider.token(), options={"verify_signature": False})
    assert refused(api, provider.token(aud="https://another-app.test")) == "ERR_TOKEN_AUDIENCE"
    assert refused(api, provider.token(iss="https://not-trusted.test")) == "ERR_TOKEN_ISSUER"
    assert refused(api, provider.token(ttl=-120)) == "ERR_TOKEN_EXPIRED"
    unsigned = jwt.encode(claims, None, "none", headers={"kid": key.kid})
    assert refused(api, unsigned) == "ERR_TOKEN_ALGORITHM"
    forged = forge_hs256_with_public_key(claims, key)
    assert refused(api, forged) == "ERR_TOKEN_ALGORITHM"
    assert refused(api, provider.token(key=Key.rsa())) == "ERR_TOKEN_KEY_UNKNOWN"
    assert refused(api, provider.token(key=Key.rsa(kid=key.kid))) == "ERR_TOKEN_SIGNATURE"


def test_a_rotated_key_is_picked_up_without_a_restart_and_unknown_kids_do_not_flood(api, acme):
    assert create(api, acme.provider.token()).status_code == 201
    new_key = acme.provider.rotate()
    # The broker refetches the JWKS for the unknown kid (once per half second at most).
    until(
        "the rotated key accepted",
        lambda: create(api, acme.provider.token(key=new_key)).status_code == 201,
        timeout=10,
    )
    before, started = acme.jwks_fetches(), time.monotonic()
    for _ in range(40):
        assert refused(api, acme.provider.token(key=Key.rsa())) == "ERR_TOKEN_KEY_UNKNOWN"
    allowed = 1 + (time.monotonic() - started) / ACME["jwks_min_fetch_interval_seconds"]
    assert acme.jwks_fetches() - before <= allowed


def test_provider_down_cached_keys_serve_until_their_age_then_503(api, globex):
    def fresh_token() -> str:
        # A new token each time (a token once verified is accepted until it expires).
        return globex.provider.token("carol", upload_policies=["default"], jti=uuid.uuid4().hex)

    assert create(api, fresh_token()).status_code == 201
    globex.failing = True
    assert create(api, fresh_token()).status_code == 201  # cached keys
    # Past jwks_max_age_seconds without a good fetch: the documented 503, with Retry-After.
    until(
        "a 503 once cached keys are too old",
        lambda: create(api, fresh_token()).status_code == 503,
        15,
    )
    response = create(api, fresh_token())
    assert response.json()["error"]["code"] == "ERR_ISSUER_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) >= 1
    globex.failing = False
    until(
        "keys once the provider answers", lambda: create(api, fresh_token()).status_code == 201, 10
    )


def test_owners_never_cross_issuers(api, acme, globex, settings):
    """BOLA across issuers: the same sub from two providers, and a local token, are three
    owners; a local token cannot name a provider's owner."""
    alice_acme = bearer(acme.provider.token("alice"))
    upload = create_upload(api, alice_acme, b"hello")
    others = [
        bearer(globex.provider.token("alice", upload_policies=["default"])),
        bearer(auth.issue_token(settings.jwt_secret, "alice")),
    ]
    for headers in others:
        for method, path in (
            ("GET", f"/v1/uploads/{upload['id']}"),
            ("GET", f"/v1/uploads/{upload['id']}/download"),
            ("DELETE", f"/v1/uploads/{upload['id']}"),
            ("POST", f"/v1/uploads/{upload['id']}/parts"),
        ):
            response = api.request(method, path, headers=headers, json={"part_numbers": [1]})
            assert response.status_code == 404, (method, path, response.text)
        assert api.get("/v1/uploads", headers=headers).json()["items"] == []
    # The Uppy (Companion) routes, with the provider's token in the header.
    alices = Plugin.v5(api, acme.provider.token("alice"))
    multipart = alices.create(
        "v.bin", "application/octet-stream", meta("v", "b/c", b"x" * 10)
    ).json()
    stranger = Plugin.v5(api, globex.provider.token("alice", upload_policies=["default"]))
    for response in (
        stranger.sign(multipart, 1),
        stranger.list_parts(multipart),
        stranger.complete(multipart, {1: '"etag"'}),
        stranger.abort(multipart),
    ):
        assert response.status_code == 404, response.text
    assert alices.list_parts(multipart).status_code == 200
    impostor = auth.issue_token(settings.jwt_secret, "acme:alice")
    assert refused(api, impostor) == "ERR_TOKEN_INVALID"
    mine = api.get("/v1/uploads", headers=alice_acme).json()["items"]
    assert len(mine) == 2
    assert upload["id"] in {item["id"] for item in mine}


def test_claims_grant_admin_and_policies(api, acme, globex):
    admin = bearer(acme.provider.token("ops", roles=["upload-admin"]))
    upload = create_upload(api, bearer(acme.provider.token("erin")), b"hello")
    listed = api.get("/v1/admin/uploads", headers=admin, params={"owner": "acme:erin"})
    assert [item["id"] for item in listed.json()["items"]] == [upload["id"]]
    plain = bearer(acme.provider.token("ops", roles=["viewer"]))
    assert api.get("/v1/admin/uploads", headers=plain).status_code == 403
    avatars_only = globex.provider.token("frank", upload_policies=["avatars"])
    response = create(api, avatars_only)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ERR_POLICY_NOT_ALLOWED"
    image = {"filename": "a.png", "content_type": "image/png", "size": 5, "policy": "avatars"}
    assert create(api, avatars_only, **image).status_code == 201


def test_a_provider_whose_namespace_local_owners_hold_stops_the_start(settings, api):
    """Local owners named "initech:..." existed before: adding a provider called initech
    would hand their uploads to its users, so the broker refuses to start with it."""
    local = bearer(auth.issue_token(settings.jwt_secret, "initech:milton"))
    create_upload(api, local, b"stapler")
    issuers = {"issuers": {"initech": {"issuer": "https://id.initech.test", **GLOBEX}}}
    clashing = settings.model_copy(update={"issuers": json.dumps(issuers)})

    async def start() -> None:
        database = await db.Database.connect(settings.database_url, min_size=1, max_size=1)
        try:
            await wiring.claim_owner_namespaces(queries.Queries(database), load_issuers(clashing))
        finally:
            await database.close()

    with pytest.raises(config.ConfigError, match=r"initech.*initech:milton"):
        asyncio.run(start())
    # The providers already claimed (at this broker's start) are claimed for good.
    assert asyncio.run(_claimed(settings)) == {"acme", "globex"}


async def _claimed(settings: config.Settings) -> set[str]:
    database = await db.Database.connect(settings.database_url, min_size=1, max_size=1)
    try:
        async with database.connection() as conn:
            rows = await conn.fetch("SELECT name FROM issuer_namespaces")
            return {row["name"] for row in rows}
    finally:
        await database.close()
