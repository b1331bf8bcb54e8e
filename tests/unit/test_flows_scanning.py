"""The scanning use cases on fakes: verified uploads of a scanned policy wait in `scanning`,
the scanner's verdict finalizes or quarantines them, no verdict retries (fail-closed) or
skips (fail-open), leases guard every verdict, and admins release or delete."""

from __future__ import annotations

import asyncio
import threading

import pytest

from broker.domain import errors
from broker.domain.model import Outcome, ScanResult, UploadStatus
from tests.unit.steps import ORIGIN, a_file, created_event
from tests.unit.wired import flows_in

POLICIES = """
[policies.scanned]
content_types = ["text/plain"]
scan = true

[policies.scanned_open]
content_types = ["text/plain"]
scan = true
scan_fail = "open"
"""
OWNER = "alice"


@pytest.fixture
def flows(tmp_path):
    return flows_in(tmp_path, POLICIES)


async def verified(flows, data: bytes, policy: str = "scanned"):
    created = await flows.uploads.create(OWNER, a_file(data, policy=policy))
    flows.store.put(created.record.object_key, data)
    outcome = await flows.finalizer.apply_event(created_event(flows, created.record.object_key))
    assert outcome is Outcome.SCANNING
    return created.record.id


async def test_a_verified_upload_waits_scanning_and_cannot_be_downloaded(flows):
    upload_id = await verified(flows, b"hello there")
    assert (await flows.queries.get_upload(upload_id)).status is UploadStatus.SCANNING
    with pytest.raises(errors.UploadScanning):
        await flows.uploads.download(OWNER, upload_id, origin=ORIGIN)


async def test_the_verdict_finalizes_a_clean_file_and_quarantines_an_infected_one(flows):
    clean = await verified(flows, b"hello there")
    infected = await verified(flows, b"has EICAR inside")

    assert sorted(await flows.scanner.scan_due()) == sorted(
        [Outcome.FINALIZED, Outcome.QUARANTINED]
    )
    clean_record = await flows.queries.get_upload(clean)
    assert (clean_record.status, clean_record.scan_result) == (
        UploadStatus.FINALIZED,
        ScanResult.CLEAN,
    )
    assert clean_record.finalized_at is not None
    with pytest.raises(errors.UploadQuarantined):
        await flows.uploads.download(OWNER, infected, origin=ORIGIN)
    assert flows.queries.scan_jobs == {}


async def test_no_verdict_retries_with_backoff_under_fail_closed(flows):
    upload_id = await verified(flows, b"hello there")
    flows.engine.down = True
    assert await flows.scanner.scan_due() == [Outcome.SCAN_RETRY]
    assert await flows.scanner.scan_due() == []  # not due again before its backoff
    assert (await flows.admin.scan_backlog()).retried == 1  # visible as stuck on /ops
    flows.engine.down = False
    flows.clock.advance(5)
    assert await flows.scanner.scan_due() == [Outcome.FINALIZED]
    assert (await flows.queries.get_upload(upload_id)).scan_result is ScanResult.CLEAN


async def test_no_verdict_finalizes_as_skipped_under_fail_open(flows):
    upload_id = await verified(flows, b"hello there", policy="scanned_open")
    flows.engine.down = True
    assert await flows.scanner.scan_due() == [Outcome.SCAN_SKIPPED]
    record = await flows.queries.get_upload(upload_id)
    assert (record.status, record.scan_result) == (UploadStatus.FINALIZED, ScanResult.SKIPPED)


async def test_a_verdict_after_the_lease_passed_to_another_scanner_changes_nothing(flows):
    upload_id = await verified(flows, b"hello there")
    (job,) = await flows.queries.claim_scan_jobs(
        now=flows.clock(), lease_seconds=10, lease_owner="elsewhere", limit=5
    )
    assert await flows.scanner.scan_due() == []  # leased elsewhere
    changed = await flows.queries.record_scan_verdict(
        upload_id, lease_owner="not-the-holder", status=UploadStatus.FINALIZED,
        scan_result=ScanResult.CLEAN, scan_signature=None, actor="scanner", detail={},
    )  # fmt: skip
    assert changed is None and job == (upload_id, 1)
    flows.clock.advance(11)  # the holder died: its lease runs out
    assert await flows.scanner.scan_due() == [Outcome.FINALIZED]


async def test_admins_release_or_delete_a_quarantined_file(flows):
    released = await verified(flows, b"EICAR one")
    deleted = await verified(flows, b"EICAR two")
    await flows.scanner.scan_due()

    upload = await flows.admin.release(released, "admin:root", "false positive")
    assert upload.status is UploadStatus.FINALIZED
    with pytest.raises(errors.UploadNotQuarantined):
        await flows.admin.release(released, "admin:root", "again")
    outcome, upload = await flows.admin.delete(deleted, "admin:root", "malware")
    assert (outcome, upload.status) == (Outcome.DELETED, UploadStatus.DELETED)
    assert upload.object_key in flows.store.deleted
    history = await flows.queries.get_upload_history(released)
    assert (history[-1].actor, history[-1].detail) == ("admin:root", {"reason": "false positive"})


async def test_a_scanner_that_stops_hands_its_jobs_back_at_once(flows):
    upload_id = await verified(flows, b"hello there")
    started, release = threading.Event(), threading.Event()
    scan = flows.engine.scan

    def slow_scan(chunks):
        started.set()
        release.wait(5)
        return scan(chunks)

    flows.engine.scan = slow_scan
    running = asyncio.create_task(flows.scanner.run_forever())
    while not started.is_set():
        await asyncio.sleep(0.01)
    assert flows.queries.scan_jobs[upload_id].lease_owner is not None

    running.cancel()  # shutting down, mid-scan
    await asyncio.gather(running, return_exceptions=True)
    release.set()

    job = flows.queries.scan_jobs[upload_id]
    assert (job.lease_owner, job.leased_until) == (None, None)  # due again, not in 150 s
    assert await flows.scanner.scan_due() == [Outcome.FINALIZED]
