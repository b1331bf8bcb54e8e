"""Listings, page by page: the owner's newest first, the operators' by any sort order."""

from __future__ import annotations

import pytest

from broker.domain import errors
from broker.domain.model import UploadFilters, UploadStatus
from broker.flows import admin
from tests.unit import steps
from tests.unit.fakes import an_upload
from tests.unit.steps import OWNER, create


async def some_uploads(flows):
    """Uploads of various sizes and owners; some created at the same moment, some the same size."""
    made = []
    for size, owner, policy in [
        (5, OWNER, "default"),
        (3, "bob", "default"),
        (12, OWNER, "docs"),
        (5, OWNER, "default"),
        (3, OWNER, "default"),
        (12, "bob", "docs"),
        (40, OWNER, "default"),
    ]:
        made.append((await create(flows, b"x" * size, owner=owner, policy=policy)).record)
        if len(made) % 2 == 0:
            flows.clock.advance(1)  # pairs share a creation time: ids break the tie
    return made


async def owner_pages(flows, owner, limit, status=None):
    pages, cursor = [], None
    while True:
        page = await flows.uploads.list(owner, status, limit, cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def admin_pages(flows, sort, limit, filters=None):
    pages, cursor = [], None
    while True:
        page = await flows.admin.list(filters or UploadFilters(), sort, limit, cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 100])
async def test_the_owner_listing_pages_through_every_upload_newest_first(flows, limit):
    made = await some_uploads(flows)
    mine = [u for u in made if u.owner == OWNER]

    pages = await owner_pages(flows, OWNER, limit)

    listed = [u for page in pages for u in page]
    assert listed == sorted(mine, key=lambda u: (u.created_at, u.id), reverse=True)
    assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit


async def test_the_owner_listing_filters_by_status(flows):
    await some_uploads(flows)
    finalized = await steps.finalized(flows)

    pages = await owner_pages(flows, OWNER, 2, UploadStatus.FINALIZED)

    assert pages == [[finalized]]


async def test_an_owner_with_no_uploads_gets_one_empty_page(flows):
    await some_uploads(flows)

    page = await flows.uploads.list("carol", None, 10, None)

    assert (page.items, page.next_cursor) == ([], None)


async def test_a_cursor_the_listing_did_not_issue_is_refused(flows):
    with pytest.raises(errors.InvalidCursor) as raised:
        await flows.uploads.list(OWNER, None, 10, "not-a-cursor")

    assert (raised.value.status, raised.value.code) == (400, "ERR_INVALID_CURSOR")


SORTS = {
    "-created_at": (lambda u: (u.created_at, u.id), True),
    "created_at": (lambda u: (u.created_at, u.id), False),
    "-size": (lambda u: (u.size, u.id), True),
    "size": (lambda u: (u.size, u.id), False),
}


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize("limit", [1, 2, 3, 100])
async def test_the_admin_listing_pages_through_every_upload_in_each_sort(flows, sort, limit):
    made = await some_uploads(flows)
    key, descending = SORTS[sort]

    pages = await admin_pages(flows, sort, limit)

    listed = [u for page in pages for u in page]
    assert listed == sorted(made, key=key, reverse=descending)
    assert all(len(page) == limit for page in pages[:-1])


async def test_the_admin_listing_filters_and_pages_together(flows):
    made = await some_uploads(flows)
    filters = UploadFilters(owner=OWNER, policy="default")

    pages = await admin_pages(flows, "size", 2, filters)

    expected = [u for u in made if u.owner == OWNER and u.policy == "default"]
    assert [u for page in pages for u in page] == sorted(expected, key=lambda u: (u.size, u.id))


async def test_the_admin_listing_finds_uploads_pending_too_long(flows):
    old = await create(flows)
    flows.clock.advance(600)
    await create(flows)

    pages = await admin_pages(
        flows, "-created_at", 10, UploadFilters(pending_longer_than_seconds=300)
    )

    assert pages == [[old.record]]


async def test_an_admin_cursor_of_another_sort_order_is_refused(flows):
    await some_uploads(flows)
    page = await flows.admin.list(UploadFilters(), "size", 2, None)
    assert page.next_cursor is not None

    with pytest.raises(errors.InvalidCursor):
        await flows.admin.list(UploadFilters(), "-size", 2, page.next_cursor)
    with pytest.raises(errors.InvalidCursor):
        await flows.uploads.list(OWNER, None, 2, page.next_cursor)


@pytest.mark.parametrize("sort", ["-size", "size"])
async def test_the_admin_listing_by_size_reaches_uploads_of_undeclared_size(flows, sort):
    made = await some_uploads(flows)
    for _ in range(2):
        created = await flows.uploads.create(OWNER, steps.a_file(size=None, method="POST"))
        made.append(created.record)

    pages = await admin_pages(flows, sort, 2)

    assert sorted(u.id for page in pages for u in page) == sorted(u.id for u in made)


def test_admin_cursors_round_trip_for_each_sort():
    upload = an_upload(size=1234)
    for sort in admin.SORT_FIELDS:
        value, upload_id = admin.decode_cursor(sort, admin.encode_cursor(sort, upload))
        assert upload_id == upload.id
        assert value == getattr(upload, admin.SORT_FIELDS[sort])


# ---------------------------------------------------------------- finding uploads


async def test_the_owner_listing_finds_uploads_by_one_or_several_metadata_keys(flows):
    post_42 = await create(flows, metadata={"post_id": "42", "tenant": "acme"})
    flows.clock.advance(1)
    other_post = await create(flows, metadata={"post_id": "7", "tenant": "acme"})
    flows.clock.advance(1)
    post_42_again = await create(flows, metadata={"post_id": "42"})
    await create(flows, owner="bob", metadata={"post_id": "42", "tenant": "acme"})

    async def found(metadata):
        page = await flows.uploads.list(OWNER, None, 20, None, metadata)
        return [u.id for u in page.items]

    assert await found({"post_id": "42"}) == [post_42_again.record.id, post_42.record.id]
    assert await found({"post_id": "42", "tenant": "acme"}) == [post_42.record.id]
    assert await found({"tenant": "acme"}) == [other_post.record.id, post_42.record.id]
    assert await found({"post_id": "4"}) == []  # exact values, not prefixes
    assert await found({"post_id": "42", "tenant": "other"}) == []
    assert len(await found({})) == 3  # no filter: all of the owner's


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_the_metadata_filter_pages_with_the_same_filter(flows, limit):
    matching = []
    for index in range(5):
        matching.append((await create(flows, metadata={"post_id": "42"})).record)
        await create(flows, metadata={"post_id": str(index)})
        flows.clock.advance(1)
    pages, cursor = [], None
    while True:
        page = await flows.uploads.list(OWNER, None, limit, cursor, {"post_id": "42"})
        pages.append(page.items)
        if (cursor := page.next_cursor) is None:
            break

    assert [u.id for page in pages for u in page] == [u.id for u in reversed(matching)]
    assert all(len(page) <= limit for page in pages)


async def test_the_admin_search_finds_part_of_a_filename_in_any_case(flows):
    holiday = (await create(flows, filename="Holiday Photo.JPG")).record
    flows.clock.advance(1)
    percent = (await create(flows, filename="100% done.txt")).record
    flows.clock.advance(1)
    under = (await create(flows, filename="abc_def.txt", owner="bob")).record
    flows.clock.advance(1)
    plain = (await create(flows, filename="abcxdef.txt")).record

    async def found(text, sort="-created_at", **filters):
        pages = await admin_pages(flows, sort, 2, UploadFilters(search=text, **filters))
        return [u.id for page in pages for u in page]

    assert await found("holi") == [holiday.id]
    assert await found("PHOTO.jpg") == [holiday.id]
    assert await found("100%") == [percent.id]  # the text's own wildcards are plain characters
    assert await found("abc_def") == [under.id]
    assert await found("abc") == [plain.id, under.id]
    assert await found("nothing") == []
    assert await found(".txt", owner="bob") == [under.id]
    assert await found(".TXT", sort="created_at") == [percent.id, under.id, plain.id]


@pytest.mark.parametrize("text", ["ph", "%", "a_b", "__%", "x" * 256])
async def test_a_search_the_index_cannot_serve_is_refused(flows, text):
    with pytest.raises(errors.InvalidRequest):
        await flows.admin.list(UploadFilters(search=text), "-created_at", 10, None)
