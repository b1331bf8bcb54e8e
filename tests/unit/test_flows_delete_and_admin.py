"""Deleting uploads, and the operators' use cases: reconcile or expire one, inspect, stats."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.domain import errors
from broker.domain.model import Actor, Outcome, UploadStatus
from tests.unit import steps
from tests.unit.steps import ORIGIN, OWNER, a_file, create
from tests.unit.wired import MIB

OPS = Actor.admin("ops")


async def test_the_owner_deletes_an_upload_and_its_object(flows):
    upload = await steps.finalized(flows)
    flows.clock.advance(10)

    deleted = await flows.uploads.delete(OWNER, upload.id)

    assert deleted.status is UploadStatus.DELETED and deleted.deleted_at == flows.clock()
    assert upload.object_key not in flows.store.objects
    assert await flows.queries.get_upload(upload.id) == deleted
    with pytest.raises(errors.UploadNotFinalized):
        await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)


async def test_deleting_twice_is_harmless(flows):
    upload = await steps.finalized(flows)
    first = await flows.uploads.delete(OWNER, upload.id)

    again = await flows.uploads.delete(OWNER, upload.id)

    assert again == first
    history = await flows.queries.get_upload_history(upload.id)
    assert [e.status for e in history].count(UploadStatus.DELETED) == 1


async def test_someone_elses_upload_cannot_be_deleted(flows):
    upload = await steps.finalized(flows)

    with pytest.raises(errors.UploadNotFound) as raised:
        await flows.uploads.delete("mallory", upload.id)

    assert (raised.value.status, raised.value.code) == (404, "ERR_UPLOAD_NOT_FOUND")
    assert await flows.queries.get_upload(upload.id) == upload
    assert upload.object_key in flows.store.objects


async def test_deleting_a_pending_multipart_upload_aborts_it(flows):
    created = await flows.uploads.create(OWNER, a_file(size=9 * MIB))
    assert created.multipart is not None

    deleted = await flows.uploads.delete(OWNER, created.record.id)

    assert deleted.status is UploadStatus.DELETED
    assert flows.store.multipart == {}


async def test_deleting_a_rejected_upload_leaves_it_rejected(flows):
    created = await create(flows)
    _, rejected = await steps.put_and_notify(flows, created.record, b"too long")

    again = await flows.uploads.delete(OWNER, rejected.id)

    assert again == rejected


async def test_a_deleted_upload_no_longer_counts_against_the_quota(flows):
    uploads = [(await create(flows, policy="counted")).record for _ in range(3)]
    await flows.uploads.delete(OWNER, uploads[0].id)

    await create(flows, policy="counted")


async def test_the_owner_reads_only_their_own_uploads(flows):
    created = await create(flows)

    assert await flows.uploads.get(OWNER, created.record.id) == created.record
    with pytest.raises(errors.UploadNotFound):
        await flows.uploads.get("mallory", created.record.id)
    with pytest.raises(errors.UploadNotFound):
        await flows.uploads.download("mallory", created.record.id, origin=ORIGIN)


async def test_a_pending_upload_cannot_be_downloaded(flows):
    created = await create(flows)

    with pytest.raises(errors.UploadNotFinalized) as raised:
        await flows.uploads.download(OWNER, created.record.id, origin=ORIGIN)

    assert (raised.value.status, raised.value.details) == (409, {"status": "pending"})


# ------------------------------------------------------------ operators


async def test_admin_reconcile_settles_a_pending_upload_whose_object_is_stored(flows):
    created = await create(flows)
    flows.store.put(created.record.object_key, b"hello")

    outcome, upload = await flows.admin.reconcile(created.record.id, OPS)

    assert outcome is Outcome.FINALIZED_MISSED_WEBHOOK
    assert upload.status is UploadStatus.FINALIZED
    history = await flows.queries.get_upload_history(upload.id)
    assert (history[-1].actor, history[-1].detail) == ("admin:ops", {"trigger": "admin"})


async def test_admin_reconcile_leaves_an_empty_upload_pending_until_its_deadline(flows):
    created = await create(flows)

    outcome, upload = await flows.admin.reconcile(created.record.id, OPS)
    assert (outcome, upload) == (Outcome.STILL_PENDING, created.record)

    flows.clock.advance(24 * 3600)
    outcome, upload = await flows.admin.reconcile(created.record.id, OPS)
    assert (outcome, upload.status) == (Outcome.EXPIRED, UploadStatus.EXPIRED)


async def test_admin_reconcile_of_a_settled_upload_changes_nothing(flows):
    upload = await steps.finalized(flows)

    outcome, found = await flows.admin.reconcile(upload.id, OPS)

    assert (outcome, found) == (Outcome.NOT_PENDING, upload)


async def test_admin_reconcile_of_an_unknown_upload_is_not_found(flows):
    created = await create(flows)
    flows.queries.uploads.clear()

    with pytest.raises(errors.UploadNotFound):
        await flows.admin.reconcile(created.record.id, OPS)


async def test_admin_expire_ends_a_pending_upload_at_once_and_cleans_storage(flows):
    created = await flows.uploads.create(OWNER, a_file(size=9 * MIB))
    assert created.multipart is not None
    flows.store.put(created.record.object_key, b"stray")

    outcome, upload = await flows.admin.expire(created.record.id, OPS)

    assert (outcome, upload.status) == (Outcome.EXPIRED, UploadStatus.EXPIRED)
    assert flows.store.multipart == {} and flows.store.objects == {}
    history = await flows.queries.get_upload_history(upload.id)
    assert history[-1].actor == "admin:ops"

    again, same = await flows.admin.expire(created.record.id, OPS)
    assert (again, same) == (Outcome.NOT_PENDING, upload)


async def test_admin_expire_of_a_finalized_upload_keeps_its_object(flows):
    upload = await steps.finalized(flows)

    outcome, found = await flows.admin.expire(upload.id, OPS)

    assert (outcome, found) == (Outcome.NOT_PENDING, upload)
    assert upload.object_key in flows.store.objects


async def test_admin_inspect_shows_record_history_and_storage(flows):
    created = await flows.uploads.create(OWNER, a_file(size=9 * MIB))
    assert created.multipart is not None
    part = flows.store.upload_part(created.multipart.upload_id, 1, b"p")

    inspection = await flows.admin.inspect(created.record.id)

    assert inspection.record == created.record
    assert [e.status for e in inspection.history] == [UploadStatus.PENDING]
    assert inspection.stored is None and inspection.parts == [part]

    upload = await steps.finalized(flows)
    inspection = await flows.admin.inspect(upload.id)
    assert inspection.stored == flows.store.objects[upload.object_key][0]
    assert inspection.parts is None


async def test_admin_stats_count_uploads_and_bytes_by_status_and_policy(flows):
    started = flows.clock()
    await steps.finalized(flows, b"hello")
    await steps.finalized(flows, b"hello!")
    rejected = await create(flows, b"abc")
    await steps.put_and_notify(flows, rejected.record, b"abcd")
    await create(flows, b"0123456789", policy="docs")  # stuck after 600 s
    await flows.reconciler.run_pass(sweep=False)
    flows.clock.advance(3600)
    await create(flows, b"abc")

    stats = await flows.admin.stats()

    counts = {(c.status, c.policy): (c.uploads, c.bytes) for c in stats.by_status_and_policy}
    assert counts == {
        (UploadStatus.FINALIZED, "default"): (2, 11),
        (UploadStatus.PENDING, "default"): (1, 3),
        (UploadStatus.PENDING, "docs"): (1, 10),
        (UploadStatus.REJECTED, "default"): (1, 3),
    }
    assert (stats.pending.pending, stats.pending.stuck) == (2, 1)
    assert stats.pending.oldest_created_at == started
    assert len(stats.hourly) == 24
    assert [(h.hour, h.created, h.finalized) for h in stats.hourly[-2:]] == [
        (started, 4, 2),
        (started + timedelta(hours=1), 1, 0),
    ]
    assert [(r.started_at, r.counts) for r in stats.reconciler_runs] == [(started, {})]
