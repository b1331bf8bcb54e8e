"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import config
from broker.domain import policies

GOOD = {
    "BROKER_DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
    "BROKER_S3_ENDPOINT": "http://127.0.0.1:9000",
    "BROKER_S3_ACCESS_KEY": "access",
    "BROKER_S3_SECRET_KEY": "secret-key",
    "BROKER_JWT_SECRET": "0123456789abcdef0123456789abcdef",
    "BROKER_WEBHOOK_TOKEN": "webhook-token-0123456789",
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(__import__("os").environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_settings_defaults(env):
    settings = config.load_settings()
    assert settings.allowed_content_types == ("*/*",)
    assert settings.max_upload_bytes == 5 * 1024**3
    assert settings.public_endpoint == "http://127.0.0.1:9000"
    assert policies.default_policy(settings).allows_content_type("video/mp4")


def test_settings_from_a_copy_of_env_example_are_the_defaults(env, tmp_path):
    # `cp .env.example .env` (its empty lines included) must configure what no .env does.
    example = Path(__file__).parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    from_example = config.load_settings()
    (tmp_path / ".env").unlink()
    assert from_example == config.load_settings()
    assert from_example.policies_file is None


def test_settings_content_type_patterns(env):
    env.setenv("BROKER_ALLOWED_CONTENT_TYPES", "image/*, Application/PDF")
    settings = config.load_settings()
    assert settings.allowed_content_types == ("image/*", "application/pdf")
    assert policies.default_policy(settings).allows_content_type("image/png")
    assert policies.default_policy(settings).allows_content_type("application/pdf")
    assert not policies.default_policy(settings).allows_content_type("text/plain")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BROKER_DATABASE_URL", None, "BROKER_DATABASE_URL is required"),
        ("BROKER_DATABASE_URL", "mysql://x", "BROKER_DATABASE_URL must be a postgresql:// URL"),
        ("BROKER_S3_ENDPOINT", "127.0.0.1:9000", "BROKER_S3_ENDPOINT must be an http(s) URL"),
        ("BROKER_JWT_SECRET", "short", "BROKER_JWT_SECRET"),
        ("BROKER_JWT_SECRET", "a" * 40, "BROKER_JWT_SECRET is a placeholder"),
        ("BROKER_WEBHOOK_TOKEN", "with space 0123456789", "BROKER_WEBHOOK_TOKEN must not contain"),
        ("BROKER_MAX_UPLOAD_BYTES", "lots", "BROKER_MAX_UPLOAD_BYTES"),
        ("BROKER_ALLOWED_CONTENT_TYPES", "images", "BROKER_ALLOWED_CONTENT_TYPES 'images'"),
        ("BROKER_UPLOAD_URL_TTL_SECONDS", "604801", "BROKER_UPLOAD_URL_TTL_SECONDS"),
        ("BROKER_S3_NOTIFY_ARNS", "arn:aws:sqs:x", "BROKER_S3_NOTIFY_ARNS"),
        ("BROKER_DOWNLOAD_AUDIT_RETENTION_DAYS", "-1", "BROKER_DOWNLOAD_AUDIT_RETENTION_DAYS"),
        ("BROKER_DOWNLOAD_AUDIT_RETENTION_DAYS", "90d", "BROKER_DOWNLOAD_AUDIT_RETENTION_DAYS"),
    ],
)
def test_invalid_setting_is_named(env, name, value, message):
    if value is None:
        env.delenv(name)
    else:
        env.setenv(name, value)
    with pytest.raises(config.ConfigError) as raised:
        config.load_settings()
    assert message in str(raised.value)
    assert GOOD["BROKER_S3_SECRET_KEY"] not in str(raised.value)
