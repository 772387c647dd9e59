"""Write the sample events in events/ from local/samples.py (run: .venv/bin/python scripts/make_events.py).

The postbacks are signed with the local stack's documented api_secret (kitehooks_local_secret), so
`make invoke` against the local emulator and `make postback` against `make dev` both verify.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "kitehooks")]

from kitehooks.login.start import state_cookie_name  # noqa: E402
from local.samples import LOCAL_API_SECRET, http_api_event, postback_body  # noqa: E402


def write(name: str, event: dict[str, object]) -> None:
    (ROOT / "events" / name).write_text(json.dumps(event, indent=2) + "\n")


def main() -> None:
    valid = postback_body(LOCAL_API_SECRET)
    write("postback.json", http_api_event("POST", "/postback", valid))
    # Kite's checksum covers order_id and order_timestamp only: tamper with one of those.
    tampered = valid.replace(b'"order_id":"220303000308932"', b'"order_id":"220303000308933"')
    write("postback-tampered.json", http_api_event("POST", "/postback", tampered))
    write("postback-malformed.json", http_api_event("POST", "/postback", b'{"order_id": "220303000308932",'))
    write("login.json", http_api_event("GET", "/login", None, query="next=%2F"))
    # Kite's redirect back, as a browser would bring it. Its state was not issued by your stack,
    # so invoking it shows the callback's refusal page: log in through /login for the real flow.
    write(
        "callback.json",
        http_api_event(
            "GET",
            "/callback",
            None,
            query="action=login&type=login&status=success&request_token=SampleRequestToken0123456789abcd"
            "&state=eyJuIjoic2FtcGxlIiwiZSI6MCwieCI6bnVsbH0.c2FtcGxlLXNpZ25hdHVyZQ",
            # The sample is served over HTTPS, as deployed: the login cookie has its __Host- name.
            cookies=[f"{state_cookie_name(True)}=sample-nonce-sample-nonce-000"],
        ),
    )


if __name__ == "__main__":
    main()
