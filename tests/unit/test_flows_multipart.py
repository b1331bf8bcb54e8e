"""Multipart uploads: signing parts, resuming, completing, and Uppy's uploads of unknown size."""

from __future__ import annotations

import pytest

from broker.domain import errors
from broker.domain.model import ChecksumAlgorithm, Outcome, Transfer, UploadStatus
from tests.unit.fakes import sha256_base64
from tests.unit.steps import OWNER, a_file, create, created_event
from tests.unit.wired import MIB

SIZE = 5 * MIB + 3  # two parts: 5 MiB, then 3 bytes
FIRST, LAST = b"a" * 5 * MIB, b"xyz"


async def multipart_upload(flows, size=SIZE, **fields):
    created = await flows.uploads.create(OWNER, a_file(size=size, multipart=True, **fields))
    assert created.multipart is not None
    return created.record, created.multipart.upload_id


def etags(*parts):
    return {part.part_number: part.etag for part in parts}


async def test_parts_are_signed_for_their_exact_length(flows):
    upload, _ = await multipart_upload(flows)

    signed = await flows.multipart.sign_parts(OWNER, upload.id, [2, 1], {})

    assert [(n, r.headers["content-length"]) for n, r in signed] == [(2, "3"), (1, str(5 * MIB))]
    assert all(r.method == "PUT" and "partNumber" in r.url for _, r in signed)


async def test_a_part_outside_the_plan_is_not_signed(flows):
    upload, _ = await multipart_upload(flows)

    with pytest.raises(errors.InvalidRequest) as raised:
        await flows.multipart.sign_parts(OWNER, upload.id, [0, 3], {})

    assert [p["message"] for p in raised.value.details] == [
        "part 0 is outside 1..2",
        "part 3 is outside 1..2",
    ]


async def test_parts_of_a_checksummed_upload_are_signed_with_their_checksums(flows):
    upload, _ = await multipart_upload(flows, checksum_algorithm=ChecksumAlgorithm.SHA256)
    digest = sha256_base64(FIRST)

    signed = await flows.multipart.sign_parts(OWNER, upload.id, [1], {1: digest})
    assert signed[0][1].headers["x-amz-checksum-sha256"] == digest

    with pytest.raises(errors.InvalidRequest) as raised:
        await flows.multipart.sign_parts(OWNER, upload.id, [1, 2], {1: digest})
    assert [p["message"] for p in raised.value.details] == ["part 2 needs its SHA256 checksum"]


async def test_checksums_for_an_upload_created_without_an_algorithm_are_refused(flows):
    upload, _ = await multipart_upload(flows)

    with pytest.raises(errors.InvalidRequest):
        await flows.multipart.sign_parts(OWNER, upload.id, [1], {1: sha256_base64(FIRST)})


async def test_a_single_put_has_no_parts(flows):
    created = await create(flows)

    with pytest.raises(errors.NotMultipart):
        await flows.multipart.sign_parts(OWNER, created.record.id, [1], {})
    with pytest.raises(errors.NotMultipart):
        await flows.multipart.complete(OWNER, created.record.id, {})


async def test_someone_elses_multipart_upload_is_not_found(flows):
    upload, _ = await multipart_upload(flows)

    with pytest.raises(errors.UploadNotFound):
        await flows.multipart.sign_parts("bob", upload.id, [1], {})
    with pytest.raises(errors.UploadNotFound):
        await flows.multipart.complete("bob", upload.id, {})


async def test_completing_with_every_part_joins_them_and_the_webhook_finalizes(flows):
    upload, mpu = await multipart_upload(flows)
    parts = [flows.store.upload_part(mpu, 1, FIRST), flows.store.upload_part(mpu, 2, LAST)]

    record = await flows.multipart.complete(OWNER, upload.id, etags(*parts))

    assert record.status is UploadStatus.PENDING  # until storage's event arrives
    stored, _ = flows.store.objects[upload.object_key]
    assert stored.size == SIZE and stored.etag.endswith("-2")
    assert mpu not in flows.store.multipart
    event = created_event(flows, upload.object_key, name="s3:ObjectCreated:CompleteMultipartUpload")
    assert await flows.finalizer.apply_event(event) is Outcome.FINALIZED


async def test_claimed_etags_may_be_quoted_as_s3_reports_them(flows):
    upload, mpu = await multipart_upload(flows)
    parts = [flows.store.upload_part(mpu, 1, FIRST), flows.store.upload_part(mpu, 2, LAST)]

    await flows.multipart.complete(OWNER, upload.id, {p.part_number: f'"{p.etag}"' for p in parts})

    assert upload.object_key in flows.store.objects


NO_ETAG = "0" * 32


@pytest.mark.parametrize(
    ("sent", "claim", "problems"),
    [
        ([(1, FIRST)], lambda held: {1: held[1], 2: NO_ETAG}, [(2, "not uploaded")]),
        ([(1, FIRST), (2, LAST)], lambda held: {1: held[1]}, [(2, "not in the list")]),
        ([(1, FIRST), (2, LAST)], lambda held: {**held, 3: NO_ETAG}, [(3, "no such part")]),
        ([(1, FIRST), (2, LAST)], lambda held: {**held, 1: NO_ETAG}, [(1, "etag does not match")]),
        ([(1, FIRST), (2, b"wxyz")], lambda held: held, [(2, "size is not 3")]),
    ],
    ids=["missing", "unclaimed", "extra", "wrong-etag", "wrong-size"],
)
async def test_a_wrong_part_list_is_refused_and_the_upload_stays_resumable(
    flows, sent, claim, problems
):
    upload, mpu = await multipart_upload(flows)
    held = [flows.store.upload_part(mpu, n, data) for n, data in sent]

    with pytest.raises(errors.InvalidParts) as raised:
        await flows.multipart.complete(OWNER, upload.id, claim(etags(*held)))

    assert (raised.value.status, raised.value.code) == (400, "ERR_INVALID_PARTS")
    assert raised.value.details == [{"part_number": n, "problem": p} for n, p in problems]
    assert upload.object_key not in flows.store.objects
    assert await flows.multipart.list_parts(OWNER, upload.id) == held
    assert (await flows.uploads.get(OWNER, upload.id)).status is UploadStatus.PENDING


async def test_a_refused_completion_can_be_retried_once_the_parts_are_right(flows):
    upload, mpu = await multipart_upload(flows)
    first = flows.store.upload_part(mpu, 1, FIRST)
    with pytest.raises(errors.InvalidParts):
        await flows.multipart.complete(OWNER, upload.id, {1: first.etag, 2: NO_ETAG})

    last = flows.store.upload_part(mpu, 2, LAST)
    await flows.multipart.complete(OWNER, upload.id, etags(first, last))

    assert flows.store.objects[upload.object_key][0].size == SIZE


async def test_a_repeated_complete_after_finalization_returns_the_record(flows):
    upload, mpu = await multipart_upload(flows)
    parts = etags(flows.store.upload_part(mpu, 1, FIRST), flows.store.upload_part(mpu, 2, LAST))
    await flows.multipart.complete(OWNER, upload.id, parts)
    await flows.finalizer.apply_event(created_event(flows, upload.object_key))

    again = await flows.multipart.complete(OWNER, upload.id, parts)

    assert again.status is UploadStatus.FINALIZED
    assert again == await flows.queries.get_upload(upload.id)


async def test_a_repeated_complete_before_the_webhook_returns_the_pending_record(flows):
    upload, mpu = await multipart_upload(flows)
    parts = etags(flows.store.upload_part(mpu, 1, FIRST), flows.store.upload_part(mpu, 2, LAST))
    await flows.multipart.complete(OWNER, upload.id, parts)

    again = await flows.multipart.complete(OWNER, upload.id, parts)

    assert again.status is UploadStatus.PENDING
    assert flows.store.objects[upload.object_key][0].size == SIZE


async def test_an_upload_that_is_over_cannot_be_completed_or_resumed(flows):
    upload, _ = await multipart_upload(flows)
    await flows.uploads.delete(OWNER, upload.id)

    with pytest.raises(errors.UploadNotPending):
        await flows.multipart.complete(OWNER, upload.id, {})
    with pytest.raises(errors.UploadNotPending):
        await flows.multipart.list_parts(OWNER, upload.id)
    with pytest.raises(errors.UploadNotPending):
        await flows.multipart.sign_parts(OWNER, upload.id, [1], {})


async def test_parts_cannot_be_listed_once_storage_lost_the_multipart_upload(flows):
    upload, mpu = await multipart_upload(flows)
    flows.store.multipart.pop(mpu)

    with pytest.raises(errors.UploadNotPending):
        await flows.multipart.list_parts(OWNER, upload.id)


# ------------------------------------------------------------ Uppy: size known only once stored


async def uppy_upload(flows, **fields):
    record, plan = await flows.companion.create_multipart(OWNER, a_file(size=None, **fields))
    assert record.size is None and plan.part_size is None and plan.part_count is None
    return record, plan.upload_id


async def test_parts_of_an_upload_of_unknown_size_are_signed_without_a_length(flows):
    upload, mpu = await uppy_upload(flows)

    signed = await flows.companion.sign_parts(OWNER, upload.object_key, mpu, [1, 10_000])

    assert [(n, r.headers) for n, r in signed] == [(1, {}), (10_000, {})]


async def test_an_upload_of_unknown_size_completes_with_the_parts_storage_holds(flows):
    upload, mpu = await uppy_upload(flows)
    parts = [flows.store.upload_part(mpu, 1, FIRST), flows.store.upload_part(mpu, 2, b"z")]

    await flows.companion.complete(OWNER, upload.object_key, mpu, etags(*parts))
    outcome = await flows.finalizer.apply_event(created_event(flows, upload.object_key))

    assert outcome is Outcome.FINALIZED
    record = await flows.uploads.get(OWNER, upload.id)
    assert (record.size, record.part_size, record.part_count) == (5 * MIB + 1, 5 * MIB, 2)


@pytest.mark.parametrize(
    ("numbers", "claimed", "problems"),
    [
        ([1, 2], [1], [{"part_number": 2, "problem": "not in the list"}]),
        ([1], [1, 2], [{"part_number": 2, "problem": "not uploaded"}]),
        ([2, 3], [2, 3], [{"part_number": None, "problem": "parts must be numbered 1..N"}]),
    ],
    ids=["unclaimed", "not-uploaded", "not-from-1"],
)
async def test_an_upload_of_unknown_size_needs_exactly_its_parts_from_one(
    flows, numbers, claimed, problems
):
    upload, mpu = await uppy_upload(flows)
    held = {n: flows.store.upload_part(mpu, n, b"p").etag for n in numbers}

    with pytest.raises(errors.InvalidParts) as raised:
        await flows.multipart.complete(OWNER, upload.id, {n: held.get(n, NO_ETAG) for n in claimed})

    assert raised.value.details == problems
    assert mpu in flows.store.multipart


async def test_an_upload_of_unknown_size_may_not_exceed_its_policy_maximum(flows):
    upload, mpu = await uppy_upload(flows, policy="metered")  # at most 100 KiB
    part = flows.store.upload_part(mpu, 1, b"x" * (100 * 1024 + 1))

    with pytest.raises(errors.InvalidParts) as raised:
        await flows.multipart.complete(OWNER, upload.id, etags(part))

    assert raised.value.details == [
        {"part_number": None, "problem": f"{100 * 1024 + 1} bytes exceed the limit"}
    ]
    assert upload.object_key not in flows.store.objects


async def test_a_completion_storage_refuses_leaves_the_upload_resumable(flows):
    upload, mpu = await uppy_upload(flows)
    parts = [flows.store.upload_part(mpu, 1, b"small"), flows.store.upload_part(mpu, 2, b"x")]

    with pytest.raises(errors.InvalidParts) as raised:
        await flows.multipart.complete(OWNER, upload.id, etags(*parts))

    assert raised.value.details == {"storage_code": "EntityTooSmall"}
    assert mpu in flows.store.multipart
    assert (await flows.uploads.get(OWNER, upload.id)).status is UploadStatus.PENDING


async def test_uppy_single_uploads_are_form_posts_within_the_policy_range(flows):
    record, form = await flows.companion.create_form(OWNER, a_file(size=None, policy="docs"))

    assert record.transfer is Transfer.POST and record.size_limit == 5 * 1024**3
    assert form.fields["key"] == record.object_key
    assert form.fields["size-range"] == f"10,{5 * 1024**3}"


async def test_uppy_multipart_uploads_are_planned_in_uppys_part_size(flows):
    record, plan = await flows.companion.create_multipart(OWNER, a_file(size=12 * MIB))

    assert record.transfer is Transfer.MULTIPART
    assert (plan.part_size, plan.part_count) == (5 * MIB, 3)


async def test_uppy_aborting_a_pending_upload_deletes_it_and_its_parts(flows):
    upload, mpu = await uppy_upload(flows)
    flows.store.upload_part(mpu, 1, b"p")

    aborted = await flows.companion.abort(OWNER, upload.object_key, mpu)

    assert aborted.status is UploadStatus.DELETED
    assert mpu not in flows.store.multipart


async def test_uppy_cannot_abort_a_finalized_upload(flows):
    upload, mpu = await uppy_upload(flows)
    part = flows.store.upload_part(mpu, 1, b"part")
    await flows.companion.complete(OWNER, upload.object_key, mpu, etags(part))
    await flows.finalizer.apply_event(created_event(flows, upload.object_key))

    with pytest.raises(errors.UploadNotPending):
        await flows.companion.abort(OWNER, upload.object_key, mpu)

    assert upload.object_key in flows.store.objects


async def test_uppy_calls_for_another_storage_upload_id_are_not_found(flows):
    upload, _ = await uppy_upload(flows)

    with pytest.raises(errors.UploadNotFound):
        await flows.companion.list_parts(OWNER, upload.object_key, "mpu-other")


async def test_an_upload_of_unknown_size_below_its_policy_minimum_is_not_finalized(flows):
    upload, mpu = await uppy_upload(flows, policy="docs")  # at least 10 bytes
    part = flows.store.upload_part(mpu, 1, b"abc")

    try:
        await flows.multipart.complete(OWNER, upload.id, etags(part))
    except errors.InvalidParts:
        return  # refused at completion: fine
    outcome = await flows.finalizer.apply_event(created_event(flows, upload.object_key))

    assert outcome is not Outcome.FINALIZED
