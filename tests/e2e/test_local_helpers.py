"""`make session-status`, `make logout` and `make expire` against the local stack (`make dev`'s code
on free ports): SessionFunction's own code, reached through Lambda's Invoke API on the local API's
port, as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from kitehooks.sessions.store import KiteSession, SessionStore
from local.dev import DevPorts, DevStack
from tests.conftest import closed_port, run_make

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStack]:
    with DevStack(ports=DevPorts(api=0, aws=0, kite=0)) as running:
        yield running


def secrets(stack: DevStack) -> Any:
    make_client: Any = boto3.client
    return make_client(
        "secretsmanager",
        endpoint_url=stack.aws_url,
        region_name="ap-south-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def stored(stack: DevStack, user_id: str) -> dict[str, Any]:
    value = secrets(stack).get_secret_value(SecretId=f"{stack.session_prefix}/{user_id}")["SecretString"]
    session: dict[str, Any] = json.loads(value)
    return session


def log_in(stack: DevStack) -> str:
    """Log in through the local API and the simulator as a browser does; the stored access token."""
    page = requests.Session().get(f"{stack.api_url}/login", timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    token: str = stored(stack, stack.user_id)["access_token"]
    assert token in stack.simulator.active_access_tokens()
    return token


def make(stack_url: str, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_make({**os.environ, "KITEHOOKS_API_URL": stack_url, **env}, *arguments, timeout=TIMEOUT)


def tool(stack_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.tools", "--api-url", stack_url, *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'kitehooks'}:{ROOT}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_status_then_logout_then_status(stack: DevStack) -> None:
    token = log_in(stack)
    # The shell's USER is the login name, not a Kite user: only USER= on make's command line counts.
    status = make(stack.api_url, "session-status", USER="not-a-kite-user")
    assert status.returncode == 0, status.stderr
    assert answer(status) == {
        "ok": True,
        "detail": {
            "user_id": "AB1234",
            "status": "active",
            "expires_at": stored(stack, "AB1234")["expires_at"],
            "login_time": stored(stack, "AB1234")["login_time"],
        },
    }

    logout = make(stack.api_url, "logout", "USER=AB1234")
    assert logout.returncode == 0, logout.stderr
    assert answer(logout)["ok"] is True
    assert answer(logout)["detail"]["status"] == "revoked"
    assert token not in stack.simulator.active_access_tokens()  # ended at Kite, not only marked
    for result in (status, logout):
        assert token not in result.stdout + result.stderr


def test_a_logout_is_read_back_as_revoked(stack: DevStack) -> None:
    log_in(stack)
    assert make(stack.api_url, "logout", "USER=AB1234").returncode == 0
    assert stored(stack, "AB1234")["status"] == "revoked"
    again = make(stack.api_url, "session-status", "USER=AB1234")
    assert answer(again)["detail"]["status"] == "revoked"


def overdue_session(stack: DevStack, user_id: str) -> KiteSession:
    log_in(stack)
    overdue = KiteSession(**stored(stack, stack.user_id))
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    overdue = replace(overdue, user_id=user_id, expires_at=past)
    SessionStore(secrets(stack), stack.session_prefix).put(overdue)
    return overdue


def test_expire_runs_the_daily_expiry(stack: DevStack) -> None:
    overdue = overdue_session(stack, "CD5678")
    result = make(stack.api_url, "expire")
    assert result.returncode == 0, result.stderr
    assert answer(result)["ok"] is True
    assert "CD5678" in json.dumps(answer(result)["detail"])
    assert "AB1234" not in json.dumps(answer(result)["detail"])  # not due: left alone
    assert overdue.access_token not in result.stdout


def test_an_expired_session_is_read_back_as_expired(stack: DevStack) -> None:
    overdue_session(stack, "EF9012")
    assert make(stack.api_url, "expire").returncode == 0
    assert stored(stack, "EF9012")["status"] == "expired"


def test_a_refusal_prints_the_functions_answer_and_fails(stack: DevStack) -> None:
    result = tool(stack.api_url, "logout", "--user", "ZZ9999")
    assert result.returncode == 1
    assert answer(result)["ok"] is False
    assert "ZZ9999" in answer(result)["detail"]["error"]


def test_without_the_local_stack_one_clear_line() -> None:
    nobody = f"http://127.0.0.1:{closed_port()}"
    result = tool(nobody, "session-status", "--user", "AB1234")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: cannot reach the local stack at {nobody}; is `make dev` running?"
    ]
    # Through make, that line comes first; make adds only its own "make: ***" line.
    through_make = make(nobody, "logout", "USER=AB1234")
    assert through_make.returncode != 0
    first, *rest = through_make.stderr.splitlines()
    assert first == f"error: cannot reach the local stack at {nobody}; is `make dev` running?"
    assert all(line.startswith("make: ***") for line in rest)


USERS_CODE = """
import sys
import time
from kiteconnect import exceptions
from kitehooks.client import kite_connect

kite = kite_connect("AB1234")
print(kite.profile()["user_id"], flush=True)
sys.stdin.readline()  # the test kills the token at Kite meanwhile
try:
    kite.profile()
except exceptions.TokenException:
    print("token refused", flush=True)
"""


def banner_exports(stack: DevStack) -> dict[str, str]:
    """The variables `make dev` tells users to export for their own code."""
    exports: dict[str, str] = {}
    for line in stack.banner().splitlines():
        if line.strip().startswith("export "):
            for pair in line.split()[1:]:
                name, _, value = pair.partition("=")
                exports[name] = value
    return exports


def test_users_code_with_the_banners_settings_reports_a_dead_token(stack: DevStack) -> None:
    token = log_in(stack)
    exports = banner_exports(stack)
    assert exports["AWS_ENDPOINT_URL_LAMBDA"] == stack.api_url
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KITE"))}
    env = {**clean, **exports, "PYTHONPATH": str(ROOT / "layers" / "kitehooks")}
    user = subprocess.Popen(
        [sys.executable, "-c", USERS_CODE],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert user.stdin is not None
        assert user.stdout is not None
        assert user.stdout.readline().strip() == "AB1234", user.stderr.read() if user.stderr else ""
        checks_before = len([r for r in stack.simulator.api_requests() if r.path == "/user/profile"])
        assert stack.simulator.kill_access_tokens(token) == 1
        user.stdin.write("\n")
        user.stdin.flush()
        assert user.stdout.readline().strip() == "token refused"
        assert user.wait(timeout=TIMEOUT) == 0
        # The hook invoked SessionFunction's check through the local Invoke API: it asks Kite too.
        deadline = time.monotonic() + TIMEOUT
        while (
            len([r for r in stack.simulator.api_requests() if r.path == "/user/profile"]) < checks_before + 2
        ):
            assert time.monotonic() < deadline, "SessionFunction never checked the session at Kite"
            time.sleep(0.1)
    finally:
        if user.poll() is None:
            user.kill()
            user.wait()
        for stream in (user.stdin, user.stdout, user.stderr):
            if stream is not None:
                stream.close()
