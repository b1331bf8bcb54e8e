"""Trusted issuers from BROKER_ISSUERS_FILE or BROKER_ISSUERS: what a start refuses."""

from __future__ import annotations

import json

import pytest

from broker import config
from broker.issuers import claim_value, load_issuers
from tests.unit.wired import SETTINGS

GOOD = {"issuer": "https://id.example.test/", "audience": "https://uploads.example.test"}


def settings(**values: object) -> config.Settings:
    return config.Settings(_env_file=None, **{**SETTINGS, **values})  # type: ignore[arg-type]


def from_json(**issuers: object) -> config.Settings:
    return settings(issuers=json.dumps({"issuers": issuers}))


def test_a_toml_file_and_json_give_the_same_issuers(tmp_path):
    path = tmp_path / "issuers.toml"
    path.write_text(
        '[issuers.auth0]\nissuer = "https://id.example.test/"\n'
        'audience = ["https://uploads.example.test", "other"]\nalgorithms = ["RS256", "ES256"]\n'
    )
    [from_file] = load_issuers(settings(issuers_file=path))
    [from_env] = load_issuers(
        from_json(
            auth0={**GOOD, "audience": [*from_file.audience], "algorithms": ["RS256", "ES256"]}
        )
    )
    assert from_file == from_env
    assert from_file.owner_of("auth0|42") == "auth0:auth0|42"
    assert from_file.discovery_url == "https://id.example.test/.well-known/openid-configuration"
    assert load_issuers(settings()) == ()


@pytest.mark.parametrize(
    ("issuers", "message"),
    [
        ({"acme": {**GOOD, "algorithms": ["HS256"]}}, "never accepted"),
        ({"acme": {**GOOD, "algorithms": ["none"]}}, "never accepted"),
        ({"acme": {**GOOD, "issuer": "http://id.example.test"}}, "https"),
        ({"acme": {**GOOD, "jwks_url": "ftp://id.example.test/keys"}}, "https"),
        ({"local": GOOD}, "local"),
        ({"Acme Corp": GOOD}, "lower-case"),
        ({"acme": {"issuer": GOOD["issuer"]}}, "audience"),
        ({"acme": {**GOOD, "colour": "red"}}, "colour"),
        ({"a": GOOD, "b": GOOD}, "same `issuer`"),
    ],
)
def test_a_bad_issuer_stops_the_start_naming_the_variable(issuers, message):
    with pytest.raises(config.ConfigError, match="BROKER_ISSUERS") as refused:
        load_issuers(from_json(**issuers))
    assert message in str(refused.value)


def test_http_only_on_loopback_or_when_allowed():
    assert load_issuers(from_json(acme={**GOOD, "issuer": "http://127.0.0.1:8080"}))
    allowed = {**GOOD, "issuer": "http://keycloak:8080/realms/app", "allow_http": True}
    assert load_issuers(from_json(acme=allowed))


def test_file_and_environment_together_or_bad_documents_are_refused(tmp_path):
    path = tmp_path / "issuers.toml"
    path.write_text("")
    with pytest.raises(config.ConfigError, match="both set"):
        load_issuers(settings(issuers_file=path, issuers="{}"))
    with pytest.raises(config.ConfigError, match="not JSON"):
        load_issuers(settings(issuers="{nope"))
    with pytest.raises(config.ConfigError, match="BROKER_ISSUERS_FILE"):
        load_issuers(settings(issuers_file=tmp_path / "missing.toml"))


def test_claims_by_exact_name_then_by_dotted_path():
    claims = {"https://example.com/roles": ["a"], "realm_access": {"roles": ["b"]}}
    assert claim_value(claims, "https://example.com/roles") == ["a"]
    assert claim_value(claims, "realm_access.roles") == ["b"]
    assert claim_value(claims, "realm_access.groups") is None
