"""The reconciler: settles missed webhooks, expires abandoned uploads, sweeps orphans."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from broker.domain import errors
from broker.domain.model import Actor, Outcome, RejectReason, UploadStatus
from tests.unit.steps import OWNER, a_file, create, created_event
from tests.unit.wired import MIB

DAY = 24 * 3600
GRACE = 3600  # SETTINGS' orphan_grace_seconds


async def stale(flows, data=b"hello", stored=None, **fields):
    """A pending upload past its deadline, with `stored` bytes under its key (or nothing)."""
    created = await create(flows, data, **fields)
    if stored is not None:
        flows.store.put(created.record.object_key, stored)
    return created.record


def past_deadlines(flows):
    flows.clock.advance(DAY)


async def status_of(flows, upload):
    found = await flows.queries.get_upload(upload.id)
    assert found is not None
    return found


async def test_a_stale_upload_whose_object_matches_is_finalized_as_a_missed_webhook(flows):
    upload = await stale(flows, stored=b"hello")
    past_deadlines(flows)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {Outcome.FINALIZED_MISSED_WEBHOOK: 1}
    assert report.actions == [
        {
            "outcome": Outcome.FINALIZED_MISSED_WEBHOOK,
            "upload_id": str(upload.id),
            "key": upload.object_key,
        }
    ]
    settled = await status_of(flows, upload)
    assert settled.status is UploadStatus.FINALIZED
    history = await flows.queries.get_upload_history(upload.id)
    assert (history[-1].actor, history[-1].detail) == (Actor.RECONCILER, {"trigger": "manual"})


async def test_a_stale_upload_whose_object_does_not_match_is_rejected_and_removed(flows):
    upload = await stale(flows, stored=b"hello, world")
    past_deadlines(flows)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {Outcome.REJECTED_MISSED_WEBHOOK: 1}
    settled = await status_of(flows, upload)
    assert settled.reject_reason == RejectReason.SIZE_MISMATCH
    assert upload.object_key not in flows.store.objects


async def test_a_stale_upload_with_nothing_stored_is_expired(flows):
    upload = await stale(flows)
    past_deadlines(flows)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {Outcome.EXPIRED: 1}
    expired = await status_of(flows, upload)
    assert expired.status is UploadStatus.EXPIRED and expired.expired_at == flows.clock()


async def test_an_expired_multipart_upload_is_aborted_in_storage(flows):
    created = await flows.uploads.create(OWNER, a_file(size=9 * MIB))
    assert created.multipart is not None
    flows.store.upload_part(created.multipart.upload_id, 1, b"p")
    past_deadlines(flows)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {Outcome.EXPIRED: 1}
    assert flows.store.multipart == {}
    assert flows.store.aborted == [created.multipart.upload_id]


async def test_uploads_whose_url_is_still_valid_are_left_alone(flows):
    """Before its URL expires (900 s) plus the grace (30 s), a client may still PUT."""
    upload = await stale(flows, stored=b"hello")
    nothing = await stale(flows)
    flows.clock.advance(900 + 30 - 1)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {}
    assert await status_of(flows, upload) == upload
    assert await status_of(flows, nothing) == nothing


async def test_a_missed_webhook_is_settled_once_the_url_has_expired_not_at_the_deadline(flows):
    upload = await stale(flows, stored=b"hello")
    nothing = await stale(flows)
    flows.clock.advance(900 + 30)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {Outcome.FINALIZED_MISSED_WEBHOOK: 1, Outcome.STILL_PENDING: 1}
    assert (await status_of(flows, upload)).status is UploadStatus.FINALIZED
    assert (await status_of(flows, nothing)).status is UploadStatus.PENDING
    # Bounded work: an upload that held nothing is not checked early on every pass...
    assert (await flows.reconciler.run_pass(sweep=False)).counts == {}
    # ...only at its deadline, which expires it.
    flows.clock.advance(DAY)
    assert (await flows.reconciler.run_pass(sweep=False)).counts == {Outcome.EXPIRED: 1}


async def test_a_completed_multipart_upload_is_checked_a_grace_period_after_completion(flows):
    created = await flows.uploads.create(
        "alice", a_file(b"x" * 10, content_type="application/octet-stream", multipart=True)
    )
    upload = created.record
    assert (await flows.reconciler.run_pass(sweep=False)).counts == {}
    mpu = upload.multipart_upload_id
    part = flows.store.upload_part(mpu, 1, b"x" * 10)
    await flows.multipart.complete("alice", upload.id, {1: part.etag})  # its webhook is lost
    flows.clock.advance(30)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {Outcome.FINALIZED_MISSED_WEBHOOK: 1}


async def test_each_policy_has_its_own_deadline(flows):
    docs = await stale(flows, b"0123456789", policy="docs")  # pending for 600 s
    default = await stale(flows)
    flows.clock.advance(600)

    await flows.reconciler.run_pass(sweep=False)

    assert (await status_of(flows, docs)).status is UploadStatus.EXPIRED
    assert (await status_of(flows, default)).status is UploadStatus.PENDING


async def test_a_pass_settles_every_stale_upload_and_is_recorded_with_its_counts(flows):
    await stale(flows, stored=b"hello")
    await stale(flows, stored=b"hello")
    await stale(flows)
    started = flows.clock.now + timedelta(seconds=DAY)
    past_deadlines(flows)

    report = await flows.reconciler.run_pass(trigger="background")

    assert report.counts == {Outcome.FINALIZED_MISSED_WEBHOOK: 2, Outcome.EXPIRED: 1}
    runs = await flows.queries.recent_reconciler_runs(10)
    assert len(runs) == 1
    run = runs[0]
    assert (run.started_at, run.dry_run, run.trigger) == (started, False, "background")
    assert run.counts == {"finalized_missed_webhook": 2, "expired": 1}


async def test_a_dry_run_changes_nothing_and_says_what_it_would_do(flows):
    settle = await stale(flows, stored=b"hello")
    expire = await stale(flows)
    flows.store.put("uploads/orphan", b"x")
    orphan_mpu = await flows.store.create_multipart(
        "uploads/abandoned", content_type="text/plain", checksum_algorithm=None
    )
    past_deadlines(flows)
    uploads, objects = dict(flows.queries.uploads), dict(flows.store.objects)
    multipart = copy.deepcopy(flows.store.multipart)

    report = await flows.reconciler.run_pass(dry_run=True)

    assert report.dry_run
    assert report.counts == {
        Outcome.WOULD_SETTLE_MISSED_WEBHOOK: 1,
        Outcome.WOULD_EXPIRE: 1,
        Outcome.WOULD_DELETE_ORPHAN_OBJECT: 1,
        Outcome.WOULD_ABORT_ORPHAN_MULTIPART: 1,
    }
    assert {a.get("upload_id") for a in report.actions} >= {str(settle.id), str(expire.id)}
    assert {a.get("key") for a in report.actions} >= {"uploads/orphan", "uploads/abandoned"}
    assert {a.get("multipart_upload_id") for a in report.actions} >= {orphan_mpu}
    assert flows.queries.uploads == uploads
    assert flows.store.objects == objects and flows.store.multipart == multipart
    assert flows.store.deleted == [] and flows.store.aborted == []
    assert await flows.queries.recent_reconciler_runs(10) == []


async def test_the_sweep_deletes_old_objects_no_live_upload_keeps(flows):
    live = await stale(flows, stored=b"hello")
    finalized = await stale(flows, stored=b"hello")
    await flows.finalizer.apply_event(created_event(flows, finalized.object_key))
    flows.store.put("uploads/orphan", b"x")
    flows.store.put("avatars/orphan", b"x")  # every policy's prefix is swept
    flows.store.put("elsewhere/not-ours", b"x")  # outside every prefix: never touched
    flows.clock.advance(GRACE)
    flows.store.put("uploads/young-orphan", b"x")
    flows.clock.advance(1)

    report = await flows.reconciler.run_pass()

    # `live`'s URL expired long ago: the early check finalizes it (its webhook was lost).
    assert report.counts == {
        Outcome.ORPHAN_OBJECT_DELETED: 2,
        Outcome.FINALIZED_MISSED_WEBHOOK: 1,
    }
    assert set(flows.store.deleted) == {"uploads/orphan", "avatars/orphan"}
    assert set(flows.store.objects) == {
        live.object_key,
        finalized.object_key,
        "elsewhere/not-ours",
        "uploads/young-orphan",
    }


async def test_the_sweep_deletes_the_old_object_of_a_dead_upload(flows):
    upload = await stale(flows)
    await flows.admin.expire(upload.id, Actor.admin("ops"))
    flows.store.put(upload.object_key, b"hello")  # arrived, and its event was lost
    flows.clock.advance(GRACE + 1)

    report = await flows.reconciler.run_pass()

    assert report.counts == {Outcome.ORPHAN_OBJECT_DELETED: 1}
    assert upload.object_key not in flows.store.objects


async def test_the_sweep_aborts_old_multipart_uploads_no_pending_upload_keeps(flows):
    kept = await flows.uploads.create(OWNER, a_file(size=9 * MIB))
    abandoned = await flows.store.create_multipart(
        "uploads/abandoned", content_type="text/plain", checksum_algorithm=None
    )
    foreign = await flows.store.create_multipart(
        "elsewhere/x", content_type="text/plain", checksum_algorithm=None
    )
    flows.clock.advance(GRACE + 1)
    young = await flows.store.create_multipart(
        "uploads/young", content_type="text/plain", checksum_algorithm=None
    )

    report = await flows.reconciler.run_pass()

    assert report.counts == {Outcome.ORPHAN_MULTIPART_ABORTED: 1}
    assert flows.store.aborted == [abandoned]
    assert kept.multipart is not None
    assert set(flows.store.multipart) == {kept.multipart.upload_id, foreign, young}


async def test_a_busy_sweep_lock_is_reported_and_nothing_is_swept(flows):
    upload = await stale(flows)
    flows.store.put("uploads/orphan", b"x")
    past_deadlines(flows)
    flows.queries.sweep_busy = True

    report = await flows.reconciler.run_pass()

    assert report.counts == {Outcome.EXPIRED: 1, Outcome.ORPHAN_SWEEP_SKIPPED_BUSY: 1}
    assert "uploads/orphan" in flows.store.objects
    assert (await status_of(flows, upload)).status is UploadStatus.EXPIRED
    runs = await flows.queries.recent_reconciler_runs(1)
    assert runs[0].counts == {"expired": 1, "orphan_sweep_skipped_busy": 1}


async def test_a_pass_without_sweep_leaves_orphans(flows):
    flows.store.put("uploads/orphan", b"x")
    flows.clock.advance(GRACE + 1)

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts == {} and "uploads/orphan" in flows.store.objects


async def test_a_storage_failure_while_expiring_leaves_the_upload_for_the_next_pass(flows):
    created = await flows.uploads.create(OWNER, a_file(size=9 * MIB))
    past_deadlines(flows)
    real_abort = flows.store.abort_multipart

    async def storage_down(key, upload_id):
        raise errors.StorageUnavailable()

    flows.store.abort_multipart = storage_down  # type: ignore[method-assign]
    with pytest.raises(errors.StorageUnavailable):
        await flows.reconciler.run_pass(sweep=False)

    assert (await status_of(flows, created.record)).status is UploadStatus.PENDING
    flows.store.abort_multipart = real_abort  # type: ignore[method-assign]
    report = await flows.reconciler.run_pass(sweep=False)
    assert report.counts == {Outcome.EXPIRED: 1}
    assert flows.store.multipart == {}


async def test_a_dry_run_counts_an_orphan_under_nested_prefixes_once(make_flows):
    flows = make_flows('[policies.big]\nkey_prefix = "uploads/big/"\n')
    flows.store.put("uploads/big/orphan", b"x")
    flows.clock.advance(GRACE + 1)

    report = await flows.reconciler.run_pass(dry_run=True)

    assert report.counts == {Outcome.WOULD_DELETE_ORPHAN_OBJECT: 1}
