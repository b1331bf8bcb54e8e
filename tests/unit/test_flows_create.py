"""Creating uploads: policies, transfers, checksums, quotas and Idempotency-Key, on fakes."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest

from broker.domain import errors
from broker.domain.model import ChecksumAlgorithm, Outcome, Transfer, UploadStatus
from broker.flows.uploads import NewUpload
from tests.unit import steps
from tests.unit.steps import OWNER, a_file, create
from tests.unit.wired import MIB

KIB = 1024


async def test_create_records_a_pending_put_and_signs_it(flows):
    created = await create(flows, b"hello")

    record = created.record
    assert record.status is UploadStatus.PENDING
    assert record.transfer is Transfer.PUT
    assert record.owner == OWNER and record.size == 5 and record.policy == "default"
    assert record.object_key == f"uploads/{record.id}"
    assert record.expires_at == flows.clock() + timedelta(days=1)
    assert created.put is not None and created.form is None and created.multipart is None
    assert created.put.method == "PUT"
    assert created.put.headers == {
        "content-type": "text/plain",
        "content-length": "5",
        "if-none-match": "*",
    }
    assert created.put.expires_at == flows.clock() + timedelta(seconds=900)
    assert await flows.queries.get_upload(record.id) == record
    assert flows.store.objects == {} and flows.store.multipart == {}


async def test_create_uses_the_named_policy_for_key_deadline_and_url_lifetime(flows):
    created = await create(flows, b"\x89PNG", content_type="image/png", policy="avatars")
    assert created.record.object_key.startswith("avatars/")
    assert created.put is not None
    assert created.put.expires_at == flows.clock() + timedelta(seconds=120)

    docs = await create(flows, b"0123456789", policy="docs")
    assert docs.record.expires_at == flows.clock() + timedelta(seconds=600)


async def test_create_refuses_a_file_larger_than_its_policy_with_413(flows):
    with pytest.raises(errors.UploadTooLarge) as raised:
        await create(flows, b"x" * (64 * KIB + 1), content_type="image/png", policy="avatars")

    assert (raised.value.status, raised.value.code) == (413, "ERR_UPLOAD_TOO_LARGE")
    assert raised.value.details == {"max_size": 64 * KIB, "policy": "avatars"}
    assert flows.queries.uploads == {}


async def test_create_accepts_a_file_of_exactly_the_policy_maximum(flows):
    created = await create(flows, b"x" * (64 * KIB), content_type="image/png", policy="avatars")
    assert created.record.size == 64 * KIB


async def test_create_refuses_a_content_type_outside_its_policy_with_415(flows):
    with pytest.raises(errors.ContentTypeNotAllowed) as raised:
        await create(flows, b"GIF89a", content_type="image/gif", policy="avatars")

    assert (raised.value.status, raised.value.code) == (415, "ERR_CONTENT_TYPE_NOT_ALLOWED")
    assert raised.value.details == {"allowed": ["image/png", "image/jpeg"], "policy": "avatars"}
    assert flows.queries.uploads == {}


async def test_create_matches_content_types_by_their_essence(flows):
    created = await create(flows, b"x", content_type="Image/PNG; foo=bar", policy="avatars")
    assert created.record.content_type == "Image/PNG; foo=bar"

    with pytest.raises(errors.ContentTypeNotAllowed):
        await create(flows, b"x", content_type="application/pdf")  # the default policy


async def test_create_refuses_a_file_smaller_than_its_policy(flows):
    with pytest.raises(errors.UploadTooSmall) as raised:
        await create(flows, b"123456789", policy="docs")

    assert (raised.value.status, raised.value.code) == (422, "ERR_UPLOAD_TOO_SMALL")
    assert raised.value.details == {"min_size": 10, "policy": "docs"}


async def test_create_with_an_unknown_policy_names_the_known_ones(flows):
    with pytest.raises(errors.UnknownPolicy) as raised:
        await create(flows, policy="nope")

    assert raised.value.code == "ERR_UNKNOWN_POLICY"
    assert raised.value.details == {
        "policies": ["avatars", "big", "counted", "default", "docs", "metered", "single"]
    }


async def test_create_above_the_threshold_starts_a_multipart_upload(flows):
    size = 8 * MIB + 1  # the threshold is 8 MiB, parts are 5 MiB
    created = await flows.uploads.create(OWNER, a_file(size=size))

    record, plan = created.record, created.multipart
    assert record.transfer is Transfer.MULTIPART and created.put is None
    assert plan is not None
    assert (plan.part_size, plan.part_count) == (5 * MIB, 2)
    assert (record.part_size, record.part_count) == (5 * MIB, 2)
    assert plan.upload_id == record.multipart_upload_id
    assert flows.store.multipart[plan.upload_id].key == record.object_key


async def test_create_at_the_threshold_is_still_a_single_put(flows):
    created = await flows.uploads.create(OWNER, a_file(size=8 * MIB))
    assert created.record.transfer is Transfer.PUT
    assert flows.store.multipart == {}


async def test_a_policy_without_multipart_signs_a_single_put_above_the_threshold(flows):
    created = await flows.uploads.create(OWNER, a_file(size=9 * MIB, policy="single"))

    assert created.record.transfer is Transfer.PUT and created.put is not None
    assert flows.store.multipart == {}


async def test_a_policy_without_multipart_refuses_an_explicit_multipart_request(flows):
    with pytest.raises(errors.MultipartNotAllowed) as raised:
        await flows.uploads.create(OWNER, a_file(size=9 * MIB, policy="single", multipart=True))

    assert raised.value.code == "ERR_MULTIPART_NOT_ALLOWED"
    assert flows.queries.uploads == {} and flows.store.multipart == {}


async def test_a_whole_file_sha256_is_signed_into_the_put(flows):
    digest = hashlib.sha256(b"hello").hexdigest()
    created = await create(flows, b"hello", sha256=digest)

    assert created.put is not None
    expected = base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    assert created.put.headers["x-amz-checksum-sha256"] == expected
    assert created.record.sha256 == digest


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"checksum_algorithm": ChecksumAlgorithm.SHA256}, "checksum_algorithm"),
        ({"multipart": True, "sha256": "ab" * 32}, "sha256"),
        ({"multipart": True, "method": "POST"}, "method"),
        ({"size": None}, "size"),
    ],
    ids=["part-checksums-on-a-put", "sha256-on-multipart", "multipart-post", "put-without-size"],
)
async def test_create_refuses_contradictory_transfer_and_checksum_choices(flows, fields, field):
    with pytest.raises(errors.InvalidRequest) as raised:
        await flows.uploads.create(OWNER, a_file(**fields))

    assert raised.value.code == "ERR_VALIDATION"
    assert [problem["field"] for problem in raised.value.details] == [field]
    assert flows.queries.uploads == {} and flows.store.multipart == {}


async def test_a_multipart_upload_may_ask_for_per_part_checksums(flows):
    created = await flows.uploads.create(
        OWNER, a_file(size=6 * MIB, multipart=True, checksum_algorithm=ChecksumAlgorithm.SHA256)
    )
    assert created.multipart is not None
    assert created.multipart.checksum_algorithm is ChecksumAlgorithm.SHA256
    assert flows.store.multipart[created.multipart.upload_id].checksum_algorithm == "SHA256"


async def test_a_form_post_is_signed_for_the_exact_size(flows):
    created = await create(flows, b"hello", method="POST")

    assert created.record.transfer is Transfer.POST and created.form is not None
    assert created.form.fields["size-range"] == "5,5"
    assert created.form.fields["key"] == created.record.object_key


# ------------------------------------------------------------ quotas


async def test_the_count_quota_refuses_exactly_the_upload_after_the_last_allowed(flows):
    for _ in range(3):
        await create(flows, policy="counted")

    with pytest.raises(errors.QuotaExceeded) as raised:
        await create(flows, policy="counted")

    assert (raised.value.status, raised.value.code) == (403, "ERR_QUOTA_EXCEEDED")
    assert raised.value.details["policy"] == "counted"
    assert raised.value.details["policy_quota"] == {"bytes": None, "count": 3}
    assert len(flows.queries.uploads) == 3
    # Another owner, and another policy of the same owner, have quotas of their own.
    await create(flows, owner="bob", policy="counted")
    await create(flows)


async def test_the_count_quota_counts_only_live_uploads(flows):
    uploads = [(await create(flows, policy="counted")).record for _ in range(3)]

    await flows.uploads.delete(OWNER, uploads[0].id)
    flows.store.put(uploads[1].object_key, b"wrong size")
    outcome = await flows.finalizer.apply_event(steps.created_event(flows, uploads[1].object_key))
    assert outcome is Outcome.REJECTED

    await create(flows, policy="counted")
    await create(flows, policy="counted")
    with pytest.raises(errors.QuotaExceeded):
        await create(flows, policy="counted")


async def test_the_bytes_quota_is_exact(flows):
    await create(flows, b"x" * (100 * KIB), policy="metered")
    await create(flows, b"x" * (100 * KIB), policy="metered")
    await create(flows, b"x" * (50 * KIB), policy="metered")  # 250 KiB: exactly full

    with pytest.raises(errors.QuotaExceeded) as raised:
        await create(flows, b"x", policy="metered")

    assert raised.value.details["policy_quota"] == {"bytes": 250 * KIB, "count": None}
    assert len(flows.queries.uploads) == 3


async def test_a_refused_multipart_upload_leaves_no_record_and_nothing_in_storage(flows):
    first = await flows.uploads.create(OWNER, a_file(size=9 * MIB, policy="big"))
    assert first.multipart is not None

    with pytest.raises(errors.QuotaExceeded):
        await flows.uploads.create(OWNER, a_file(size=9 * MIB, policy="big"))

    assert list(flows.queries.uploads) == [first.record.id]
    assert list(flows.store.multipart) == [first.multipart.upload_id]
    assert len(flows.store.aborted) == 1


async def test_an_upload_of_undeclared_size_reserves_its_policy_maximum(flows):
    unknown = a_file(size=None, method="POST", policy="metered")  # reserves 100 KiB
    first = await flows.uploads.create(OWNER, unknown)
    await flows.uploads.create(OWNER, unknown)
    assert first.record.size is None and first.record.size_limit == 100 * KIB
    assert first.form is not None and first.form.fields["size-range"] == f"1,{100 * KIB}"

    with pytest.raises(errors.QuotaExceeded):
        await flows.uploads.create(OWNER, unknown)  # 300 KiB reserved > 250 KiB
    await create(flows, b"x" * (50 * KIB), policy="metered")  # 250 KiB: fits exactly
    with pytest.raises(errors.QuotaExceeded):
        await create(flows, b"x", policy="metered")


async def test_a_finalized_upload_of_undeclared_size_holds_only_its_stored_size(flows):
    unknown = a_file(size=None, method="POST", policy="metered")
    first = await flows.uploads.create(OWNER, unknown)
    await flows.uploads.create(OWNER, unknown)

    flows.store.put(first.record.object_key, b"x" * KIB)
    await flows.finalizer.apply_event(steps.created_event(flows, first.record.object_key))

    # 1 KiB + 100 KiB reserved: another undeclared upload fits now, and then 49 KiB more.
    await flows.uploads.create(OWNER, unknown)
    await create(flows, b"x" * (49 * KIB), policy="metered")
    with pytest.raises(errors.QuotaExceeded):
        await create(flows, b"x", policy="metered")


async def test_the_global_quota_counts_uploads_of_every_policy(make_flows):
    flows = make_flows('[policies.other]\nkey_prefix = "other/"\n\n[quota]\ncount = 2\n')
    await create(flows)
    await create(flows, policy="other")

    with pytest.raises(errors.QuotaExceeded) as raised:
        await create(flows, policy="other")

    assert raised.value.details["global_quota"] == {"bytes": None, "count": 2}
    await create(flows, owner="bob")


# ------------------------------------------------------------ Idempotency-Key


async def test_a_retried_create_replays_the_same_upload_with_a_fresh_url(flows):
    first = await flows.uploads.create(OWNER, a_file(), idempotency_key="k1")
    flows.clock.advance(60)

    again = await flows.uploads.create(OWNER, a_file(), idempotency_key="k1")

    assert not first.replayed and again.replayed
    assert again.record == first.record
    assert first.put is not None and again.put is not None
    assert again.put.url != first.put.url
    assert again.put.expires_at == first.put.expires_at + timedelta(seconds=60)
    assert len(flows.queries.uploads) == 1


async def test_a_retried_multipart_create_starts_no_second_multipart_upload(flows):
    first = await flows.uploads.create(OWNER, a_file(size=9 * MIB), idempotency_key="k1")
    again = await flows.uploads.create(OWNER, a_file(size=9 * MIB), idempotency_key="k1")

    assert again.replayed and again.multipart == first.multipart
    assert len(flows.store.multipart) == 1


async def test_a_replay_of_a_finalized_upload_has_nothing_left_to_send(flows):
    created = await flows.uploads.create(OWNER, a_file(), idempotency_key="k1")
    await steps.put_and_notify(flows, created.record)

    again = await flows.uploads.create(OWNER, a_file(), idempotency_key="k1")

    assert again.replayed and again.record.status is UploadStatus.FINALIZED
    assert again.put is None and again.form is None and again.multipart is None


async def test_a_reused_idempotency_key_with_another_body_is_refused(flows):
    first = await flows.uploads.create(OWNER, a_file(), idempotency_key="k1")

    with pytest.raises(errors.IdempotencyKeyReused) as raised:
        await flows.uploads.create(OWNER, a_file(filename="other.txt"), idempotency_key="k1")

    assert (raised.value.status, raised.value.code) == (409, "ERR_IDEMPOTENCY_KEY_REUSED")
    assert raised.value.details == {"upload_id": str(first.record.id)}
    assert len(flows.queries.uploads) == 1


async def test_the_same_idempotency_key_of_two_owners_makes_two_uploads(flows):
    mine = await flows.uploads.create(OWNER, a_file(), idempotency_key="k1")
    theirs = await flows.uploads.create("bob", a_file(), idempotency_key="k1")

    assert mine.record.id != theirs.record.id and not theirs.replayed


async def test_a_replay_is_not_refused_by_a_quota_the_first_request_filled(flows):
    for key in ("k1", "k2", "k3"):
        await flows.uploads.create(OWNER, a_file(policy="counted"), idempotency_key=key)

    again = await flows.uploads.create(OWNER, a_file(policy="counted"), idempotency_key="k3")
    assert again.replayed


async def test_the_loser_of_a_race_on_one_key_gets_the_winners_upload(flows, monkeypatch):
    """Two requests with one key: the second looks the key up before the first is recorded,
    then its insert finds the key taken; it answers with the first upload, and the multipart
    upload it started is aborted."""
    winner = await flows.uploads.create(OWNER, a_file(size=9 * MIB), idempotency_key="k1")
    lookups = []
    real_lookup = flows.queries.get_upload_by_idempotency_key

    async def first_lookup_misses(owner, key):
        lookups.append(key)
        return None if len(lookups) == 1 else await real_lookup(owner, key)

    monkeypatch.setattr(flows.queries, "get_upload_by_idempotency_key", first_lookup_misses)

    loser = await flows.uploads.create(OWNER, a_file(size=9 * MIB), idempotency_key="k1")

    assert loser.replayed and loser.record.id == winner.record.id
    assert len(lookups) == 2
    assert winner.multipart is not None
    assert list(flows.store.multipart) == [winner.multipart.upload_id]
    assert len(flows.store.aborted) == 1


async def test_a_create_that_storage_cannot_start_records_nothing(flows):
    flows.store.available = False

    with pytest.raises(errors.StorageUnavailable):
        await flows.uploads.create(OWNER, a_file(size=9 * MIB))

    assert flows.queries.uploads == {}


async def test_a_multipart_upload_is_aborted_when_its_record_cannot_be_written(flows):
    flows.queries.available = False

    with pytest.raises(errors.DatabaseUnavailable):
        await flows.uploads.create(OWNER, a_file(size=9 * MIB))

    assert flows.store.multipart == {} and len(flows.store.aborted) == 1


def test_the_request_fingerprint_covers_every_field():
    base = a_file()
    variants = [
        a_file(filename="x.txt"),
        a_file(content_type="text/html"),
        a_file(size=6),
        a_file(sha256="ab" * 32),
        a_file(metadata={"a": "b"}),
        a_file(policy="docs"),
        a_file(method="POST"),
        a_file(multipart=True),
        NewUpload("hello.txt", "text/plain", 5, checksum_algorithm=ChecksumAlgorithm.SHA256),
    ]
    fingerprints = {base.fingerprint(), *(variant.fingerprint() for variant in variants)}
    assert len(fingerprints) == len(variants) + 1
    assert base.fingerprint() == a_file().fingerprint()
