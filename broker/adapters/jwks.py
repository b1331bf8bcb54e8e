"""The identity providers' signing keys (the KeySource port): each issuer's JWKS, found by
OIDC discovery unless its URL is configured, fetched with aiohttp and cached.

Why not PyJWT's PyJWKClient: it fetches with urllib, blocking the event loop for the whole
fetch, and refetches for every token with an unknown `kid`, so a flood of made-up kids is a
flood of requests to the provider. PyJWT still parses and checks the keys (PyJWKSet).

Per issuer:
- fetched when the broker starts, then:
- a `kid` in a fresh set (younger than jwks_refresh_seconds) costs nothing;
- an older set is refreshed in the background while its keys keep answering;
- an unknown `kid` waits for a refetch (the provider rotated its keys);
- at most one fetch per jwks_min_fetch_interval_seconds, whatever the tokens ask;
- while the provider does not answer, cached keys are used until they are
  jwks_max_age_seconds old; then KeysUnavailable (the API answers 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from broker import metrics
from broker.auth import KeysUnavailable, SigningKey
from broker.issuers import Issuer

log = logging.getLogger("broker.jwks")
MAX_DOCUMENT_BYTES = 1024 * 1024


class FetchFailed(Exception):
    """The provider did not answer with a usable document."""


@dataclass
class _IssuerKeys:
    keys: dict[str | None, SigningKey] | None = None
    fetched_at: float = 0.0  # time.monotonic() of the last good fetch
    attempted_at: float | None = None  # of the last attempt, good or not
    jwks_url: str | None = None  # configured, or found by discovery
    fetching: asyncio.Task[None] | None = field(default=None, repr=False)


class JwksKeys:
    """Keys by issuer; one aiohttp session per process, opened on first use."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _IssuerKeys] = {}
        self._session: aiohttp.ClientSession | None = None

    def prefetch(self, issuers: tuple[Issuer, ...]) -> None:
        """Start fetching each issuer's keys, so the first token does not wait for them."""
        for issuer in issuers:
            self._start_fetch(issuer, self._state(issuer))

    async def key(self, issuer: Issuer, kid: str | None) -> SigningKey | None:
        state = self._state(issuer)
        age = self._clock() - state.fetched_at
        if state.keys is not None and kid in state.keys:
            if age >= issuer.jwks_refresh_seconds:
                self._start_fetch(issuer, state)  # in the background: this key still answers
            if age < issuer.jwks_max_age_seconds:
                return state.keys[kid]
        fetch = self._start_fetch(issuer, state)
        if fetch is not None:
            await asyncio.shield(fetch)
        age = self._clock() - state.fetched_at
        if state.keys is None or age >= issuer.jwks_max_age_seconds:
            retry_after = max(1, int(issuer.jwks_min_fetch_interval_seconds))
            raise KeysUnavailable(issuer.name, retry_after)
        return state.keys.get(kid)

    async def aclose(self) -> None:
        for state in self._states.values():
            if state.fetching is not None:
                state.fetching.cancel()
        if self._session is not None:
            await self._session.close()

    def _state(self, issuer: Issuer) -> _IssuerKeys:
        state = self._states.get(issuer.name)
        if state is None:
            state = self._states[issuer.name] = _IssuerKeys(jwks_url=issuer.jwks_url)
        return state

    def _start_fetch(self, issuer: Issuer, state: _IssuerKeys) -> asyncio.Task[None] | None:
        """The fetch under way, or a new one unless the last began too recently."""
        if state.fetching is not None and not state.fetching.done():
            return state.fetching
        now = self._clock()
        if (
            state.attempted_at is not None
            and now - state.attempted_at < issuer.jwks_min_fetch_interval_seconds
        ):
            return None
        state.attempted_at = now
        state.fetching = asyncio.create_task(self._fetch(issuer, state))
        return state.fetching

    async def _fetch(self, issuer: Issuer, state: _IssuerKeys) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(issuer.jwks_timeout_seconds):
                if state.jwks_url is None:
                    state.jwks_url = await self._discover(issuer)
                keys = _signing_keys(await self._get_json(state.jwks_url))
        except (FetchFailed, TimeoutError, aiohttp.ClientError, OSError) as exc:
            metrics.JWKS_FETCHES.labels(issuer.name, "failed").inc()
            log.warning(
                "jwks.fetch_failed",
                extra={"issuer": issuer.name, "error": str(exc) or type(exc).__name__},
            )
            return
        state.keys = keys
        state.fetched_at = self._clock()
        metrics.JWKS_FETCHES.labels(issuer.name, "ok").inc()
        log.info(
            "jwks.fetched",
            extra={
                "issuer": issuer.name,
                "keys": len(keys),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

    async def _discover(self, issuer: Issuer) -> str:
        """The jwks_uri of the issuer's OIDC discovery document, which must name it."""
        document = await self._get_json(issuer.discovery_url)
        if document.get("issuer") != issuer.issuer:
            raise FetchFailed(f"the discovery document is for {document.get('issuer')!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchFailed("the discovery document has no jwks_uri")
        try:
            Issuer(**{**issuer.model_dump(), "jwks_url": jwks_uri})  # same URL rules
        except ValueError as exc:
            raise FetchFailed(f"jwks_uri {jwks_uri!r} refused: {exc}") from None
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                auto_decompress=True, trust_env=False, raise_for_status=False
            )
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise FetchFailed(f"{url} answered {response.status}")
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise FetchFailed(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise FetchFailed(f"{url} did not answer JSON") from exc
        if not isinstance(document, dict):
            raise FetchFailed(f"{url} did not answer a JSON object")
        return document


def _signing_keys(document: dict[str, Any]) -> dict[str | None, SigningKey]:
    """The signature keys of a JWKS by kid; a set of one key also answers kid None."""
    members = document.get("keys")
    if not isinstance(members, list):
        raise FetchFailed("the JWKS has no keys list")
    keys: dict[str | None, SigningKey] = {}
    for member in members:
        if not isinstance(member, dict) or member.get("use", "sig") != "sig":
            continue
        try:
            parsed = jwt.PyJWK(member)
        except jwt.PyJWTError:
            continue  # a key type or curve this broker cannot use: other keys still count
        declared = member.get("alg")
        algorithm = declared if isinstance(declared, str) else None
        keys[member.get("kid")] = SigningKey(parsed.key, algorithm)
    if not keys:
        raise FetchFailed("the JWKS has no usable signature key")
    if len(keys) == 1:
        keys[None] = next(iter(keys.values()))
    return keys
