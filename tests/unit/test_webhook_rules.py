"""The webhooks' pure rules: Standard Webhooks signatures (checked with the reference
library), the SSRF guard's address rules, URLs, event types, retries and Retry-After."""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks

from broker.domain import addresses, errors, webhook_signing, webhooks

SECRET = webhook_signing.secret_from_bytes(bytes(range(32)))
OTHER = webhook_signing.secret_from_bytes(bytes(range(1, 33)))


def test_webhook_signing_verifies_under_the_reference_library():
    body = json.dumps({"type": "upload.finalized", "data": {"seq": 7}}).encode()
    now = int(datetime.now(UTC).timestamp())
    headers = webhook_signing.headers([SECRET], "msg_7", now, body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == json.loads(body)


def test_webhook_signing_during_rotation_verifies_under_either_secret():
    body = b'{"type":"upload.created"}'
    now = int(datetime.now(UTC).timestamp())
    headers = webhook_signing.headers([OTHER, SECRET], "msg_1", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (OTHER, SECRET):
        standardwebhooks.Webhook(secret).verify(body, headers)
    stranger = webhook_signing.secret_from_bytes(b"\x07" * 32)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(stranger).verify(body, headers)


def test_webhook_signing_secrets_have_the_whsec_form():
    assert SECRET.startswith("whsec_") and len(SECRET) == 6 + 44
    with pytest.raises(ValueError):
        webhook_signing.secret_from_bytes(b"short")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
        "fd00:ec2::254", "fd12::1", "fe80::1", "100.64.0.1", "224.0.0.1", "ff02::1", "0.0.0.0",
        "::", "::ffff:127.0.0.1",
    ],
)  # fmt: skip
def test_addresses_refuse_every_non_public_address(address):
    assert addresses.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "8.8.8.8"])
def test_addresses_let_public_addresses_through(address):
    assert addresses.refusal(ipaddress.ip_address(address)) is None


def test_addresses_name_metadata_and_host_port():
    assert addresses.refusal(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    assert addresses.host_port("https://Example.com/x") == "example.com:443"
    assert addresses.host_port("http://localhost:3000/api/hooks") == "localhost:3000"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "must be https"),
        ("ftp://example.com/", "must be https"),
        ("http://example.com/hooks", "plain http only"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com:99999/", "not a URL"),
    ],
)
def test_webhook_urls_are_checked(url, message):
    with pytest.raises(errors.InvalidWebhookUrl, match=message):
        webhooks.check_url(url, frozenset())


def test_webhook_urls_over_plain_http_only_for_allowed_hosts():
    allowed = frozenset({"localhost:3000"})
    assert webhooks.check_url("http://localhost:3000/api/hooks", allowed)
    assert webhooks.check_url("https://example.com/hooks", allowed)


def test_webhook_event_types_are_checked():
    assert webhooks.check_event_types([]) == ()
    assert [t.value for t in webhooks.check_event_types(["upload.finalized"])] == [
        "upload.finalized"
    ]
    for bad in (["upload.finished"], ["webhook.test"]):
        with pytest.raises(errors.UnknownEventType):
            webhooks.check_event_types(bad)


def test_webhook_retries_follow_the_schedule_with_jitter_then_give_up():
    rng = random.Random(1)
    delays = [webhooks.retry_delay(made, rng) for made in range(1, 11)]
    assert delays[-1] is None
    for delay, base in zip(delays[:-1], webhooks.RETRY_SCHEDULE[1:], strict=True):
        assert delay is not None and base * 0.9 <= delay <= base * 1.1


def test_webhook_retry_after_takes_seconds_or_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert webhooks.parse_retry_after("120", now) == 120
    later = now + timedelta(seconds=90)
    assert webhooks.parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 90
    assert webhooks.parse_retry_after("soon", now) is None
    assert webhooks.parse_retry_after("999999", now) == webhooks.MAX_RETRY_AFTER
