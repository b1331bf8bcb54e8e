"""The operators' page rendering: escaping, stuck rows, ages, the hourly chart. Pure."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from broker.domain.downloads import DownloadRecord
from broker.domain.model import (
    DeliveryStatus,
    HourlyCount,
    PendingSummary,
    ReconcilerRun,
    ScanBacklog,
    StatusPolicyCount,
    Upload,
    UploadStatus,
    WebhookEventType,
)
from broker.domain.webhooks import WebhookBacklog, WebhookDelivery, WebhookEndpoint
from broker.flows.admin import Stats
from broker.flows.app_webhooks import DeliveriesOverview, RecentDelivery
from broker.ops import page as ops_page
from tests.unit.fakes import an_upload

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"


def upload(**fields: Any) -> Upload:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner": "alice",
        "policy": "default",
        "filename": "report.pdf",
        "size": 1536,
        "status": "pending",
        "created_at": NOW - timedelta(minutes=3, seconds=20),
        "expires_at": NOW + timedelta(minutes=10),
    }
    values = {**row, **fields}
    return an_upload(**values | {"status": UploadStatus(values["status"])})


def stats(**fields: Any) -> Stats:
    base: dict[str, Any] = {
        "by_status_and_policy": [
            {"status": "pending", "policy": "default", "uploads": 2, "bytes": 3072},
            {"status": "pending", "policy": "avatars", "uploads": 1, "bytes": 1024},
            {"status": "finalized", "policy": "default", "uploads": 5, "bytes": 5 * 1024**2},
        ],
        "pending": 3,
        "stuck": 1,
        "oldest_pending_age_seconds": 7500.0,
        "hourly": [
            {
                "hour": NOW.replace(minute=0) - timedelta(hours=23 - i),
                "created": i % 4,
                "finalized": i % 3,
            }
            for i in range(24)
        ],
        "reconciler_runs": [
            {
                "started_at": NOW - timedelta(minutes=5),
                "finished_at": NOW - timedelta(minutes=5) + timedelta(milliseconds=120),
                "dry_run": False,
                "trigger": "schedule",
                "counts": {"expired": 1, "finalized": 2},
            }
        ],
    }
    values = {**base, **fields}
    return Stats(
        by_status_and_policy=[
            StatusPolicyCount(UploadStatus(c["status"]), c["policy"], c["uploads"], c["bytes"])
            for c in values["by_status_and_policy"]
        ],
        pending=PendingSummary(values["pending"], values["stuck"], None),
        oldest_pending_age_seconds=values["oldest_pending_age_seconds"],
        hourly=[HourlyCount(**h) for h in values["hourly"]],
        reconciler_runs=[ReconcilerRun(**r) for r in values["reconciler_runs"]],
        scans=ScanBacklog(values.get("scan_jobs", 0), values.get("scan_retried", 0), None),
    )


class Collector(HTMLParser):
    """Tags and attributes as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(page: str) -> list[tuple[str, dict[str, str | None]]]:
    collector = Collector()
    collector.feed(page)
    return collector.tags


def test_a_hostile_filename_and_owner_are_escaped_everywhere() -> None:
    row = upload(filename=HOSTILE, owner='"><img src=x onerror=alert(1)>', policy="<b>p</b>")
    page = ops_page.render_ops_page(
        stats(
            by_status_and_policy=[
                {"status": "pending", "policy": HOSTILE, "uploads": 1, "bytes": 1}
            ],
            reconciler_runs=[
                {
                    "started_at": NOW,
                    "finished_at": NOW,
                    "dry_run": True,
                    "trigger": HOSTILE,
                    "counts": {HOSTILE: 1},
                }
            ],
        ),
        [row],
        NOW,
    )
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    tags = [tag for tag, _ in parse(page)]
    assert "script" not in tags and "img" not in tags and "b" not in tags
    assert all("onerror" not in attrs for _, attrs in parse(page))


def test_a_pending_upload_past_its_deadline_is_highlighted_and_labelled_stuck() -> None:
    stuck = upload(expires_at=NOW - timedelta(seconds=1), filename="late.bin")
    exactly_due = upload(expires_at=NOW, filename="due.bin")
    waiting = upload(expires_at=NOW + timedelta(seconds=1), filename="fine.bin")
    page = ops_page.render_ops_page(stats(), [stuck, exactly_due, waiting], NOW)

    rows = {
        attrs["data-upload-id"]: attrs
        for tag, attrs in parse(page)
        if tag == "tr" and attrs.get("data-upload-id")
    }
    assert rows[str(stuck.id)]["class"] == "stuck"
    assert rows[str(exactly_due.id)]["class"] == "stuck"
    assert rows[str(waiting.id)]["class"] == "waiting"
    # Not colour alone: the stuck rows carry a visible label, the waiting row none.
    for row, expected in ((stuck, 1), (exactly_due, 1), (waiting, 0)):
        html_row = re.search(rf'<tr [^>]*data-upload-id="{row.id}".*?</tr>', page, re.S)
        assert html_row is not None
        assert html_row.group(0).count(">stuck</span>") == expected
    assert "2 are past their deadline, marked stuck." in page


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "0s"),
        (0, "0s"),
        (45, "45s"),
        (200, "3m 20s"),
        (3600, "1h 0m"),
        (7500, "2h 5m"),
        (86400 + 4 * 3600 + 59, "1d 4h"),
    ],
)
def test_ages_read_as_their_two_largest_units(seconds: float, expected: str) -> None:
    assert ops_page.format_age(seconds) == expected


def test_the_pending_table_shows_each_upload_with_its_age() -> None:
    row = upload(created_at=NOW - timedelta(hours=2, minutes=5, seconds=9), size=3 * 1024**2)
    page = ops_page.render_ops_page(stats(), [row], NOW)
    html_row = re.search(rf'<tr [^>]*data-upload-id="{row.id}".*?</tr>', page, re.S)
    assert html_row is not None
    assert '<td class="num" data-testid="age">2h 5m</td>' in html_row.group(0)
    assert "3.0 MiB" in html_row.group(0)
    assert "report.pdf" in html_row.group(0) and "alice" in html_row.group(0)
    assert "in 10m 0s" in html_row.group(0)  # the deadline, relative to now


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (64 * 1024**2, "64.0 MiB")],
)
def test_bytes_read_in_binary_units(size: int, expected: str) -> None:
    assert ops_page.format_bytes(size) == expected


def test_counts_are_summed_over_policies_per_status() -> None:
    page = ops_page.render_ops_page(stats(), [], NOW)
    pending_card = re.search(r'data-testid="count-pending">(.*?)</div>\s*</div>', page, re.S)
    assert pending_card is not None
    assert '<div class="card-value">3</div>' in pending_card.group(0)
    assert "4.0 KiB" in pending_card.group(0)
    # Statuses without uploads still get a card, at zero.
    assert re.search(r'data-testid="count-deleted">.*?card-value">0<', page, re.S)
    assert re.search(r'data-testid="count-stuck">.*?card-value">1<', page, re.S)
    assert 'data-testid="oldest-pending"' in page and "2h 5m" in page
    assert "Nothing is pending." in page


def test_uploads_waiting_for_a_scanner_that_does_not_answer_are_flagged() -> None:
    calm = ops_page.render_ops_page(stats(scan_jobs=2), [], NOW)
    assert re.search(r'class="card" data-testid="scan-jobs">.*?card-value">2<', calm, re.S)
    stuck = ops_page.render_ops_page(stats(scan_jobs=2, scan_retried=1), [], NOW)
    assert re.search(r'class="card alert" data-testid="scan-jobs">.*?1 retried', stuck, re.S)
    # Every state has its card, the scanning ones too.
    assert 'data-testid="count-scanning"' in calm and 'data-testid="count-quarantined"' in calm


def test_the_chart_has_24_hour_groups_with_two_labelled_series() -> None:
    page = ops_page.render_ops_page(stats(), [], NOW)
    svg = re.search(r'<svg id="hourly-chart".*?</svg>', page, re.S)
    assert svg is not None
    tags = parse(svg.group(0))
    groups = [attrs for tag, attrs in tags if tag == "g" and attrs.get("class") == "hour"]
    assert len(groups) == 24
    assert all(attrs["aria-label"] for attrs in groups)
    bars = [
        attrs["class"] for tag, attrs in tags if tag == "rect" and "bar" in (attrs["class"] or "")
    ]
    assert bars.count("bar created") == 24 and bars.count("bar finalized") == 24
    # Every bar explains itself; the legend names both series.
    assert svg.group(0).count("<title") == 1 + 24 * 3
    assert "2025-03-14 12:00 UTC: 3 created" in svg.group(0)
    assert "2025-03-13 13:00 UTC: 0 created" in svg.group(0)
    assert 'class="swatch created"' in page and 'class="swatch finalized"' in page


def test_an_idle_day_still_draws_a_chart() -> None:
    idle = [
        {"hour": NOW - timedelta(hours=23 - i), "created": 0, "finalized": 0} for i in range(24)
    ]
    page = ops_page.render_ops_page(stats(hourly=idle, reconciler_runs=[]), [], NOW)
    assert page.count('class="hour"') == 24
    assert "The reconciler has not run yet." in page


def test_the_page_is_self_contained_and_refreshes_itself() -> None:
    to = endpoint()
    page = ops_page.render_ops_page(
        stats(), [upload()], NOW, deliveries=overview(RecentDelivery(delivery(to, 1), to))
    )
    assert page.startswith("<!doctype html>")
    assert '<meta http-equiv="refresh" content="30">' in page
    tags = parse(page)
    assert not [tag for tag, _ in tags if tag in ("script", "img", "iframe")]
    # Its one outside resource: its own stylesheet, versioned by content.
    links = [attrs for tag, attrs in tags if tag == "link"]
    version = ops_page.stylesheet().version
    assert links == [{"rel": "stylesheet", "href": f"/ops/static/ops.css?v={version}"}]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    ids = [attrs["id"] for _, attrs in tags if attrs.get("id")]
    assert len(ids) == len(set(ids))
    assert {"counts", "pending", "hourly-chart", "reconciler-runs", "deliveries"} <= set(ids)
    assert "expired 1 · finalized 2" in page and "0.12 s" in page


def test_a_cut_pending_list_says_how_many_more_there_are() -> None:
    page = ops_page.render_ops_page(stats(pending=150), [upload(), upload()], NOW)
    assert "The oldest 2 of 150 pending uploads, oldest first." in page
    assert "No pending uploads." in ops_page.render_ops_page(stats(pending=0), [], NOW)


def test_the_stylesheet_is_linked_where_the_page_is_served() -> None:
    page = ops_page.render_ops_page(stats(), [], NOW, ops_path="/broker/ops")
    (href,) = [attrs["href"] for tag, attrs in parse(page) if tag == "link"]
    assert href is not None and href.startswith("/broker/ops/static/ops.css?v=")


def test_no_page_has_inline_styles() -> None:
    """The CSP says style-src 'self': an inline style would be dropped by the browser."""
    pages = [
        ops_page.render_ops_page(stats(), [upload(), upload(expires_at=NOW)], NOW),
        ops_page.render_ops_page(
            stats(), [], NOW, deliveries=overview(RecentDelivery(delivery(endpoint(), 1), None))
        ),
        ops_page.render_sign_in_page("No admin token was sent."),
        ops_page.render_admin_required_page("alice"),
    ]
    for page in pages:
        tags = parse(page)
        assert "style" not in [tag for tag, _ in tags]
        assert not [attrs for _, attrs in tags if "style" in attrs]
        assert not re.search(r"<style|\sstyle\s*=", page, re.I)


def test_the_message_pages_escape_what_they_are_given() -> None:
    forbidden = ops_page.render_admin_required_page(HOSTILE)
    assert HOSTILE not in forbidden and "&lt;script&gt;" in forbidden
    assert 'data-status="403"' in forbidden
    assert "<title>Admin token required · broker operations</title>" in forbidden
    refused = ops_page.render_sign_in_page(HOSTILE, ops_path="/broker/ops")
    assert HOSTILE not in refused and "&lt;script&gt;" in refused
    assert 'data-status="401"' in refused
    assert "/broker/ops/login?token=&lt;token&gt;" in refused
    assert "script" not in [tag for tag, _ in parse(refused) + parse(forbidden)]


def test_the_search_box_sends_a_get_form_to_the_page_and_shows_what_it_found() -> None:
    found = upload(filename="Holiday Photo.JPG", status="finalized")
    page = ops_page.render_ops_page(
        stats(), [], NOW, search=ops_page.Search("holi", [found], more=False)
    )
    tags = parse(page)
    forms = [attrs for tag, attrs in tags if tag == "form"]
    assert forms == [{"class": "search", "method": "get", "action": "/ops", "role": "search"}]
    box = next(attrs for tag, attrs in tags if tag == "input")
    assert (box["name"], box["value"]) == ("q", "holi")
    results = page.split('id="search-results"', 1)[1].split("</table>", 1)[0]
    assert str(found.id) in results and "Holiday Photo.JPG" in results
    assert "1 upload whose filename contains “holi”" in page


def test_without_a_search_the_box_is_empty_and_no_results_are_shown() -> None:
    page = ops_page.render_ops_page(stats(), [upload()], NOW)
    box = next(attrs for tag, attrs in parse(page) if tag == "input")
    assert box["value"] == ""
    assert "search-results" not in page and "search-summary" not in page


def test_a_hostile_search_text_is_escaped_in_the_box_and_the_summary() -> None:
    text = '"><script>alert(1)</script>'
    page = ops_page.render_ops_page(stats(), [], NOW, search=ops_page.Search(text, [], False))
    assert "<script>" not in page
    box = next(attrs for tag, attrs in parse(page) if tag == "input")
    assert box["value"] == text  # the attribute holds the text, and only it
    assert "No upload's filename contains “&#34;&gt;&lt;script&gt;" in page


# ---------------------------------------------------------------- webhook deliveries


def endpoint(**fields: Any) -> WebhookEndpoint:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "url": "https://app.example/hooks",
        "description": "the app",
        "event_types": (),
        "policy": None,
        "previous_secret_expires_at": None,
        "disabled_at": None,
        "disabled_reason": None,
        "throttled_until": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return WebhookEndpoint(**values | fields)


def delivery(to: WebhookEndpoint, number: int, **fields: Any) -> WebhookDelivery:
    values: dict[str, Any] = {
        "id": number,
        "endpoint_id": to.id,
        "message_id": f"msg_{number}",
        "upload_id": uuid.uuid4(),
        "seq": number,
        "type": WebhookEventType.UPLOAD_CREATED,
        "payload": {},
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": NOW,
        "last_status": None,
        "last_error": None,
        "created_at": NOW - timedelta(minutes=4, seconds=5),
        "delivered_at": None,
    }
    return WebhookDelivery(**values | fields)


def overview(*recent: RecentDelivery, pending: int = 0, dead: int = 0) -> DeliveriesOverview:
    oldest = NOW - timedelta(hours=1, minutes=2) if pending else None
    return DeliveriesOverview(WebhookBacklog(pending, oldest), dead, list(recent))


def test_the_deliveries_panel_shows_the_backlog_the_dead_and_the_newest_deliveries() -> None:
    to = endpoint()
    dead = delivery(to, 7, status=DeliveryStatus.DEAD, attempts=10, last_status=500,
                    last_error="HTTP 500 from the app")  # fmt: skip
    sent = delivery(to, 6, status=DeliveryStatus.DELIVERED, attempts=1, last_status=204,
                    type=WebhookEventType.UPLOAD_FINALIZED)  # fmt: skip
    page = ops_page.render_ops_page(
        stats(), [], NOW,
        deliveries=overview(RecentDelivery(dead, to), RecentDelivery(sent, to), pending=3, dead=1),
    )  # fmt: skip
    assert re.search(r'data-testid="webhook-pending">.*?card-value">3<', page, re.S)
    assert re.search(r'data-testid="webhook-oldest">.*?card-value">1h 2m<', page, re.S)
    assert re.search(r'class="card alert" data-testid="webhook-dead">.*?card-value">1<', page, re.S)
    rows = re.findall(r'<tr class="delivery-(\w+)" data-delivery-id="(\d+)">(.*?)</tr>', page, re.S)
    assert [(status, number) for status, number, _ in rows] == [("dead", "7"), ("delivered", "6")]
    dead_row = rows[0][2]
    for text in ("https://app.example/hooks", "the app", "upload.created", ">10<", "HTTP 500",
                 "HTTP 500 from the app", "4m 5s"):  # fmt: skip
        assert text in dead_row
    assert "upload.finalized" in rows[1][2] and "HTTP 204" in rows[1][2]
    assert 'id="deliveries"' in page


def test_the_deliveries_panel_without_deliveries_says_so() -> None:
    page = ops_page.render_ops_page(stats(), [], NOW, deliveries=overview())
    assert "No webhook deliveries yet." in page
    assert re.search(r'data-testid="webhook-oldest">.*?card-value">—<', page, re.S)
    assert 'class="card" data-testid="webhook-dead"' in page  # no alert at zero
    # Without an overview (an older caller), no panel at all.
    assert 'id="deliveries"' not in ops_page.render_ops_page(stats(), [], NOW)


def test_a_hostile_endpoint_url_description_and_error_are_escaped_in_the_panel() -> None:
    to = endpoint(
        url=f"https://evil.example/{HOSTILE}", description='"><img src=x onerror=alert(1)>'
    )
    hostile = delivery(to, 1, status=DeliveryStatus.DEAD, last_error=HOSTILE, attempts=10)
    gone = delivery(endpoint(), 2)
    page = ops_page.render_ops_page(
        stats(), [], NOW,
        deliveries=overview(RecentDelivery(hostile, to), RecentDelivery(gone, None), dead=1),
    )  # fmt: skip
    assert HOSTILE not in page and "<img" not in page
    assert "https://evil.example/&lt;script&gt;alert(1)&lt;/script&gt;" in page
    tags = parse(page)
    assert not [tag for tag, _ in tags if tag in ("script", "img")]
    assert all("onerror" not in attrs for _, attrs in tags)
    assert not [attrs for _, attrs in tags if "style" in attrs]
    assert "(endpoint removed)" in page


def a_download(**fields: Any) -> DownloadRecord:
    values: dict[str, Any] = {
        "id": 1,
        "upload_id": uuid.UUID(int=7),
        "requester": "alice",
        "issued_at": NOW - timedelta(minutes=5),
        "expires_in_seconds": 300,
        "request_id": "req-1",
        "client_address": "192.0.2.7",
    }
    return DownloadRecord(**(values | fields))


def test_the_latest_downloads_show_who_was_given_which_file_escaped() -> None:
    hostile = a_download(requester=HOSTILE, client_address="<b>x</b>", request_id=None)
    page = ops_page.render_ops_page(stats(), [], NOW, downloads=[a_download(), hostile])

    assert "Latest downloads" in page and str(uuid.UUID(int=7)) in page
    assert "192.0.2.7" in page and "5m 0s ago" in page
    assert HOSTILE not in page and "<b>x</b>" not in page
    assert "b" not in [tag for tag, _ in parse(page)]
    empty = ops_page.render_ops_page(stats(), [], NOW, downloads=[])
    assert "No download URL has been issued" in empty
    assert "Latest downloads" not in ops_page.render_ops_page(stats(), [], NOW)
