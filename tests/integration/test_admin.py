"""Operators' API on real services: access, filters, sorting, pagination, inspection, fixes."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from broker import auth
from tests.conftest import create_upload, notifications_off, put_bytes, wait_for_status


@pytest.fixture
def admin_headers(settings):
    return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'op', admin=True)}"}


ROUTES = [
    ("GET", "/v1/admin/uploads"),
    ("GET", f"/v1/admin/uploads/{uuid.uuid4()}"),
    ("GET", "/v1/admin/stats"),
    ("POST", f"/v1/admin/uploads/{uuid.uuid4()}/reconcile"),
    ("POST", f"/v1/admin/uploads/{uuid.uuid4()}/expire"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_routes_need_the_admin_claim(api, auth_headers, method, path):
    assert api.request(method, path).status_code == 401
    forbidden = api.request(method, path, headers=auth_headers)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "ERR_FORBIDDEN"


def test_admin_listing_filters_sorts_and_paginates_exactly(
    api, owner, auth_headers, admin_headers, sql
):
    sizes = [300, 100, 500, 200, 400]
    made = [create_upload(api, auth_headers, b"x" * size, filename=f"{size}.txt") for size in sizes]
    png = create_upload(api, auth_headers, b"p" * 50, content_type="image/png", policy="avatars")
    by_id = {u["id"]: u for u in [*made, png]}

    def listing(**params):
        ids, cursor = [], None
        while True:
            page = api.get(
                "/v1/admin/uploads",
                params={
                    "owner": owner,
                    "limit": 2,
                    **params,
                    **({"cursor": cursor} if cursor else {}),
                },
                headers=admin_headers,
            ).json()
            ids += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return ids

    newest_first = [png["id"], *reversed([u["id"] for u in made])]
    assert listing() == newest_first
    assert listing(sort="created_at") == list(reversed(newest_first))
    assert [by_id[i]["size"] for i in listing(sort="-size")] == [500, 400, 300, 200, 100, 50]
    assert [by_id[i]["size"] for i in listing(sort="size")] == [50, 100, 200, 300, 400, 500]
    assert listing(policy="avatars") == [png["id"]]
    assert listing(content_type="image/png") == [png["id"]]
    assert listing(created_after=made[2]["created_at"]) == newest_first[:4]
    assert listing(created_before=made[1]["created_at"]) == [made[0]["id"]]

    api.delete(f"/v1/uploads/{made[0]['id']}", headers=auth_headers)
    assert listing(status="deleted") == [made[0]["id"]]
    sql(
        "UPDATE uploads SET created_at = now() - interval '2 hours' WHERE id = $1::uuid",
        made[3]["id"],
    )
    assert listing(pending_longer_than=3600) == [made[3]["id"]]

    other_sort = api.get(
        "/v1/admin/uploads", params={"owner": owner, "limit": 2}, headers=admin_headers
    ).json()["next_cursor"]
    mixed = api.get(
        "/v1/admin/uploads", params={"sort": "size", "cursor": other_sort}, headers=admin_headers
    )
    assert mixed.status_code == 400 and mixed.json()["error"]["code"] == "ERR_INVALID_CURSOR"


def test_the_size_sorted_listing_pages_through_uploads_of_undeclared_size(
    api, owner, auth_headers, admin_headers
):
    """Uppy's uploads have no size until finalized; by size they come first descending and
    last ascending (as PostgreSQL sorts NULL), and every page reaches them."""
    known = [create_upload(api, auth_headers, b"x" * size)["id"] for size in (30, 10, 20)]
    unknown = []
    for name in ("a.txt", "b.txt", "c.txt"):
        response = api.get(
            "/s3/params", params={"filename": name, "type": "text/plain"}, headers=auth_headers
        )
        assert response.status_code == 200, response.text
        unknown.append(response.json()["fields"]["key"].rsplit("/", 1)[1])

    def listing(sort):
        ids, cursor = [], None
        while True:
            params = {
                "owner": owner,
                "limit": 2,
                "sort": sort,
                **({"cursor": cursor} if cursor else {}),
            }
            page = api.get("/v1/admin/uploads", params=params, headers=admin_headers).json()
            ids += [item["id"] for item in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return ids

    by_size = [known[0], known[2], known[1]]  # 30, 20, 10
    descending, ascending = listing("-size"), listing("size")
    assert sorted(descending[:3]) == sorted(unknown) and descending[3:] == by_size
    assert ascending[:3] == by_size[::-1] and sorted(ascending[3:]) == sorted(unknown)


def test_inspection_shows_history_and_what_storage_holds(api, owner, auth_headers, admin_headers):
    data = b"inspect me"
    upload = create_upload(api, auth_headers, data)
    put_bytes(upload, data)
    wait_for_status(api, auth_headers, upload["id"], "finalized")
    found = api.get(f"/v1/admin/uploads/{upload['id']}", headers=admin_headers).json()
    assert found["upload"]["owner"] == owner
    assert [(h["status"], h["actor"]) for h in found["history"]] == [
        ("pending", "owner"),
        ("finalized", "webhook"),
    ]
    assert found["history"][1]["detail"] == {"event": "s3:ObjectCreated:Put"}
    assert found["storage"]["exists"] is True and found["storage"]["size"] == len(data)
    missing = api.get(f"/v1/admin/uploads/{uuid.uuid4()}", headers=admin_headers)
    assert missing.status_code == 404


def test_reconcile_one_settles_a_missed_webhook_now(
    api, auth_headers, admin_headers, settings, store
):
    data = b"missed"
    upload = create_upload(api, auth_headers, data)
    with notifications_off(store, settings):
        put_bytes(upload, data)
    result = api.post(f"/v1/admin/uploads/{upload['id']}/reconcile", headers=admin_headers).json()
    assert result["outcome"] == "finalized_missed_webhook"
    assert result["upload"]["status"] == "finalized"
    again = api.post(f"/v1/admin/uploads/{upload['id']}/reconcile", headers=admin_headers).json()
    assert again["outcome"] == "not_pending"
    fresh = create_upload(api, auth_headers, b"not yet sent")
    untouched = api.post(f"/v1/admin/uploads/{fresh['id']}/reconcile", headers=admin_headers)
    assert untouched.json()["outcome"] == "still_pending"


def test_expire_one_now_and_history_names_the_operator(api, auth_headers, admin_headers):
    upload = create_upload(api, auth_headers, b"give up")
    result = api.post(f"/v1/admin/uploads/{upload['id']}/expire", headers=admin_headers).json()
    assert (result["outcome"], result["upload"]["status"]) == ("expired", "expired")
    history = api.get(f"/v1/admin/uploads/{upload['id']}", headers=admin_headers).json()["history"]
    assert history[-1]["actor"] == "admin:op"


def test_stats_count_by_status_and_show_pending_ages(api, auth_headers, admin_headers):
    began = time.monotonic()
    create_upload(api, auth_headers, b"pending one")
    finalized = create_upload(api, auth_headers, b"done")
    put_bytes(finalized, b"done")
    wait_for_status(api, auth_headers, finalized["id"], "finalized")
    stats = api.get("/v1/admin/stats", headers=admin_headers).json()
    assert (stats["pending"], stats["stuck"]) == (1, 0)
    assert 0 <= stats["oldest_pending_age_seconds"] <= time.monotonic() - began
    assert len(stats["hourly"]) == 24
    # Summed over the day: a test that runs across the hour still counts each upload once.
    assert sum(hour["created"] for hour in stats["hourly"]) == 2
    assert sum(hour["finalized"] for hour in stats["hourly"]) == 1
    assert stats["by_status_and_policy"] == [
        {"status": "finalized", "policy": "default", "uploads": 1, "bytes": 4},
        {"status": "pending", "policy": "default", "uploads": 1, "bytes": 11},
    ]
    assert stats["reconciler_runs"] == []


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_follow_an_uploads_life(api, auth_headers):
    before = api.get("/metrics").text
    data = b"counted"
    upload = create_upload(api, auth_headers, data)
    during = api.get("/metrics").text
    put_bytes(upload, data)
    wait_for_status(api, auth_headers, upload["id"], "finalized")
    after = api.get("/metrics").text

    def increase(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    # The gauges are read from the database at each scrape: the test's own, so exact.
    assert metric(during, "broker_uploads_pending") == 1
    assert metric(after, "broker_uploads_pending") == 0
    # Counters belong to the process, which has served every earlier test's broker app
    # (prometheus_client registers them once per process): what this test did is the increase.
    created = {"policy": "default", "transfer": "put"}
    assert metric(during, "broker_uploads_created_total", **created) == (
        metric(before, "broker_uploads_created_total", **created) + 1
    )
    assert increase("broker_uploads_finalized_total", policy="default", by="webhook") == 1
    assert increase("broker_upload_create_to_finalized_seconds_count", policy="default") == 1
    # Both webhook targets report the PUT; only one event can finalize the upload.
    assert increase("broker_webhook_events_total", outcome="finalized") == 1
    assert 'route="/v1/uploads"' in after


def test_request_ids_are_returned_and_accepted(api, auth_headers):
    generated = api.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert api.get("/healthz").headers["x-request-id"] != generated.headers["x-request-id"]
    given = api.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    hostile = api.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert hostile.headers["x-request-id"] != "bad id\twith tab"


def test_admin_listing_refuses_a_pending_age_past_the_timestamp_range(api, admin_headers):
    # Found by the OpenAPI fuzzer: now() minus 1e308 seconds was a 500 from PostgreSQL.
    response = api.get("/v1/admin/uploads?pending_longer_than=1e308", headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "pending_longer_than"
