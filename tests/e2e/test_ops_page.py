"""The operators' page in a real headless Chromium against the real broker, database and MinIO."""

from __future__ import annotations

import re
import struct
import uuid

import httpx
import pytest
from playwright.sync_api import Dialog, Response, expect

from broker import auth, config
from tests.conftest import create_upload
from tests.e2e import chromium

ARTIFACTS = chromium.ARTIFACTS


@pytest.fixture
def admin_token(settings: config.Settings) -> str:
    return auth.issue_token(settings.jwt_secret, "ops-tester", admin=True)


def test_an_operator_signs_in_and_sees_the_pending_upload(
    broker: str, api: httpx.Client, token_for, admin_token: str, sql
) -> None:
    owner = f"ops-owner-{uuid.uuid4()}"
    # A hostile name: the page must show it as text, never run it.
    filename = f"<img src=x onerror=alert(1)> ops-{uuid.uuid4().hex[:8]}.txt"
    created = create_upload(api, token_for(owner), b"hello operators", filename=filename)
    upload_id = created["id"]
    late = create_upload(api, token_for(owner), b"never sent", filename="never-sent.csv")
    # Time travel: created two hours ago, its deadline passed five minutes ago (stuck).
    sql(
        "UPDATE uploads SET created_at = now() - interval '2 hours 5 minutes', "
        "expires_at = now() - interval '5 minutes' WHERE id = $1",
        late["id"],
    )
    oldest_pending = api.get(
        "/v1/admin/uploads",
        params={"status": "pending", "sort": "created_at", "limit": 100},
        headers={"Authorization": f"Bearer {admin_token}"},
    ).json()["items"]
    # The test's own database holds just these two: the late one was created first.
    assert [item["id"] for item in oldest_pending] == [late["id"], upload_id]

    with chromium.browser() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        dialogs: list[Dialog] = []

        def record(dialog: Dialog) -> None:  # an alert() would mean the page ran user input
            dialogs.append(dialog)
            dialog.dismiss()

        page.on("dialog", record)
        # The CSP allows styles from the broker only: a refused inline style, or a stylesheet
        # that fails to load, shows up in the console.
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        stylesheets: list[tuple[str, int]] = []

        def loaded(response: Response) -> None:
            if response.request.resource_type == "stylesheet":
                stylesheets.append((response.url.split("?")[0], response.status))

        page.on("response", loaded)
        response = page.goto(f"{broker}/ops/login?token={admin_token}")
        assert response is not None and response.status == 200

        # Redirected: the token left the address bar and lives in an HttpOnly cookie.
        assert page.url == f"{broker}/ops"
        expect(page).to_have_title("broker · operations")
        (cookie,) = [c for c in context.cookies() if c["name"] == "broker_ops"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ops"
        assert not cookie["secure"]  # plain http here; https would get Secure

        counts = page.locator("#counts")
        expect(counts).to_be_visible()
        expect(page.get_by_test_id("count-pending")).to_contain_text("pending")
        pending_count = page.get_by_test_id("count-pending").locator(".card-value")
        expect(pending_count).to_have_text("2")

        row = page.locator(f'#pending tr[data-upload-id="{upload_id}"]')
        expect(row).to_be_visible()
        expect(row).to_contain_text(upload_id)
        expect(row).to_contain_text(owner)
        expect(row.locator("td.filename")).to_have_text(filename)
        expect(row.get_by_test_id("age")).to_have_text(re.compile(r"^\d+s$|^\d+m \d+s$"))
        assert row.locator("img").count() == 0
        expect(row).to_have_class("waiting")
        expect(row).not_to_contain_text("stuck")

        # Past its deadline: highlighted, and labelled in words, not by colour alone.
        stuck = page.locator(f'#pending tr[data-upload-id="{late["id"]}"]')
        expect(stuck).to_have_class("stuck")
        expect(stuck.locator(".stuck-label")).to_be_visible()
        expect(stuck.locator(".stuck-label")).to_have_text("stuck")
        expect(stuck.get_by_test_id("age")).to_have_text(re.compile(r"^2h [45]m$"))
        expect(page.get_by_test_id("count-stuck").locator(".card-value")).to_have_text("1")

        # The page lists what the admin API lists: the oldest pending uploads, in order.
        page_ids = page.locator("#pending tbody tr[data-upload-id]").evaluate_all(
            "rows => rows.map(row => row.dataset.uploadId)"
        )
        assert page_ids == [item["id"] for item in oldest_pending]

        chart = page.locator("svg#hourly-chart")
        expect(chart).to_be_visible()
        expect(chart.locator("g.hour")).to_have_count(24)
        expect(chart.locator("rect.bar.created")).to_have_count(24)
        expect(chart.locator("rect.bar.finalized")).to_have_count(24)
        box = chart.bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 150
        expect(page.locator("#reconciler-runs")).to_be_attached()
        # The apps' webhook deliveries: no endpoint here, so an empty backlog and table.
        expect(page.get_by_test_id("webhook-pending").locator(".card-value")).to_have_text("0")
        expect(page.get_by_test_id("webhook-dead").locator(".card-value")).to_have_text("0")
        expect(page.locator("#deliveries")).to_contain_text("No webhook deliveries yet.")

        # Styled by the broker's own stylesheet, and nothing refused by the CSP.
        assert stylesheets == [(f"{broker}/ops/static/ops.css", 200)]
        assert "style-src 'self'" in (response.headers.get("content-security-policy") or "")
        stuck_cell = stuck.locator("td").first
        expect(stuck_cell).to_have_css("background-color", "rgb(253, 236, 234)")
        expect(chart.locator("rect.bar.created").first).to_have_css("fill", "rgb(47, 111, 219)")
        expect(page.locator("header")).to_have_css("background-color", "rgb(23, 33, 43)")
        assert [line for line in console if line.startswith("error")] == []

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "ops-page.png"
        shot.unlink(missing_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        data = shot.read_bytes()
        assert data.startswith(chromium.PNG_SIGNATURE)
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert width == 1280 and height >= 900
        assert dialogs == []


def test_the_page_needs_a_token(api: httpx.Client) -> None:
    response = api.get("/ops")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "broker token --sub NAME --admin" in response.text
    assert "/ops/login?token=" in response.text

    assert api.get("/ops", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    stale = api.get("/ops", headers={"Cookie": "broker_ops=not-a-jwt"})
    assert stale.status_code == 401
    assert "Max-Age=0" in stale.headers["set-cookie"]  # the browser forgets the bad cookie
    assert api.get("/ops/login").status_code == 401
    assert api.get("/ops/login", params={"token": "not-a-jwt"}).status_code == 401


def test_a_normal_users_token_is_forbidden(api: httpx.Client, token_for) -> None:
    headers = token_for(f"user-{uuid.uuid4()}")
    response = api.get("/ops", headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "admin claim" in response.text

    token = headers["Authorization"].removeprefix("Bearer ")
    login = api.get("/ops/login", params={"token": token})
    assert login.status_code == 403
    assert "set-cookie" not in login.headers


def test_an_admin_token_in_the_header_or_the_cookie_opens_the_page(
    api: httpx.Client, admin_token: str
) -> None:
    by_header = api.get("/ops", headers={"Authorization": f"Bearer {admin_token}"})
    assert by_header.status_code == 200
    assert by_header.headers["cache-control"] == "no-store"
    assert '<meta http-equiv="refresh" content="30">' in by_header.text

    login = api.get("/ops/login", params={"token": admin_token})
    assert login.status_code == 303
    assert login.headers["location"] == "/ops"
    assert login.headers["cache-control"] == "no-store"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"broker_ops={admin_token};")
    for attribute in ("HttpOnly", "Path=/ops", "SameSite=strict"):
        assert attribute in cookie
    assert "Secure" not in cookie
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 3500 < max_age <= 3600

    by_cookie = api.get("/ops", headers={"Cookie": f"broker_ops={admin_token}"})
    assert by_cookie.status_code == 200
    assert 'id="pending"' in by_cookie.text
