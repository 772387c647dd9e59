from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from kitehooks.kite.checksum import checksums_match, postback_checksum, session_checksum

# Kite's documented postback example.
KITE_ORDER_ID = "220303000308932"
KITE_ORDER_TIMESTAMP = "2022-03-03 09:24:25"
KITE_DOC_SECRET = "0hdv7iw5examplesecret"
KITE_DOC_CHECKSUM = "2011845d9348bd6795151bf4258102a03431e3bb12a79c0df73fcb4b7fde4b5d"


def test_postback_checksum_matches_kites_documented_vector() -> None:
    assert postback_checksum(KITE_ORDER_ID, KITE_ORDER_TIMESTAMP, KITE_DOC_SECRET) == KITE_DOC_CHECKSUM


def test_postback_checksum_is_over_the_strings_exactly_as_received() -> None:
    # A timestamp reformatted by a parser (ISO "T", trimmed seconds) must not verify.
    assert postback_checksum(KITE_ORDER_ID, "2022-03-03T09:24:25", KITE_DOC_SECRET) != KITE_DOC_CHECKSUM
    assert postback_checksum(KITE_ORDER_ID, KITE_ORDER_TIMESTAMP + " ", KITE_DOC_SECRET) != KITE_DOC_CHECKSUM


def test_session_checksum_is_sha256_of_key_token_secret() -> None:
    expected = hashlib.sha256(b"my_api_key" + b"req_token_123" + b"s3cret").hexdigest()
    assert session_checksum("my_api_key", "req_token_123", "s3cret") == expected


def test_checksums_match_accepts_upper_case_hex_and_rejects_others() -> None:
    assert checksums_match(KITE_DOC_CHECKSUM, KITE_DOC_CHECKSUM)
    assert checksums_match(KITE_DOC_CHECKSUM, KITE_DOC_CHECKSUM.upper())
    assert not checksums_match(KITE_DOC_CHECKSUM, KITE_DOC_CHECKSUM[:-1] + "e")
    assert not checksums_match(KITE_DOC_CHECKSUM, KITE_DOC_CHECKSUM[:-1])
    assert not checksums_match(KITE_DOC_CHECKSUM, "")


@given(st.text(), st.text(), st.text(min_size=1))
def test_postback_checksum_equals_plain_sha256_of_concatenation(
    order_id: str, stamp: str, secret: str
) -> None:
    expected = hashlib.sha256((order_id + stamp + secret).encode("utf-8")).hexdigest()
    assert postback_checksum(order_id, stamp, secret) == expected
    assert checksums_match(expected, postback_checksum(order_id, stamp, secret))
