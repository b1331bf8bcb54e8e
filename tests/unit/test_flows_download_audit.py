"""The download audit on the fakes: what a download records, what a refusal does not, the
operators' listing and the reconciler's retention."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from broker.domain import errors
from broker.domain.model import Outcome
from tests.unit import steps
from tests.unit.steps import ORIGIN, OWNER


async def test_a_download_records_who_when_for_how_long_and_from_where(flows):
    upload = await steps.finalized(flows)

    request = await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)

    (record,) = flows.queries.downloads
    assert (record.upload_id, record.requester, record.issued_at) == (
        upload.id,
        OWNER,
        flows.clock(),
    )
    assert record.expires_in_seconds == flows.settings.download_url_ttl_seconds
    assert record.url_expires_at == request.expires_at
    assert (record.request_id, record.client_address) == ("req-0001", "192.0.2.7")


async def test_refused_downloads_record_nothing(flows):
    pending = await steps.create(flows)
    finalized = await steps.finalized(flows)

    with pytest.raises(errors.UploadNotFinalized):
        await flows.uploads.download(OWNER, pending.record.id, origin=ORIGIN)
    with pytest.raises(errors.UploadNotFound):
        await flows.uploads.download("mallory", finalized.id, origin=ORIGIN)

    assert flows.queries.downloads == []


async def test_operators_page_through_an_uploads_downloads_newest_first(flows):
    upload = await steps.finalized(flows)
    for _ in range(5):
        flows.clock.advance(1)
        await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)

    seen, cursor = [], None
    while True:
        page = await flows.downloads.list_for_upload(upload.id, 2, cursor)
        seen += [r.issued_at for r in page.items]
        if (cursor := page.next_cursor) is None:
            break

    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 5
    inspected = await flows.admin.inspect(upload.id)
    assert inspected.downloads.downloads == 5
    assert inspected.downloads.last_issued_at == seen[0]
    assert [r.issued_at for r in inspected.recent_downloads] == seen[:5]


async def test_a_bad_cursor_and_an_unknown_upload_are_refused(flows):
    upload = await steps.finalized(flows)
    with pytest.raises(errors.InvalidCursor):
        await flows.downloads.list_for_upload(upload.id, 10, "not-a-cursor")
    with pytest.raises(errors.UploadNotFound):
        await flows.downloads.list_for_upload(uuid.UUID(int=1), 10, None)


async def test_the_reconciler_deletes_only_rows_past_their_retention(flows):
    upload = await steps.finalized(flows)
    await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)
    flows.clock.advance(timedelta(days=60).total_seconds())
    await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)
    flows.clock.advance(timedelta(days=31).total_seconds())  # the first is now 91 days old

    report = await flows.reconciler.run_pass(sweep=False)

    assert report.counts[Outcome.DOWNLOAD_AUDIT_PURGED] == 1
    (kept,) = flows.queries.downloads
    assert kept.issued_at == flows.clock() - timedelta(days=31)


async def test_retention_zero_keeps_every_row(make_flows):
    flows = make_flows(download_audit_retention_days=0)
    upload = await steps.finalized(flows)
    await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)
    flows.clock.advance(timedelta(days=3650).total_seconds())

    report = await flows.reconciler.run_pass(sweep=False)

    assert Outcome.DOWNLOAD_AUDIT_PURGED not in report.counts
    assert len(flows.queries.downloads) == 1
