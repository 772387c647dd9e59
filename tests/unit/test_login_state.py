from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kitehooks.login_state import (
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
