"""A browser uploads with its user's own identity-provider token (RS256, checked against the
provider's JWKS): no secret of the broker's anywhere near the page or the app."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker import config
from tests.e2e import chromium
from tests.e2e.test_browser_uploads import (  # noqa: F401 (origins is a fixture)
    Origins,
    helper_url,
    open_page,
    origins,
    page_result,
)
from tests.identity import ProviderServer, provider_server


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderServer]:
    with provider_server() as server:
        yield server


@pytest.fixture
def settings(settings: config.Settings, provider: ProviderServer) -> Any:
    issuers = {
        "issuers": {
            "acme": {"issuer": provider.provider.issuer, "audience": provider.provider.audience}
        }
    }
    return settings.model_copy(update={"issuers": json.dumps(issuers)})


def test_the_browser_uploads_with_the_users_identity_provider_token(
    origins: Origins,  # noqa: F811 (the fixture imported above)
    broker: str,
    provider: ProviderServer,
    sql: Callable[..., list[Any]],
) -> None:
    size = 256 * 1024
    token = provider.provider.token("alice")  # what the provider's SDK gives the page
    with (
        chromium.browser() as browser,
        open_page(browser, helper_url(origins.allowed, broker, token, size, "put")) as opened,
    ):
        result = page_result(opened, timeout_ms=30_000)
        assert result.get("error") is None, (result.get("error"), opened.console)

    assert result["statuses"][-1] == {"status": "finalized", "via": "events"}
    assert result["hashesEqual"] is True
    rows = sql("SELECT id, owner, status FROM uploads")
    assert [tuple(row) for row in rows] == [
        (uuid.UUID(result["record"]["id"]), "acme:alice", "finalized")
    ]
