"""The reconciler on real services: missed webhooks, expiry, orphans, dry runs, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from broker import wiring
from tests.conftest import create_upload, notifications_off, put_bytes, wait_for_status


@contextlib.asynccontextmanager
async def a_reconciler(settings, database_url, grace=3600):
    """A reconciler of its own on the test services, as another broker process has."""
    own = settings.model_copy(update={"database_url": database_url, "orphan_grace_seconds": grace})
    async with wiring.connected(own, pool_min=1, pool_max=3) as flows:
        yield flows.reconciler


def run_pass(settings, database_url, grace=3600, **options):
    async def go():
        async with a_reconciler(settings, database_url, grace) as checker:
            return await checker.run_pass(**options)

    return asyncio.run(go())


def make_stale(sql, *upload_ids):
    """Time travel: the uploads' pending deadline has passed."""
    sql(
        "UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = ANY($1::uuid[])",
        list(upload_ids),
    )


def history(sql, upload_id):
    return [
        (r["status"], r["actor"])
        for r in sql(
            "SELECT status, actor FROM upload_history WHERE upload_id = $1 ORDER BY id", upload_id
        )
    ]


def exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


def test_an_upload_the_webhook_missed_is_finalized_by_a_pass(
    api, auth_headers, settings, store, sql, database_url
):
    data = b"nobody told the broker"
    upload = create_upload(api, auth_headers, data)
    with notifications_off(store, settings):
        assert put_bytes(upload, data).status_code == 200
    # MinIO answers the PUT only after the webhook did: pending now means no event was sent.
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )

    make_stale(sql, upload["id"])
    report = run_pass(settings, database_url, sweep=False)
    assert report.actions == [
        {"outcome": "finalized_missed_webhook", "upload_id": upload["id"], "key": upload["key"]}
    ]
    record = wait_for_status(api, auth_headers, upload["id"], "finalized", timeout=1)
    assert record["etag"]
    assert history(sql, upload["id"]) == [("pending", "owner"), ("finalized", "reconciler")]


def test_a_missed_webhook_is_settled_once_the_url_expired_long_before_the_deadline(
    api, auth_headers, settings, store, sql, database_url
):
    """Both webhook targets off; the `quick` policy's URL lives 1 s and the grace is 1 s: a
    pass after that finalizes the upload, 24 h before its deadline."""
    data = b"both events lost"
    upload = create_upload(api, auth_headers, data, policy="quick")
    with notifications_off(store, settings):
        assert put_bytes(upload, data).status_code == 200
    put_at = time.monotonic()

    async def passes_until_settled() -> list[str]:
        async with a_reconciler(settings, database_url) as checker:
            outcomes: list[str] = []
            while time.monotonic() < put_at + 15:
                report = await checker.run_pass(sweep=False)
                outcomes += [a["outcome"] for a in report.actions]
                if "finalized_missed_webhook" in outcomes:
                    return outcomes
                await asyncio.sleep(0.2)  # the next pass, as the reconciler's interval
            return outcomes

    assert asyncio.run(passes_until_settled()) == ["finalized_missed_webhook"]
    record = wait_for_status(api, auth_headers, upload["id"], "finalized", timeout=1)
    settled_after = time.monotonic() - put_at
    assert 1 <= settled_after < 15
    assert history(sql, upload["id"]) == [("pending", "owner"), ("finalized", "reconciler")]
    assert record["expires_at"] > record["finalized_at"]


def test_uploads_never_sent_end_expired_and_multipart_ones_are_aborted(
    api, auth_headers, settings, sql, database_url, s3
):
    single = create_upload(api, auth_headers, b"never sent")
    multi = api.post(
        "/v1/uploads",
        headers=auth_headers,
        json={
            "filename": "m.bin",
            "content_type": "application/octet-stream",
            "size": 6 * 1024 * 1024,
            "multipart": True,
        },
    ).json()
    make_stale(sql, single["id"], multi["id"])
    report = run_pass(settings, database_url, sweep=False)
    assert report.counts == {"expired": 2}
    assert sorted(action["upload_id"] for action in report.actions) == sorted(
        [single["id"], multi["id"]]
    )
    for upload in (single, multi):
        assert (
            api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"]
            == "expired"
        )
    listed = s3.list_multipart_uploads(Bucket=settings.s3_bucket, Prefix=multi["key"])
    assert listed.get("Uploads", []) == []
    # A late PUT after expiry is removed by the webhook: no object without a live record.
    assert put_bytes(single, b"never sent").status_code == 200
    assert not exists(s3, settings.s3_bucket, single["key"])


@pytest.mark.own_bucket
def test_a_dry_run_changes_nothing(api, auth_headers, settings, sql, database_url, s3):
    upload = create_upload(api, auth_headers, b"stale")
    make_stale(sql, upload["id"])
    orphan = "uploads/orphan-dry-run"
    s3.put_object(Bucket=settings.s3_bucket, Key=orphan, Body=b"x")

    report = run_pass(settings, database_url, grace=0, dry_run=True)
    assert report.actions == [
        {"outcome": "would_expire", "upload_id": upload["id"], "key": upload["key"]},
        {"outcome": "would_delete_orphan_object", "key": orphan},
    ]
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )
    assert exists(s3, settings.s3_bucket, orphan)
    assert sql("SELECT count(*) AS n FROM reconciler_runs")[0]["n"] == 0


@pytest.mark.own_bucket
def test_orphans_are_removed_only_after_the_grace_period(
    api, auth_headers, settings, database_url, s3
):
    orphan = "uploads/orphan-no-record"
    s3.put_object(Bucket=settings.s3_bucket, Key=orphan, Body=b"x")
    stray = s3.create_multipart_upload(Bucket=settings.s3_bucket, Key="uploads/orphan-multipart")
    kept = create_upload(api, auth_headers, b"live one")
    put_bytes(kept, b"live one")
    wait_for_status(api, auth_headers, kept["id"], "finalized")

    young = run_pass(settings, database_url, grace=3600)
    assert exists(s3, settings.s3_bucket, orphan)
    assert young.actions == []

    old = run_pass(settings, database_url, grace=0)
    assert old.actions == [
        {"outcome": "orphan_object_deleted", "key": orphan},
        {
            "outcome": "orphan_multipart_aborted",
            "key": "uploads/orphan-multipart",
            "multipart_upload_id": stray["UploadId"],
        },
    ]
    assert not exists(s3, settings.s3_bucket, orphan)
    assert exists(s3, settings.s3_bucket, kept["key"])
    assert s3.list_multipart_uploads(Bucket=settings.s3_bucket).get("Uploads", []) == []


def test_two_reconcilers_at_once_handle_each_of_200_stale_uploads_exactly_once(
    broker, auth_headers, settings, sql, database_url
):
    async def create_many():
        async with httpx.AsyncClient(base_url=broker, timeout=30) as client:
            body = {"filename": "s.txt", "content_type": "text/plain", "size": 5}
            responses = await asyncio.gather(
                *(client.post("/v1/uploads", json=body, headers=auth_headers) for _ in range(200))
            )
        return [r.json()["id"] for r in responses]

    ids = asyncio.run(create_many())
    make_stale(sql, *ids)

    async def both():
        async with (
            a_reconciler(settings, database_url) as one,
            a_reconciler(settings, database_url) as two,
        ):
            return await asyncio.gather(
                one.run_pass(sweep=False, trigger="one"), two.run_pass(sweep=False, trigger="two")
            )

    first, second = asyncio.run(both())
    handled = [a["upload_id"] for a in first.actions + second.actions]
    assert sorted(handled) == sorted(ids)  # every one, none twice
    assert first.counts + second.counts == {"expired": 200}
    assert first.counts["expired"] > 0 and second.counts["expired"] > 0  # the work was shared
    rows = sql(
        "SELECT upload_id, count(*) AS n FROM upload_history WHERE status = 'expired' "
        "GROUP BY upload_id"
    )
    assert sorted(str(r["upload_id"]) for r in rows) == sorted(ids)
    assert {r["n"] for r in rows} == {1}


def test_each_pass_is_recorded(settings, database_url, sql):
    report = run_pass(settings, database_url, sweep=False, trigger="recorded")
    runs = sql("SELECT started_at, trigger, dry_run, counts FROM reconciler_runs")
    assert [tuple(run) for run in runs] == [(report.started_at, "recorded", False, "{}")]


@pytest.mark.own_bucket
@pytest.mark.parametrize("dry_run", [True, False])
def test_the_cli_reconciles(broker_env, sql, capsys, dry_run):
    import json

    from broker import cli

    argv = ["reconcile", "--json"] + (["--dry-run"] if dry_run else [])
    assert cli.main(argv) == 0
    output = json.loads(capsys.readouterr().out)
    # An empty database and bucket: nothing to do, and a real pass says so in the runs table.
    assert output == {"dry_run": dry_run, "counts": {}, "actions": []}
    runs = sql("SELECT trigger, dry_run, counts FROM reconciler_runs")
    assert [tuple(run) for run in runs] == ([] if dry_run else [("cli", False, "{}")])
