"""The policies file: parsing, defaults, and errors that name the policy and field."""

from __future__ import annotations

import pytest

from broker import cli, config
from broker.domain import policies

BASE = {
    "database_url": "postgresql://u:p@127.0.0.1:5432/db",
    "s3_endpoint": "http://127.0.0.1:9000",
    "s3_access_key": "access",
    "s3_secret_key": "secret-key",
    "jwt_secret": "0123456789abcdef0123456789abcdef",
    "webhook_token": "webhook-token-0123456789",
}


def settings_with(tmp_path, text: str | None) -> config.Settings:
    path = None
    if text is not None:
        path = tmp_path / "policies.toml"
        path.write_text(text)
    return config.Settings(_env_file=None, policies_file=path, **BASE)


def test_without_a_file_the_default_policy_comes_from_the_environment(tmp_path):
    loaded = policies.load_policies(settings_with(tmp_path, None))
    assert list(loaded.by_name) == ["default"]
    assert loaded.get(None).max_size == 5 * 1024**3


def test_a_policies_file_adds_named_policies_and_a_global_quota(tmp_path):
    loaded = policies.load_policies(
        settings_with(
            tmp_path,
            """
            [policies.avatars]
            content_types = ["image/*"]
            max_size = "2 MiB"
            key_prefix = "avatars/"
            multipart = false
            quota = { count = 5 }

            [quota]
            bytes = "1 GiB"
            """,
        )
    )
    avatars = loaded.get("avatars")
    assert avatars.max_size == 2 * 1024**2 and not avatars.multipart
    assert avatars.allows_content_type("image/webp") and not avatars.allows_content_type("text/x")
    assert avatars.quota.count == 5
    assert loaded.global_quota.bytes == 1024**3
    assert loaded.get("default") is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policies.a]\nmax_sise = 10", "policy 'a': max_sise: Extra inputs are not permitted"),
        ('[policies.a]\nmax_size = "lots"', "policy 'a': max_size"),
        ("[policies.a]\nmax_size = 0", "policy 'a': max_size: must be between 1 byte and 5 TiB"),
        ("[policies.a]\nmin_size = 10\nmax_size = 5", "policy 'a': min_size exceeds max_size"),
        ('[policies.a]\ncontent_types = ["images"]', "policy 'a': content_types"),
        ('[policies.a]\nkey_prefix = "../x/"', "policy 'a': key_prefix"),
        ("[policies.a]\nurl_ttl_seconds = 700000", "policy 'a': url_ttl_seconds"),
        ("[policies.a]\nquota = { count = 0 }", "policy 'a': quota.count"),
        ('[policies."Bad Name"]', "policy name 'Bad Name'"),
        ("[quota]\nfiles = 3", "[quota]: files"),
        ("[other]", "unknown top-level keys ['other']"),
        ("not toml [", "BROKER_POLICIES_FILE"),
    ],
)
def test_a_bad_policies_file_is_refused_naming_the_policy_and_field(tmp_path, text, message):
    with pytest.raises(config.ConfigError) as raised:
        policies.load_policies(settings_with(tmp_path, text))
    assert "BROKER_POLICIES_FILE" in str(raised.value)
    assert message in str(raised.value)


def test_serve_stops_at_start_with_the_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, value in BASE.items():
        monkeypatch.setenv(f"BROKER_{name.upper()}", value)
    (tmp_path / "p.toml").write_text("[policies.a]\nmax_size = -1")
    monkeypatch.setenv("BROKER_POLICIES_FILE", str(tmp_path / "p.toml"))
    assert cli.main(["serve", "--port", "1"]) == 2
    assert "policy 'a': max_size" in capsys.readouterr().err
