"""The webhook POST adapter: the SSRF guard refuses before any connection, the address it
checked is the one it connects to, and answers are read with limits."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from broker.adapters import http
from broker.domain.webhooks import AttemptOutcome


class Endpoint:
    """An HTTP endpoint on 127.0.0.1 that records each request and answers `status` with
    `headers` and a 100,000-byte body (more than the poster reads)."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status, self.headers = status, headers or {}
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        self.requests.append((head[0], headers, body))
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        writer.write(
            f"HTTP/1.1 {self.status} X\r\n{extra}content-length: 100000\r\n\r\n".encode()
            + b"x" * 100_000
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def post(url: str, *, allowed=(), answers=None, endpoint=None):
    """POST to url; with `endpoint`, {PORT} in url and allowed is the endpoint's port."""
    endpoint = endpoint or Endpoint()

    async def fixed(host: str, port: int) -> list[str]:
        return answers[host]

    async def go():
        server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
        endpoint.port = server.sockets[0].getsockname()[1]
        poster = http.WebhookPoster(
            allowed_hosts=frozenset(a.format(PORT=endpoint.port) for a in allowed),
            timeout_seconds=2,
            resolver=fixed if answers is not None else http.resolve,
        )
        try:
            return await poster.post(url.format(PORT=endpoint.port), b"{}", {"webhook-id": "msg_1"})
        finally:
            await poster.aclose()
            server.close()

    return asyncio.run(go()), endpoint


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "https://10.0.0.1/hooks",
        "http://169.254.169.254/latest/meta-data",
        "https://localhost:3000/hooks",  # a name resolving to loopback (the system resolver)
        "https://[::1]/hooks",
    ],
)
def test_webhook_poster_refuses_non_public_addresses_without_connecting(url):
    result, endpoint = post(url)
    assert result.outcome is AttemptOutcome.REFUSED
    assert "BROKER_WEBHOOK_ALLOWED_HOSTS" in (result.error or "")
    assert endpoint.requests == []


def test_webhook_poster_refuses_a_name_if_any_of_its_addresses_is_private():
    result, endpoint = post(
        "http://hooks.example:{PORT}/x", answers={"hooks.example": ["93.184.216.34", "127.0.0.1"]}
    )
    assert result.outcome is AttemptOutcome.REFUSED and endpoint.requests == []


def test_webhook_poster_sends_to_allowed_hosts_and_pins_the_checked_address():
    result, endpoint = post(
        "http://hooks.example:{PORT}/in?x=1#frag",
        allowed={"hooks.example:{PORT}"},
        answers={"hooks.example": ["127.0.0.1"]},
    )
    assert result.status == 200
    ((line, headers, body),) = endpoint.requests
    assert line == "POST /in?x=1 HTTP/1.1"
    assert headers["host"] == f"hooks.example:{endpoint.port}"
    assert headers["webhook-id"] == "msg_1" and body == b"{}"
    assert "accept-encoding" not in headers  # answers are read raw, never inflated


def test_webhook_poster_pins_https_to_the_address_and_checks_tls_for_the_name():
    assert http.pinned("https://hooks.example/in?x=1", "93.184.216.34") == http.PinnedRequest(
        "https://93.184.216.34:443/in?x=1", "hooks.example", "hooks.example"
    )
    assert http.pinned("http://[::1]:8080/h", "::1") == http.PinnedRequest(
        "http://[::1]:8080/h", "[::1]:8080", None
    )


def test_webhook_poster_reports_throttling_and_does_not_follow_redirects():
    answers = {"hooks.example": ["127.0.0.1"]}
    allowed = {"hooks.example:{PORT}"}
    result, _ = post(
        "http://hooks.example:{PORT}/", allowed=allowed, answers=answers,
        endpoint=Endpoint(503, {"retry-after": "30"}),
    )  # fmt: skip
    assert (result.outcome, result.retry_after) == (AttemptOutcome.THROTTLED, "30")
    result, endpoint = post(
        "http://hooks.example:{PORT}/", allowed=allowed, answers=answers,
        endpoint=Endpoint(302, {"location": "/elsewhere"}),
    )  # fmt: skip
    assert result.outcome is AttemptOutcome.FAILED and len(endpoint.requests) == 1


def test_webhook_poster_reports_a_refused_connection_as_unreachable():
    async def go():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        poster = http.WebhookPoster(
            allowed_hosts=frozenset({f"127.0.0.1:{port}"}), timeout_seconds=2
        )
        try:
            return await poster.post(f"http://127.0.0.1:{port}/", b"{}", {})
        finally:
            await poster.aclose()

    result = asyncio.run(go())
    assert result.outcome is AttemptOutcome.UNREACHABLE and result.error


def test_webhook_poster_gives_up_on_a_trickling_answer_within_its_timeout():
    """A client's read timeout bounds each read, not the exchange: an endpoint sending a
    byte every 0.2 s would hold a POST past its lease (and another sender would send it
    meanwhile)."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(30):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        writer.close()

    async def go():
        server = await asyncio.start_server(trickle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        poster = http.WebhookPoster(
            allowed_hosts=frozenset({f"127.0.0.1:{port}"}), timeout_seconds=0.5
        )
        try:
            started = time.monotonic()
            result = await poster.post(f"http://127.0.0.1:{port}/hooks", b"{}", {})
            return result, time.monotonic() - started
        finally:
            await poster.aclose()
            server.close()

    result, took = asyncio.run(go())
    assert took < 1.5 and result.outcome is not AttemptOutcome.DELIVERED
    assert result.error == "no answer within 0.5 s"
