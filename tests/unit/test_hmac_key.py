"""HmacSha256Key signs exactly as the standard library's HMAC does."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from broker.hmac_key import HmacSha256Key


@given(key=st.binary(max_size=200), message=st.binary(max_size=500))
def test_same_bytes_as_hmac_digest(key: bytes, message: bytes) -> None:
    signer = HmacSha256Key(key)
    expected = hmac.digest(key, message, "sha256")
    assert signer.digest(message) == expected
    assert signer.digest(message) == expected  # the key's state is not consumed
    assert signer.hexdigest(message) == expected.hex()
