from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitehooks.login_state import (
    MAX_RETURN_PATH_LENGTH,
    MAX_STATE_LENGTH,
    StateRejected,
    UnsafeReturnPath,
    check_return_path,
    new_nonce,
    sign_state,
    verify_state,
)

SECRET = "state-secret"
NOW = 1_800_000_000.0


def test_a_fresh_state_verifies_with_its_cookie() -> None:
    nonce = new_nonce()
    state = sign_state(SECRET, nonce, int(NOW) + 600, "/orders")
    checked = verify_state(SECRET, state, nonce, NOW)
    assert (checked.nonce, checked.next_path) == (nonce, "/orders")


@pytest.mark.parametrize(
    ("state_of", "cookie_of", "now", "message"),
    [
        (lambda s: None, lambda n: n, NOW, "missing"),
        (lambda s: s + "x", lambda n: n, NOW, "not one we issued"),
        (lambda s: "x" + s, lambda n: n, NOW, "not one we issued"),
        (lambda s: s.replace(".", ""), lambda n: n, NOW, "malformed"),
        (lambda s: s, lambda n: n, NOW + 600, "expired"),
        (lambda s: s, lambda n: None, NOW, "did not start"),
        (lambda s: s, lambda n: new_nonce(), NOW, "another browser"),
    ],
)
def test_bad_states_are_refused_with_a_reason(state_of, cookie_of, now, message) -> None:  # type: ignore[no-untyped-def]
    nonce = new_nonce()
    state = sign_state(SECRET, nonce, int(NOW) + 600, None)
    with pytest.raises(StateRejected, match=message):
        verify_state(SECRET, state_of(state), cookie_of(nonce), now)


def test_a_state_signed_under_another_secret_is_refused() -> None:
    nonce = new_nonce()
    with pytest.raises(StateRejected, match="not one we issued"):
        verify_state(SECRET, sign_state("other", nonce, int(NOW) + 600, None), nonce, NOW)


@given(st.text(max_size=300), st.text(max_size=40))
def test_arbitrary_state_and_cookie_never_verify_or_crash(state: str, cookie: str) -> None:
    with pytest.raises(StateRejected):
        verify_state(SECRET, state, cookie, NOW)


@pytest.mark.parametrize("path", ["/", "/orders", "/a/b?c=d#e"])
def test_same_origin_paths_are_accepted(path: str) -> None:
    assert check_return_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["https://evil.example", "//evil.example", "/\\evil.example", "orders", "/a\r\nSet-Cookie: x", "/a\\b"],
)
def test_other_return_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafeReturnPath):
        check_return_path(path)


@pytest.mark.parametrize(
    ("path", "sent_as"),
    [
        ("/orders/ü", "/orders/%C3%BC"),
        ("/中文", "/%E4%B8%AD%E6%96%87"),
        ("/a b", "/a%20b"),
        ("/already%20encoded", "/already%20encoded"),
    ],
)
def test_return_paths_are_kept_as_a_browser_sends_them(path: str, sent_as: str) -> None:
    # ASCII only, so the path fits the Location header /callback answers with.
    assert check_return_path(path) == sent_as


@pytest.mark.parametrize(
    "path",
    [
        "/" + "ü" * 200,  # 201 characters, 1,201 once encoded
        "/" + "😀" * 60,  # 61 characters, 721 once encoded
        "/" + "a" * MAX_RETURN_PATH_LENGTH,
    ],
)
def test_return_paths_too_long_once_encoded_are_refused(path: str) -> None:
    with pytest.raises(UnsafeReturnPath, match="too long"):
        check_return_path(path)


def test_a_return_path_that_no_url_can_carry_is_refused() -> None:
    with pytest.raises(UnsafeReturnPath):
        check_return_path("/a\ud800b")  # a lone surrogate, as a broken query string can decode to


# Any text at all, weighted towards what makes a state long: non-ASCII, quotes, long strings.
RETURN_PATHS = st.builds(
    lambda body: "/" + body,
    st.text(
        alphabet=st.one_of(
            st.characters(codec="utf-8"), st.sampled_from('"ü中😀%'), st.characters(max_codepoint=0x7F)
        ),
        max_size=MAX_RETURN_PATH_LENGTH + 10,
    ),
)


@settings(max_examples=400, deadline=None)
@given(RETURN_PATHS)
def test_every_return_path_accepted_makes_a_state_the_callback_accepts(path: str) -> None:
    try:
        checked = check_return_path(path)
    except UnsafeReturnPath:
        return
    assert checked is not None
    assert checked.isascii()
    assert len(checked) <= MAX_RETURN_PATH_LENGTH
    nonce = new_nonce()
    state = sign_state(SECRET, nonce, int(NOW) + 600, checked)
    assert len(state) <= MAX_STATE_LENGTH
    assert verify_state(SECRET, state, nonce, NOW).next_path == checked


def test_the_longest_return_path_of_the_worst_characters_fits_in_a_state() -> None:
    # JSON escapes '"' as two characters: the most a return path can add to the state.
    worst = "/" + '"' * (MAX_RETURN_PATH_LENGTH - 1)
    nonce = "n" * 64
    state = sign_state(SECRET, nonce, 10**12, check_return_path(worst))
    assert len(state) <= MAX_STATE_LENGTH
    assert verify_state(SECRET, state, nonce, NOW).next_path == worst
