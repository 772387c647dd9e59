from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitehooks.login.state import (
    MAX_COMPLETED_LOGINS,
    MAX_PENDING_LOGINS,
    MAX_RETURN_PATH_LENGTH,
    MAX_STATE_LENGTH,
    StateRejected,
    UnsafeReturnPath,
    check_return_path,
    completed_as,
    completed_entry,
    new_nonce,
    pending_nonces,
    sign_state,
    verify_state,
    with_completed,
    with_pending,
    without_pending,
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


# --- logins in several tabs: the login cookie holds the nonces of the last few ---------------


def test_each_new_login_is_added_to_the_cookie_and_the_oldest_beyond_the_limit_dropped() -> None:
    nonces = [new_nonce() for _ in range(MAX_PENDING_LOGINS + 1)]
    cookie: str | None = None
    for nonce in nonces:
        cookie = with_pending(cookie, nonce)
    assert pending_nonces(cookie) == nonces[1:]
    for nonce in nonces[1:]:
        assert (
            verify_state(SECRET, sign_state(SECRET, nonce, int(NOW) + 600, None), cookie, NOW).nonce == nonce
        )
    with pytest.raises(StateRejected, match="another browser"):
        verify_state(SECRET, sign_state(SECRET, nonces[0], int(NOW) + 600, None), cookie, NOW)


def test_a_used_nonce_leaves_the_cookie_and_the_others_stay() -> None:
    first, second = new_nonce(), new_nonce()
    cookie = with_pending(with_pending(None, first), second)
    assert without_pending(cookie, first) == second
    assert without_pending(second, second) == ""
    assert without_pending(cookie, new_nonce()) == cookie


@pytest.mark.parametrize("junk", ["", "x", "..", "a" * 21, "é" * 30, "a b", "a;b"])
def test_junk_in_the_login_cookie_is_ignored(junk: str) -> None:
    nonce = new_nonce()
    cookie = with_pending(f"{junk}.{junk}", nonce)
    assert cookie == nonce
    assert pending_nonces(junk) == []


# --- the completed-login marker ----------------------------------------------------------------


def test_a_completed_marker_names_its_login_and_user_until_it_expires() -> None:
    nonce = new_nonce()
    marker = with_completed(None, completed_entry(SECRET, nonce, "AB1234", int(NOW) + 900), NOW)
    assert completed_as(SECRET, marker, nonce, NOW) == "AB1234"
    assert completed_as(SECRET, marker, nonce, NOW + 900) is None  # expired
    assert completed_as(SECRET, marker, new_nonce(), NOW) is None  # another login
    assert completed_as("other-secret", marker, nonce, NOW) is None  # not signed by us


def test_a_completed_marker_cannot_be_edited() -> None:
    nonce = new_nonce()
    user, until, mac = completed_entry(SECRET, nonce, "AB1234", int(NOW) + 900).split("~")
    for forged in (
        f"ZZ9999~{until}~{mac}",
        f"{user}~{int(until) + 10**6}~{mac}",
        f"{user}~{until}~{'A' * 22}",
    ):
        assert completed_as(SECRET, forged, nonce, NOW) is None, forged


def test_a_user_id_that_is_not_plain_is_left_out_of_the_marker() -> None:
    nonce = new_nonce()
    marker = completed_entry(SECRET, nonce, "<b>x</b>", int(NOW) + 900)
    assert completed_as(SECRET, marker, nonce, NOW) == ""


def test_the_completed_cookie_keeps_the_newest_unexpired_markers() -> None:
    nonces = [new_nonce() for _ in range(MAX_COMPLETED_LOGINS + 1)]
    cookie: str | None = completed_entry(SECRET, new_nonce(), "OLD1", int(NOW) + 1)
    for nonce in nonces:
        cookie = with_completed(cookie, completed_entry(SECRET, nonce, "AB1234", int(NOW) + 900), NOW + 5)
    assert cookie is not None
    assert "OLD1" not in cookie
    assert completed_as(SECRET, cookie, nonces[0], NOW) is None
    assert all(completed_as(SECRET, cookie, nonce, NOW) == "AB1234" for nonce in nonces[1:])


@given(st.text(max_size=200))
def test_an_arbitrary_completed_cookie_never_passes_or_crashes(cookie: str) -> None:
    assert completed_as(SECRET, cookie, new_nonce(), NOW) is None
