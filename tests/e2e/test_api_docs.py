"""/docs in a real headless Chromium, with every request off the broker's origin refused:
Swagger UI must come from the broker itself and render the operations offline."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Route, expect

from tests.e2e import chromium


def test_api_docs_render_the_operations_offline(broker: str) -> None:
    own_origin = urlsplit(broker).netloc
    refused: list[str] = []

    def offline(route: Route) -> None:
        # A machine without internet access: anything not served by the broker fails.
        if urlsplit(route.request.url).netloc == own_origin:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with chromium.browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", offline)
        page.goto(f"{broker}/docs")
        # Swagger UI renders one block per operation once it has loaded /openapi.json.
        create = page.locator(".opblock-post").filter(has_text="/v1/uploads").first
        expect(create).to_be_visible(timeout=15_000)
        assert page.locator(".opblock").count() > 20
        expect(page.locator(".info .title")).to_contain_text("broker")
        page.screenshot(path=str(chromium.ARTIFACTS / "api-docs.png"), full_page=False)

    assert refused == [], f"/docs asked for assets off the broker: {refused}"
