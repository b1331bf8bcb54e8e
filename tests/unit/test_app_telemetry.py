"""FastAPI's own OpenTelemetry is on only when the process uses OpenTelemetry."""

from __future__ import annotations

import os

import pytest

from broker.app import fastapi_telemetry


def test_off_when_nothing_sets_up_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("OTEL_", "FASTAPI_OTEL_"))]:
        monkeypatch.delenv(name)
    assert fastapi_telemetry() == {"tracing": False, "metrics": False, "logs": False}


@pytest.mark.parametrize("variable", ["OTEL_SERVICE_NAME", "FASTAPI_OTEL_AUTO_CONFIGURE"])
def test_left_to_fastapi_when_opentelemetry_is_configured(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "broker")
    assert fastapi_telemetry() == {}
