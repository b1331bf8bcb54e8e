"""A local identity provider for the tests: keys generated here (RSA and EC), tokens signed
with them, and an HTTP server on loopback publishing the OIDC discovery document and the
JWKS, which a test can rotate, break or take down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "https://uploads.example.test"


@dataclass
class Key:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str | None = None) -> Key:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256", private)

    @classmethod
    def ec(cls, kid: str | None = None) -> Key:
        private = ec.generate_private_key(ec.SECP256R1())
        return cls(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", private)

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        public = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass
class Provider:
    """An issuer's keys and its tokens; `issuer` is the `iss` its tokens carry."""

    issuer: str
    keys: list[Key] = field(default_factory=lambda: [Key.rsa(), Key.ec()])
    audience: str = AUDIENCE

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def token(
        self, sub: str = "alice", key: Key | None = None, ttl: int = 600, **claims: Any
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": sub, "iat": now, "exp": now + ttl}
        return jwt.encode({**body, **claims}, key.private, key.algorithm, headers={"kid": key.kid})

    def rotate(self) -> Key:
        """A new signing key replaces the first; the old one is no longer published."""
        new = Key.rsa()
        self.keys = [new, *self.keys[1:]]
        return new


def forge_hs256_with_public_key(claims: dict[str, Any], key: Key) -> str:
    """The classic confusion attack: an HS256 token whose secret is the provider's public key
    (signed by hand: PyJWT itself refuses a PEM key as an HMAC secret)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class _Handler(BaseHTTPRequestHandler):
    server: ProviderServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.server.failing:
            self.send_error(503)
            return
        provider = self.server.provider
        if self.path == "/.well-known/openid-configuration":
            document = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/jwks.json"}
        elif self.path == "/jwks.json":
            document = provider.jwks()
        else:
            self.send_error(404)
            return
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class ProviderServer(ThreadingHTTPServer):
    """Serves one Provider at http://127.0.0.1:<port>, which is also its issuer."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = Provider(issuer=f"http://127.0.0.1:{self.server_address[1]}")
        self.requests: list[str] = []
        self.failing = False

    def jwks_fetches(self) -> int:
        return self.requests.count("/jwks.json")


@contextmanager
def provider_server() -> Iterator[ProviderServer]:
    server = ProviderServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
