"""The webhook POST adapter: the SSRF guard refuses before any connection, the address it
checked is the one it connects to, and answers are read with limits."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from broker.adapters import http
from broker.domain.webhooks import AttemptOutcome


class Recorder:
    """An httpx transport that records each request instead of connecting anywhere."""

    def __init__(self, status: int = 204, headers: dict[str, str] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status, self.headers = status, headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(
            self.status, headers=self.headers, stream=httpx.ByteStream(b"x" * 100_000)
        )


def post(url: str, *, allowed=(), answers=None, recorder=None):
    recorder = recorder or Recorder()

    async def fixed(host: str, port: int) -> list[str]:
        return answers[host]

    poster = http.WebhookPoster(
        allowed_hosts=frozenset(allowed),
        timeout_seconds=1,
        resolver=fixed if answers is not None else http.resolve,
        transport=httpx.MockTransport(recorder),
    )

    async def go():
        try:
            return await poster.post(url, b"{}", {"webhook-id": "msg_1"})
        finally:
            await poster.aclose()

    return asyncio.run(go()), recorder


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
    result, recorder = post(url)
    assert result.outcome is AttemptOutcome.REFUSED
    assert "BROKER_WEBHOOK_ALLOWED_HOSTS" in (result.error or "")
    assert recorder.requests == []


def test_webhook_poster_refuses_a_name_if_any_of_its_addresses_is_private():
    result, recorder = post(
        "https://hooks.example/x", answers={"hooks.example": ["93.184.216.34", "10.1.2.3"]}
    )
    assert result.outcome is AttemptOutcome.REFUSED and recorder.requests == []


def test_webhook_poster_sends_to_allowed_hosts_and_pins_the_checked_address():
    result, recorder = post("http://127.0.0.1:8080/hooks", allowed={"127.0.0.1:8080"})
    assert result.status == 204 and len(recorder.requests) == 1

    result, recorder = post(
        "https://hooks.example/in?x=1", answers={"hooks.example": ["93.184.216.34"]}
    )
    (request,) = recorder.requests
    assert str(request.url) == "https://93.184.216.34/in?x=1"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert request.headers["webhook-id"] == "msg_1"


def test_webhook_poster_reports_throttling_and_does_not_follow_redirects():
    answers = {"hooks.example": ["93.184.216.34"]}
    result, _ = post(
        "https://hooks.example/", answers=answers, recorder=Recorder(503, {"retry-after": "30"})
    )
    assert (result.outcome, result.retry_after) == (AttemptOutcome.THROTTLED, "30")
    result, recorder = post(
        "https://hooks.example/", answers=answers, recorder=Recorder(302, {"location": "/x"})
    )
    assert result.outcome is AttemptOutcome.FAILED and len(recorder.requests) == 1


def test_webhook_poster_gives_up_on_a_trickling_answer_within_its_timeout():
    """httpx's timeout bounds each read, not the exchange: an endpoint sending a byte every
    0.2 s would hold a POST past its lease (and another sender would send it meanwhile)."""

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
