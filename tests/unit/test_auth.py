"""Bearer tokens (pure)."""

from __future__ import annotations

import jwt
import pytest

from broker import auth

SECRET = "0123456789abcdef0123456789abcdef"


def test_issued_token_verifies_to_its_subject():
    principal = auth.verify_token(SECRET, auth.issue_token(SECRET, "alice"))
    assert principal == auth.Principal(subject="alice", admin=False)
    assert auth.verify_token(SECRET, auth.issue_token(SECRET, "root", admin=True)).admin


@pytest.mark.parametrize(
    "token",
    [
        auth.issue_token("another-secret-0123456789abcdef!", "alice"),
        auth.issue_token(SECRET, "alice", ttl_seconds=-1),
        jwt.encode({"sub": "alice"}, SECRET, "HS256"),
        jwt.encode({"sub": "", "exp": 9999999999}, SECRET, "HS256"),
        jwt.encode({"sub": "alice", "exp": 9999999999}, SECRET * 2, "HS512"),
        jwt.encode({"sub": "alice", "exp": 9999999999}, None, "none"),
        "garbage",
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(auth.InvalidToken):
        auth.verify_token(SECRET, token)
