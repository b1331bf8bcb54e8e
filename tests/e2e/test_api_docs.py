"""/docs in a real headless Chromium, with every request off the broker's origin refused:
Swagger UI must come from the broker itself and render the operations offline."""

from __future__ import annotations

from tests.e2e import chromium


def test_api_docs_render_the_operations_offline(broker: str) -> None:
    assert chromium.api_docs_offline(broker, "api-docs.png") > 20
