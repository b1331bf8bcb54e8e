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
from urllib.parse import urlsplit, urlunsplit

import httpx

from broker.domain import addresses
from broker.domain.webhooks import MAX_RESPONSE_BYTES, PostResult

# host, port -> the addresses the host resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The system resolver's addresses for host (an IP literal is its own answer)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class WebhookPoster:
    """httpx, one client per process; never follows redirects nor reads proxy settings."""

    def __init__(
        self,
        *,
        allowed_hosts: frozenset[str],
        timeout_seconds: float,
        resolver: Resolver = resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.resolver = resolver
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=timeout_seconds,
            trust_env=False,
            transport=transport,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        self.timeout = timeout_seconds

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        """The whole exchange, name lookup to the last byte read, within the timeout: httpx's
        own timeout bounds each read only, and a trickling answer would outlast the lease."""
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
        pinned = found[0]
        netloc = f"[{pinned}]:{port}" if ":" in pinned else f"{pinned}:{port}"
        target = urlunsplit(parts._replace(netloc=netloc, fragment=""))
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            request = self.client.build_request(
                "POST",
                target,
                content=body,
                headers={**headers, "host": parts.netloc, "user-agent": "broker-webhooks"},
                extensions=extensions,
            )
            response = await self.client.send(request, stream=True)
            try:
                received = 0
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received >= MAX_RESPONSE_BYTES:
                        break  # what an endpoint says beyond this is not read
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return PostResult(None, error=f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return PostResult(None, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return PostResult(response.status_code, retry_after=response.headers.get("retry-after"))
