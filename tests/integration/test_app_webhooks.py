"""The apps' webhooks on real PostgreSQL and MinIO, sent to a real HTTP receiver on
127.0.0.1: one logical event per change, signed, in seq order, through failures and
restarts. The sender is driven round by round on a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks

from broker import auth
from broker.adapters import db, http, queries
from broker.domain.model import DeliveryStatus
from broker.domain.webhooks import DeliveryFilters
from broker.flows import app_webhooks, webhook_sender
from tests import services
from tests.conftest import create_upload, put_bytes, wait_for_status
from tests.receiver import Receiver


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def settings(settings, receiver):
    """The test's settings, allowing the receiver's loopback address."""
    return settings.model_copy(update={"webhook_allowed_hosts": (receiver.host_port,)})


class MovableClock:
    """Real time plus an offset the test moves (claims compare it with the database's)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Harness:
    statements: queries.Queries
    webhooks: app_webhooks.AppWebhooks
    clock: MovableClock
    poster: http.WebhookPoster

    def sender(self, **limits: Any) -> webhook_sender.WebhookSender:
        return webhook_sender.WebhookSender(
            self.statements,
            self.poster,
            None,
            webhook_sender.SenderLimits(**limits),
            clock=self.clock,
            rng=random.Random(0),
        )

    async def deliveries(self, **filters: Any) -> list[Any]:
        return await self.statements.list_webhook_deliveries(DeliveryFilters(**filters), None, 1000)


@asynccontextmanager
async def harness(settings) -> AsyncIterator[Harness]:
    database = await db.Database.connect(settings.database_url, min_size=1, max_size=5)
    poster = http.WebhookPoster(
        allowed_hosts=frozenset(settings.webhook_allowed_hosts), timeout_seconds=5
    )
    clock = MovableClock()
    statements = queries.Queries(database)
    try:
        yield Harness(
            statements,
            app_webhooks.AppWebhooks(
                statements,
                allowed_hosts=frozenset(settings.webhook_allowed_hosts),
                policies=frozenset({"default", "avatars"}),
                clock=clock,
            ),
            clock,
            poster,
        )
    finally:
        await poster.aclose()
        await database.close()


def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Blocking test calls (the API, the receiver) off the scenario's event loop."""
    return asyncio.to_thread(function, *args, **kwargs)


def verified(received, secret: str) -> list[dict[str, Any]]:
    """Each request's payload, once its signature verified under the reference library."""
    webhook = standardwebhooks.Webhook(secret)
    return [webhook.verify(r.body, r.headers) for r in received]


def test_app_webhooks_a_finalized_upload_gives_one_signed_event_per_change(
    settings, broker, api, owner, auth_headers, receiver
):
    async def scenario() -> None:
        async with harness(settings) as h:
            _, secret = await h.webhooks.create(receiver.url, event_types=[], policy=None)
            upload = await in_thread(create_upload, api, auth_headers, b"hello")
            await in_thread(put_bytes, upload, b"hello")
            await in_thread(wait_for_status, api, auth_headers, upload["id"], "finalized")
            sender = h.sender()
            while await sender.send_due():
                pass
            events = verified(receiver.received, secret)
            assert [e["type"] for e in events] == ["upload.created", "upload.finalized"]
            data = events[1]["data"]
            assert (data["id"], data["status"], data["size"], data["owner"]) == (
                upload["id"], "finalized", 5, owner,
            )  # fmt: skip
            assert [e["data"]["seq"] for e in events] == sorted(e["data"]["seq"] for e in events)
            assert [r.headers["webhook-id"] for r in receiver.received] == [
                f"msg_{e['data']['seq']}" for e in events
            ]
            assert {d.status for d in await h.deliveries()} == {DeliveryStatus.DELIVERED}, [
                (d.type, d.status, d.attempts, d.last_status, d.last_error)
                for d in await h.deliveries()
            ]

    services.run(scenario())


def test_app_webhooks_500_then_200_retries_with_the_same_webhook_id(
    settings, broker, api, auth_headers, receiver
):
    async def scenario() -> None:
        async with harness(settings) as h:
            _, secret = await h.webhooks.create(
                receiver.url, event_types=["upload.created"], policy=None
            )
            receiver.answer(500, then=200)
            await in_thread(create_upload, api, auth_headers, b"x")
            sender = h.sender()
            assert len(await sender.send_due()) == 1
            (waiting,) = await h.deliveries()
            assert (waiting.status, waiting.last_status, waiting.attempts) == (
                DeliveryStatus.PENDING, 500, 1,
            )  # fmt: skip
            assert await sender.send_due() == []  # the retry is 5 s away
            h.clock.advance(6)
            assert len(await sender.send_due()) == 1
            first, second = receiver.received
            assert first.headers["webhook-id"] == second.headers["webhook-id"]
            verified(receiver.received, secret)
            (done,) = await h.deliveries()
            assert (done.status, done.attempts) == (DeliveryStatus.DELIVERED, 2)

    services.run(scenario())


def test_app_webhooks_receiver_down_then_back_gets_everything_in_seq_order(
    settings, broker, api, auth_headers
):
    port = services.devstack.free_port()  # nothing listens here yet: connections are refused
    down = Receiver(port=port)
    settings = settings.model_copy(update={"webhook_allowed_hosts": (down.host_port,)})

    async def scenario() -> None:
        async with harness(settings) as h:
            await h.webhooks.create(down.url, event_types=[], policy=None)
            made = [await in_thread(create_upload, api, auth_headers, b"abc") for _ in range(3)]
            for upload in made:
                response = await in_thread(
                    api.delete, f"/v1/uploads/{upload['id']}", headers=auth_headers
                )
                assert response.status_code in (200, 204)
            sender = h.sender()
            failed = await sender.send_due()
            assert len(failed) == 3 and all(not a.outcome == "delivered" for a in failed)
            pending = await h.deliveries(status=DeliveryStatus.PENDING)
            assert len(pending) == 6 and all("Connect" in (d.last_error or "") for d in pending
                                             if d.attempts)  # fmt: skip
            with down:
                for _ in range(10):
                    h.clock.advance(400)
                    await sender.send_due()
                got = down.received
            by_upload: dict[str, list[str]] = {}
            for request in got:
                event = json.loads(request.body)
                by_upload.setdefault(event["data"]["id"], []).append(event["type"])
            assert by_upload == {u["id"]: ["upload.created", "upload.deleted"] for u in made}
            assert {d.status for d in await h.deliveries()} == {DeliveryStatus.DELIVERED}

    services.run(scenario())


def test_app_webhooks_410_disables_the_endpoint(settings, broker, api, auth_headers, receiver):
    async def scenario() -> None:
        async with harness(settings) as h:
            endpoint, _ = await h.webhooks.create(receiver.url, event_types=[], policy=None)
            receiver.answer(410)
            await in_thread(create_upload, api, auth_headers, b"x")
            await h.sender().send_due()
            disabled = await h.webhooks.get(endpoint.id)
            assert disabled.disabled_at is not None and "410" in disabled.disabled_reason
            await in_thread(create_upload, api, auth_headers, b"y")
            h.clock.advance(3600)
            assert await h.sender().send_due() == []
            assert len(receiver.received) == 1

    services.run(scenario())


def test_app_webhooks_retry_after_is_honoured(settings, broker, api, auth_headers, receiver):
    async def scenario() -> None:
        async with harness(settings) as h:
            await h.webhooks.create(receiver.url, event_types=[], policy=None)
            receiver.answer((503, {"Retry-After": "120"}))
            await in_thread(create_upload, api, auth_headers, b"x")
            sender = h.sender()
            await sender.send_due()
            h.clock.advance(100)
            await in_thread(create_upload, api, auth_headers, b"y")
            assert await sender.send_due() == []  # the endpoint is slowed down until +120 s
            h.clock.advance(21)
            assert len(await sender.send_due()) == 2
            assert len(receiver.received) == 3

    services.run(scenario())


def test_app_webhooks_two_senders_at_once_never_send_a_delivery_twice(
    settings, broker, api, auth_headers, receiver
):
    async def scenario() -> None:
        async with harness(settings) as h:
            await h.webhooks.create(receiver.url, event_types=[], policy=None)
            for _ in range(20):
                await in_thread(create_upload, api, auth_headers, b"x")
            first, second = h.sender(per_endpoint=8), h.sender(per_endpoint=8)
            while True:
                rounds = await asyncio.gather(first.send_due(), second.send_due())
                if not any(rounds):
                    break
            ids = [r.headers["webhook-id"] for r in receiver.received]
            assert len(ids) == len(set(ids)) == 20

    services.run(scenario())


def test_app_webhooks_a_name_resolving_to_loopback_is_refused_without_a_connection(
    settings, broker, api, auth_headers, receiver
):
    async def scenario() -> None:
        async with harness(settings) as h:
            # https, so creating it needs no allow-list; `localhost` is not the allowed
            # 127.0.0.1:<port>, so at send time it is refused.
            await h.webhooks.create(
                f"https://localhost:{receiver.port}/hooks", event_types=[], policy=None
            )
            await in_thread(create_upload, api, auth_headers, b"x")
            (attempt,) = await h.sender().send_due()
            assert attempt.outcome == "refused"
            (delivery,) = await h.deliveries()
            assert "loopback" in delivery.last_error and delivery.last_status is None
            assert receiver.received == []

    services.run(scenario())


def test_app_webhooks_no_endpoint_queues_nothing_and_a_rollback_queues_nothing(
    settings, broker, api, auth_headers, receiver, sql
):
    async def scenario() -> None:
        async with harness(settings) as h:
            upload = await in_thread(create_upload, api, auth_headers, b"x")
            assert await h.deliveries() == []
            await h.webhooks.create(receiver.url, event_types=[], policy=None)
            conn = await services.asyncpg.connect(settings.database_url)
            try:
                with pytest.raises(RuntimeError):
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO upload_history (upload_id, status, actor)"
                            " VALUES ($1::uuid, 'expired', 'test')",
                            upload["id"],
                        )
                        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
                        raise RuntimeError("roll back")
            finally:
                await conn.close()
            assert await h.deliveries() == []

    services.run(scenario())


@pytest.fixture
def admin_headers(settings):
    return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'op', admin=True)}"}


def test_app_webhooks_admin_api_refuses_bad_input_with_clear_codes(
    api, admin_headers, auth_headers, receiver
):
    bad = [
        ({"url": "not a url"}, "ERR_INVALID_WEBHOOK_URL"),
        ({"url": "http://hooks.example.com/in"}, "ERR_INVALID_WEBHOOK_URL"),
        ({"url": "https://hooks.example.com/in", "event_types": ["upload.done"]},
         "ERR_UNKNOWN_EVENT_TYPE"),
        ({"url": "https://hooks.example.com/in", "policy": "nope"}, "ERR_UNKNOWN_POLICY"),
        ({}, "ERR_VALIDATION"),
    ]  # fmt: skip
    for body, code in bad:
        response = api.post("/v1/admin/webhook-endpoints", json=body, headers=admin_headers)
        assert (response.status_code, response.json()["error"]["code"]) == (422, code), body
    assert api.post("/v1/admin/webhook-endpoints", json={"url": receiver.url}).status_code == 401
    forbidden = api.get("/v1/admin/webhook-endpoints", headers=auth_headers)
    assert forbidden.status_code == 403
    missing = api.get(f"/v1/admin/webhook-endpoints/{uuid.uuid4()}", headers=admin_headers)
    assert missing.json()["error"]["code"] == "ERR_WEBHOOK_ENDPOINT_NOT_FOUND"
    bad_cursor = api.get("/v1/admin/webhook-deliveries?cursor=abc", headers=admin_headers)
    assert bad_cursor.json()["error"]["code"] == "ERR_INVALID_CURSOR"


def test_app_webhooks_admin_api_manages_endpoints_and_deliveries(
    settings, broker, api, admin_headers, auth_headers, receiver
):
    created = api.post(
        "/v1/admin/webhook-endpoints",
        json={"url": receiver.url, "description": "app", "event_types": ["upload.created"]},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    listing = api.get("/v1/admin/webhook-endpoints", headers=admin_headers)
    assert secret not in listing.text and "secret" not in listing.json()[0]
    path = f"/v1/admin/webhook-endpoints/{endpoint['id']}"

    changed = api.patch(path, json={"event_types": [], "policy": "avatars"}, headers=admin_headers)
    assert (changed.json()["event_types"], changed.json()["policy"]) == ([], "avatars")
    cleared = api.patch(path, json={"policy": ""}, headers=admin_headers).json()
    assert cleared["policy"] is None

    rotated = api.post(f"{path}/rotate-secret", headers=admin_headers).json()
    assert rotated["secret"] != secret and rotated["previous_secret_expires_at"]
    test = api.post(f"{path}/test", headers=admin_headers)
    assert test.status_code == 202 and test.json()["type"] == "webhook.test"
    for _ in range(3):
        create_upload(api, auth_headers, b"x")

    async def send() -> None:
        async with harness(settings) as h:
            await h.sender().send_due()
            h.clock.advance(86400 * 3)  # ... until all four are dead
            for _ in range(10):
                await h.sender().send_due()
                h.clock.advance(86400 * 2)

    receiver.answer(then=500)  # every attempt of the test event and the three creates fails
    services.run(send())
    receiver.answer(then=200)
    # The first round was sent at real time (later ones on the moved clock, which the
    # reference verifier would call too new): old and new secret both sign it.
    for request in receiver.received[:4]:
        for key in (secret, rotated["secret"]):
            standardwebhooks.Webhook(key).verify(request.body, request.headers)

    page = api.get(
        "/v1/admin/webhook-deliveries",
        params={"endpoint_id": endpoint["id"], "status": "dead", "limit": 2},
        headers=admin_headers,
    ).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.get(
        "/v1/admin/webhook-deliveries",
        params={"endpoint_id": endpoint["id"], "status": "dead", "cursor": page["next_cursor"]},
        headers=admin_headers,
    ).json()
    dead = page["items"] + rest["items"]
    assert len(dead) == 4 and all(d["attempts"] == 10 for d in dead)
    tests = api.get(
        "/v1/admin/webhook-deliveries", params={"type": "webhook.test"}, headers=admin_headers
    ).json()["items"]
    assert [d["webhook_id"] for d in tests] == [test.json()["webhook_id"]]

    retried = api.post(f"/v1/admin/webhook-deliveries/{dead[0]['id']}/retry", headers=admin_headers)
    assert retried.json()["status"] == "pending"
    again = api.post(f"/v1/admin/webhook-deliveries/{dead[0]['id']}/retry", headers=admin_headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "ERR_DELIVERY_NOT_DEAD")
    replay = api.post(
        f"{path}/replay", json={"since": "2000-01-01T00:00:00Z"}, headers=admin_headers
    )
    assert replay.json() == {"queued": 3}
    disabled = api.post(f"{path}/disable", json={}, headers=admin_headers).json()
    assert disabled["enabled"] is False and "admin:op" in disabled["disabled_reason"]
    assert api.post(f"{path}/enable", headers=admin_headers).json()["enabled"] is True

    metrics = api.get("/metrics").text
    assert "broker_webhook_deliveries_pending 4.0" in metrics
    assert "broker_webhook_oldest_pending_age_seconds" in metrics
    assert secret not in metrics


# The history statuses an endpoint taking every event type is fired for (not scanning).
EVERY_STATUS = {"pending", "finalized", "rejected", "expired", "deleted", "quarantined"}


def test_app_webhooks_the_outbox_trigger_exists_only_for_what_enabled_endpoints_take(
    api, admin_headers, receiver, sql
):
    """With no endpoint the create path pays nothing for webhooks (the trigger alone costs
    ~25 us of PostgreSQL CPU per state change), nor with endpoints that take no
    upload.created; the trigger follows every endpoint change."""

    def statuses_fired() -> set[str] | None:
        rows = sql(
            "SELECT pg_get_triggerdef(oid) AS definition FROM pg_trigger"
            " WHERE tgname = 'upload_history_webhook_deliveries'"
        )
        if not rows:
            return None
        return set(re.findall(r"'([a-z]+)'::text", rows[0]["definition"]))

    assert statuses_fired() is None
    path = "/v1/admin/webhook-endpoints"
    finalized = api.post(
        path, json={"url": receiver.url, "event_types": ["upload.finalized"]}, headers=admin_headers
    ).json()
    assert statuses_fired() == {"finalized"}
    every = api.post(path, json={"url": receiver.url}, headers=admin_headers).json()
    assert statuses_fired() == EVERY_STATUS
    assert api.post(f"{path}/{every['id']}/disable", json={}, headers=admin_headers).is_success
    assert statuses_fired() == {"finalized"}
    api.patch(
        f"{path}/{finalized['id']}",
        json={"event_types": ["upload.created", "upload.deleted"]},
        headers=admin_headers,
    )
    assert statuses_fired() == {"pending", "deleted"}
    assert api.post(f"{path}/{finalized['id']}/disable", json={}, headers=admin_headers).is_success
    assert statuses_fired() is None
    assert api.post(f"{path}/{every['id']}/enable", json={}, headers=admin_headers).is_success
    assert statuses_fired() == EVERY_STATUS
    sql("DELETE FROM webhook_endpoints")
    assert statuses_fired() is None
