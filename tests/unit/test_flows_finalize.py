"""Storage events applied to uploads: finalize, reject, duplicates, dead and unknown objects."""

from __future__ import annotations

import hashlib

from broker.domain.model import Actor, ChecksumAlgorithm, Outcome, RejectReason, UploadStatus
from broker.domain.objects import StoredObject
from tests.unit import steps
from tests.unit.fakes import sha256_base64
from tests.unit.steps import (
    ORIGIN,
    OWNER,
    a_file,
    create,
    created_event,
    put_and_notify,
    removed_event,
)
from tests.unit.wired import MIB


async def test_a_matching_put_event_finalizes_the_upload(flows):
    created = await create(flows, b"hello")
    flows.clock.advance(5)

    outcome, upload = await put_and_notify(flows, created.record, b"hello")

    assert outcome is Outcome.FINALIZED
    assert upload.status is UploadStatus.FINALIZED
    assert upload.etag == hashlib.md5(b"hello").hexdigest()
    assert upload.finalized_at == flows.clock()
    assert upload.object_key in flows.store.objects
    history = await flows.queries.get_upload_history(upload.id)
    assert [(e.status, e.actor) for e in history] == [
        (UploadStatus.PENDING, Actor.OWNER),
        (UploadStatus.FINALIZED, Actor.WEBHOOK),
    ]
    assert history[-1].detail == {"event": "s3:ObjectCreated:Put"}


async def test_a_finalized_upload_can_be_downloaded_under_its_filename(flows):
    upload = await steps.finalized(flows, filename="report 2026.txt")

    request = await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)

    assert request.method == "GET"
    assert "report%202026.txt" in request.url and upload.object_key in request.url


async def test_a_size_mismatch_rejects_and_deletes_the_object(flows):
    created = await create(flows, b"hello")

    outcome, upload = await put_and_notify(flows, created.record, b"hello!")

    assert outcome is Outcome.REJECTED
    assert upload.status is UploadStatus.REJECTED
    assert upload.reject_reason == RejectReason.SIZE_MISMATCH
    assert upload.rejected_at == flows.clock()
    assert upload.object_key not in flows.store.objects


async def test_a_content_type_mismatch_rejects_and_deletes_the_object(flows):
    created = await create(flows, b"hello")

    outcome, upload = await put_and_notify(flows, created.record, content_type="text/html")

    assert outcome is Outcome.REJECTED
    assert upload.reject_reason == RejectReason.CONTENT_TYPE_MISMATCH
    assert upload.object_key not in flows.store.objects


async def test_a_checksum_mismatch_rejects_and_deletes_the_object(flows):
    created = await create(flows, b"hello", sha256=hashlib.sha256(b"hello").hexdigest())

    outcome, upload = await put_and_notify(flows, created.record, b"jello", checksum=True)

    assert outcome is Outcome.REJECTED
    assert upload.reject_reason == RejectReason.CHECKSUM_MISMATCH
    assert upload.object_key not in flows.store.objects


async def test_a_matching_checksum_is_read_from_storage_and_recorded(flows):
    created = await create(flows, b"hello", sha256=hashlib.sha256(b"hello").hexdigest())

    outcome, upload = await put_and_notify(flows, created.record, b"hello", checksum=True)

    assert outcome is Outcome.FINALIZED
    assert upload.checksum == sha256_base64(b"hello")


async def test_a_promised_checksum_that_storage_did_not_keep_rejects(flows):
    created = await create(flows, b"hello", sha256=hashlib.sha256(b"hello").hexdigest())

    outcome, upload = await put_and_notify(flows, created.record, b"hello", checksum=False)

    assert outcome is Outcome.REJECTED
    assert upload.reject_reason == RejectReason.CHECKSUM_MISMATCH


async def test_an_event_without_content_type_is_checked_against_storage(flows):
    created = await create(flows, b"hello")
    flows.store.put(created.record.object_key, b"hello", content_type="text/html")
    event = created_event(flows, created.record.object_key, content_type=None)

    outcome = await flows.finalizer.apply_event(event)

    assert outcome is Outcome.REJECTED
    upload = await flows.queries.get_upload(created.record.id)
    assert upload is not None and upload.reject_reason == RejectReason.CONTENT_TYPE_MISMATCH


async def test_a_duplicate_event_changes_nothing(flows):
    created = await create(flows)
    _, upload = await put_and_notify(flows, created.record)
    history = await flows.queries.get_upload_history(upload.id)
    flows.clock.advance(30)

    outcome = await flows.finalizer.apply_event(created_event(flows, upload.object_key))

    assert outcome is Outcome.IGNORED_ALREADY_FINAL
    assert await flows.queries.get_upload(upload.id) == upload
    assert await flows.queries.get_upload_history(upload.id) == history
    assert upload.object_key in flows.store.objects


async def test_a_late_event_for_a_rejected_upload_removes_the_new_object(flows):
    created = await create(flows)
    outcome, upload = await put_and_notify(flows, created.record, b"too long")
    assert outcome is Outcome.REJECTED

    flows.store.put(upload.object_key, b"hello")  # bytes arrive again
    outcome = await flows.finalizer.apply_event(created_event(flows, upload.object_key))

    assert outcome is Outcome.REMOVED_DEAD_OBJECT
    assert upload.object_key not in flows.store.objects
    assert await flows.queries.get_upload(upload.id) == upload


async def test_bytes_that_arrive_after_expiry_are_removed(flows):
    created = await create(flows)
    outcome, _ = await flows.admin.expire(created.record.id, Actor.admin("ops"))
    assert outcome is Outcome.EXPIRED

    flows.store.put(created.record.object_key, b"hello")
    outcome = await flows.finalizer.apply_event(created_event(flows, created.record.object_key))

    assert outcome is Outcome.REMOVED_DEAD_OBJECT
    assert created.record.object_key not in flows.store.objects
    upload = await flows.queries.get_upload(created.record.id)
    assert upload is not None and upload.status is UploadStatus.EXPIRED


async def test_bytes_that_arrive_after_the_owner_deleted_the_upload_are_removed(flows):
    created = await create(flows)
    await flows.uploads.delete(OWNER, created.record.id)

    flows.store.put(created.record.object_key, b"hello")
    outcome = await flows.finalizer.apply_event(created_event(flows, created.record.object_key))

    assert outcome is Outcome.REMOVED_DEAD_OBJECT
    assert created.record.object_key not in flows.store.objects


async def test_a_removed_event_deletes_the_record_once(flows):
    upload = await steps.finalized(flows)
    flows.store.objects.pop(upload.object_key)  # removed behind the broker's back

    outcome = await flows.finalizer.apply_event(removed_event(flows, upload.object_key))

    assert outcome is Outcome.DELETED
    deleted = await flows.queries.get_upload(upload.id)
    assert deleted is not None and deleted.status is UploadStatus.DELETED
    history = await flows.queries.get_upload_history(upload.id)
    assert (history[-1].status, history[-1].actor) == (UploadStatus.DELETED, Actor.WEBHOOK)

    again = await flows.finalizer.apply_event(removed_event(flows, upload.object_key))
    assert again is Outcome.IGNORED_NOT_LIVE


async def test_the_removal_of_a_rejected_object_leaves_the_rejection(flows):
    created = await create(flows)
    _, upload = await put_and_notify(flows, created.record, b"too long")

    outcome = await flows.finalizer.apply_event(removed_event(flows, upload.object_key))

    assert outcome is Outcome.IGNORED_NOT_LIVE
    assert await flows.queries.get_upload(upload.id) == upload


async def test_an_event_for_an_unknown_key_is_ignored(flows):
    flows.store.put("uploads/not-ours", b"x")

    outcome = await flows.finalizer.apply_event(created_event(flows, "uploads/not-ours"))

    assert outcome is Outcome.IGNORED_UNKNOWN_KEY
    assert "uploads/not-ours" in flows.store.objects and flows.store.deleted == []


async def test_an_event_of_another_bucket_is_ignored_even_for_a_known_key(flows):
    created = await create(flows)
    flows.store.put(created.record.object_key, b"too long")
    event = created_event(flows, created.record.object_key, bucket="elsewhere")

    outcome = await flows.finalizer.apply_event(event)

    assert outcome is Outcome.IGNORED_OTHER_BUCKET
    assert await flows.queries.get_upload(created.record.id) == created.record
    assert flows.store.deleted == []


async def test_an_event_for_an_object_already_gone_leaves_the_upload_pending(flows):
    created = await create(flows, b"hello", sha256=hashlib.sha256(b"hello").hexdigest())
    event = created_event(flows, created.record.object_key, size=5, etag="e", content_type=None)

    outcome = await flows.finalizer.apply_event(event)

    assert outcome is Outcome.IGNORED_OBJECT_GONE
    assert await flows.queries.get_upload(created.record.id) == created.record


async def test_a_rejection_is_recorded_even_when_storage_cannot_delete_the_object(flows):
    created = await create(flows)
    flows.store.put(created.record.object_key, b"too long", content_type="text/plain")
    event = created_event(flows, created.record.object_key)
    flows.store.available = False

    outcome = await flows.finalizer.apply_event(event)

    assert outcome is Outcome.REJECTED
    upload = await flows.queries.get_upload(created.record.id)
    assert upload is not None and upload.status is UploadStatus.REJECTED
    assert upload.object_key in flows.store.objects  # an orphan for the reconciler's sweep


async def test_an_upload_of_undeclared_size_records_the_stored_size(flows):
    created = await flows.uploads.create(OWNER, a_file(size=None, method="POST"))

    outcome, upload = await put_and_notify(flows, created.record, b"x" * 1000)

    assert outcome is Outcome.FINALIZED and upload.size == 1000


async def test_an_upload_of_undeclared_size_above_its_limit_is_rejected(flows):
    created = await flows.uploads.create(
        OWNER, a_file(size=None, method="POST", content_type="image/png", policy="avatars")
    )

    outcome, upload = await put_and_notify(flows, created.record, b"x" * (64 * 1024 + 1))

    assert outcome is Outcome.REJECTED and upload.reject_reason == RejectReason.SIZE_MISMATCH
    assert upload.size is None


async def test_a_multipart_upload_with_part_checksums_finalizes_with_its_composite_checksum(
    flows,
):
    file = a_file(size=5 * MIB + 1, multipart=True, checksum_algorithm=ChecksumAlgorithm.SHA256)
    created = await flows.uploads.create(OWNER, file)
    upload, plan = created.record, created.multipart
    assert plan is not None
    parts = [
        flows.store.upload_part(plan.upload_id, 1, b"a" * 5 * MIB),
        flows.store.upload_part(plan.upload_id, 2, b"b"),
    ]
    await flows.multipart.complete(OWNER, upload.id, {p.part_number: p.etag for p in parts})
    event = created_event(flows, upload.object_key, name="s3:ObjectCreated:CompleteMultipartUpload")

    outcome = await flows.finalizer.apply_event(event)

    assert outcome is Outcome.FINALIZED
    finalized = await flows.queries.get_upload(upload.id)
    assert finalized is not None and finalized.checksum is not None
    assert finalized.checksum.endswith("-2")


async def test_a_multipart_object_without_its_promised_checksum_is_rejected(flows):
    file = a_file(size=5, multipart=True, checksum_algorithm=ChecksumAlgorithm.SHA256)
    created = await flows.uploads.create(OWNER, file)
    stored = flows.store.put(created.record.object_key, b"hello")
    assert stored.checksum is None

    outcome = await flows.finalizer.apply_event(created_event(flows, created.record.object_key))

    assert outcome is Outcome.REJECTED
    upload = await flows.queries.get_upload(created.record.id)
    assert upload is not None and upload.reject_reason == RejectReason.CHECKSUM_MISSING


async def test_settling_an_upload_someone_else_settled_first_changes_nothing(flows):
    created = await create(flows)
    _, upload = await put_and_notify(flows, created.record)
    stale = created.record  # the pending record a slower handler read before
    wrong = StoredObject(size=6, etag="e", content_type="text/plain")

    outcome = await flows.finalizer.settle(stale, wrong, flows.queries, Actor.RECONCILER, {})

    assert outcome is Outcome.IGNORED_ALREADY_FINAL
    assert await flows.queries.get_upload(upload.id) == upload
    assert upload.object_key in flows.store.objects
