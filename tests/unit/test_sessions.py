from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kitehooks.sessions import IST, SessionStoreError, new_session, next_expiry, secret_name


@pytest.mark.parametrize(
    ("moment", "expiry"),
    [
        (datetime(2026, 11, 29, 9, 15, tzinfo=IST), datetime(2026, 11, 30, 6, 0, tzinfo=IST)),
        (datetime(2026, 11, 29, 5, 59, 59, tzinfo=IST), datetime(2026, 11, 29, 6, 0, tzinfo=IST)),
        (datetime(2026, 11, 29, 6, 0, tzinfo=IST), datetime(2026, 11, 30, 6, 0, tzinfo=IST)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=IST), datetime(2027, 1, 1, 6, 0, tzinfo=IST)),
        # 00:10 UTC is 05:40 IST the same day: expires 20 minutes later, not a day later.
        (datetime(2026, 11, 29, 0, 10, tzinfo=UTC), datetime(2026, 11, 29, 6, 0, tzinfo=IST)),
    ],
)
def test_next_expiry_is_the_next_0600_ist(moment: datetime, expiry: datetime) -> None:
    assert next_expiry(moment) == expiry
    assert next_expiry(moment).isoformat().endswith("+05:30")


def test_new_session_reads_kites_login_time_as_ist() -> None:
    session = new_session(
        "AB1234",
        "Arjun",
        "key",
        "tok-access-1",
        "tok-public-1",
        "tok-refresh-1",
        "2026-11-29 09:15:00",
        datetime(2026, 11, 29, 3, 46, tzinfo=UTC),
    )
    assert session.login_time == "2026-11-29T09:15:00+05:30"
    assert session.expires_at == "2026-11-30T06:00:00+05:30"
    assert session.status == "active"
    assert "tok-" not in repr(session)  # tokens never reach a log line through repr()


@pytest.mark.parametrize("user_id", ["", "AB/../x", "A", "AB 12", "x" * 17])
def test_user_ids_that_are_not_kite_client_ids_never_name_a_secret(user_id: str) -> None:
    with pytest.raises(SessionStoreError):
        secret_name("kitehooks/sessions", user_id)
