from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kitehooks.postbacks.postback import PostbackRejected, parse_postback, verify_postback
from local.samples import KITE_POSTBACK_EXAMPLE, postback_body, postback_order

SECRET = "unit-secret"
LIMIT = 65536


def rejection(body: bytes, limit: int = LIMIT) -> PostbackRejected:
    with pytest.raises(PostbackRejected) as caught:
        parse_postback(body, limit)
    return caught.value


def test_parses_kites_example_and_keeps_the_raw_body() -> None:
    body = postback_body(SECRET)
    signed = parse_postback(body, LIMIT)
    assert signed.raw_body == body.decode()
    assert (signed.order_id, signed.order_timestamp) == ("220303000308932", "2022-03-03 09:24:25")
    assert (signed.user_id, signed.status) == ("AB1234", "COMPLETE")


def test_verify_accepts_the_right_secret_and_refuses_another() -> None:
    signed = parse_postback(postback_body(SECRET), LIMIT)
    assert verify_postback(signed, SECRET).order_id == "220303000308932"
    with pytest.raises(PostbackRejected) as caught:
        verify_postback(signed, SECRET + "x")
    assert caught.value.status_code == 403
    assert caught.value.code == "checksum_mismatch"


@pytest.mark.parametrize("field", ["order_id", "order_timestamp", "checksum"])
@pytest.mark.parametrize("value", [None, "", "<absent>"])
def test_missing_or_empty_required_field_is_400_naming_it(field: str, value: str | None) -> None:
    order = postback_order(SECRET)
    if value == "<absent>":
        del order[field]
    else:
        order[field] = value
    rejected = rejection(json.dumps(order).encode())
    assert rejected.status_code == 400
    assert field in rejected.reason


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"   \n", "empty_body"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"order_id": ', "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"order_id": NaN}', "malformed_json"),
        (b'{"order_id": "1", "order_id": "2"}', "duplicate_key"),
        (b"\xef\xbb\xbf{}", "malformed_json"),  # a UTF-8 BOM is not JSON
    ],
)
def test_malformed_bodies_are_400_with_a_reason(body: bytes, code: str) -> None:
    rejected = rejection(body)
    assert (rejected.status_code, rejected.code) == (400, code)
    assert rejected.reason


def test_non_string_order_id_is_refused_rather_than_re_stringified() -> None:
    # Kite signs the order_id string as sent; 220303000308932 as a number has no "as sent" string.
    rejected = rejection(json.dumps(postback_order(SECRET, order_id=220303000308932)).encode())
    assert (rejected.status_code, rejected.code) == (400, "invalid_order_id")


def test_checksum_that_is_not_64_hex_is_400() -> None:
    order = postback_order(SECRET)
    order["checksum"] = "z" * 64
    assert rejection(json.dumps(order).encode()).code == "invalid_checksum"


def test_body_over_the_limit_is_413_and_at_the_limit_is_parsed() -> None:
    body = postback_body(SECRET)
    assert parse_postback(body, len(body)).order_id == "220303000308932"
    rejected = rejection(body, len(body) - 1)
    assert rejected.status_code == 413
    assert str(len(body) - 1) in rejected.reason


def test_missing_optional_fields_are_none_and_wrong_types_refused() -> None:
    order = {k: v for k, v in postback_order(SECRET).items() if k not in ("user_id", "status")}
    signed = parse_postback(json.dumps(order).encode(), LIMIT)
    assert (signed.user_id, signed.status) == (None, None)
    assert rejection(json.dumps(postback_order(SECRET, status=5)).encode()).code == "invalid_status"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_a_4xx_rejection(body: bytes) -> None:
    try:
        parse_postback(body, LIMIT)
    except PostbackRejected as rejected:
        assert 400 <= rejected.status_code < 500
        assert rejected.reason


@given(st.dictionaries(st.sampled_from(sorted(KITE_POSTBACK_EXAMPLE)), st.none() | st.integers() | st.text()))
def test_arbitrary_field_values_either_parse_or_are_refused_with_400(overrides: dict[str, object]) -> None:
    order = {**postback_order(SECRET), **overrides}
    try:
        signed = parse_postback(json.dumps(order).encode(), LIMIT)
    except PostbackRejected as rejected:
        assert rejected.status_code == 400
    else:
        assert signed.order_id == order["order_id"]
        assert signed.checksum == order["checksum"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            b'{"order_id":"1","order_timestamp":"t","checksum":"'
            + b"a" * 64
            + b'","q":'
            + b"9" * 5000
            + b"}",
            None,
        ),
        (b'{"m":' + b"[" * 30000 + b"]" * 30000 + b"}", "malformed_json"),
        (b'{"order_id":"\\ud800","order_timestamp":"t","checksum":"' + b"a" * 64 + b'"}', "invalid_order_id"),
        (
            b'{"order_id":"1","order_timestamp":"t","checksum":"' + b"a" * 64 + b'","status":"\\udfff"}',
            "invalid_status",
        ),
        (b'{"order_id":12,"order_timestamp":"t","checksum":"' + b"a" * 64 + b'"}', "invalid_order_id"),
    ],
)
def test_hostile_bodies_are_400_not_a_crash(body: bytes, code: str | None) -> None:
    if code is None:  # a huge number elsewhere in the order is fine: it is delivered as sent
        assert parse_postback(body, LIMIT).order_id == "1"
        return
    assert rejection(body).code == code
