"""POSTs webhooks to the apps' endpoints (the WebhookPoster port), behind the SSRF guard.

The endpoint's host is resolved here, at send time, and every address it resolves to is
checked (broker.domain.addresses); the POST then goes to the checked address itself, with
the Host header (and for https the TLS server name and certificate check) of the URL's host,
so a second DNS answer cannot send it elsewhere. Redirects are not followed, and at most
64 KiB of an answer is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from broker.domain import addresses
from broker.domain.webhooks import MAX_RESPONSE_BYTES, PostResult

# host, port -> the addresses the host resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The system resolver's addresses for host; an IP literal is its own answer (no
    thread hop through getaddrinfo)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PinnedRequest(NamedTuple):
    """Where a POST to `url` goes once its host resolved to `address`."""

    target: str  # the URL with the checked address in place of the host
    host_header: str  # the URL's host[:port], as the endpoint expects it
    server_hostname: str | None  # for https: the name TLS sends and checks the certificate of


def pinned(url: str, address: str) -> PinnedRequest:
    parts = urlsplit(url)
    port = parts.port or addresses.DEFAULT_PORTS[parts.scheme]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    target = urlunsplit(parts._replace(netloc=netloc, fragment=""))
    server_hostname = parts.hostname if parts.scheme == "https" else None
    return PinnedRequest(target, parts.netloc, server_hostname)


class WebhookPoster:
    """aiohttp, one session per process (opened on first use, inside the event loop); never
    follows redirects, decompresses answers, nor reads proxy settings."""

    def __init__(
        self, *, allowed_hosts: frozenset[str], timeout_seconds: float, resolver: Resolver = resolve
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.resolver = resolver
        self.timeout = timeout_seconds
        self.session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        """The whole exchange, name lookup to the last byte read, within the timeout: a
        trickling answer must not outlast the lease."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(url, body, headers)
        except TimeoutError:
            return PostResult(None, error=f"no answer within {self.timeout:g} s")

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or addresses.DEFAULT_PORTS[parts.scheme]
        try:
            found = await self.resolver(host, port)
        except OSError as exc:
            return PostResult(None, error=f"cannot resolve {host}: {exc}")
        if not found:
            return PostResult(None, error=f"{host} resolves to no address")
        if addresses.host_port(url) not in self.allowed_hosts:
            for address in found:
                reason = addresses.refusal(ipaddress.ip_address(address.split("%")[0]))
                if reason is not None:
                    return PostResult(
                        None,
                        refused=True,
                        error=f"refused: {host} resolves to {address}, {reason}; allow "
                        f"{addresses.host_port(url)} in BROKER_WEBHOOK_ALLOWED_HOSTS to send",
                    )
        request = pinned(url, found[0])
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200),
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),  # answers are read raw, not inflated
                trust_env=False,
            )
        try:
            async with self.session.post(
                request.target,
                data=body,
                headers={
                    **headers,
                    "host": request.host_header,
                    "user-agent": "broker-webhooks",
                },
                allow_redirects=False,
                server_hostname=request.server_hostname,
            ) as response:
                received = 0
                while received < MAX_RESPONSE_BYTES:
                    chunk = await response.content.read(MAX_RESPONSE_BYTES - received)
                    if not chunk:
                        break
                    received += len(chunk)  # what an endpoint says beyond this is not read
                return PostResult(response.status, retry_after=response.headers.get("retry-after"))
        except aiohttp.ClientError as exc:
            return PostResult(None, error=f"{type(exc).__name__}: {str(exc)[:200]}")
