"""No session write loses a newer login: the session function's Secrets Manager calls go through a
proxy that holds its write while a whole login (/login, Kite, /callback) completes, then lets it
go. The newer login must survive, active and with its own token, whatever the job was doing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests

from kitehooks.sessions.store import KiteSession, SessionStore
from local.kite_simulator import KiteSimulator
from tests.conftest import FakeLambdaContext, load_function
from tests.event_capture import EventCapture

# Fixtures, imported so that pytest finds them here too.
from tests.integration.test_session_events import captured as captured
from tests.integration.test_session_events import (
    login,
    reset_layer_caches,
)
from tests.integration.test_session_events import prefix as prefix
from tests.integration.test_session_function import logged_in

HOLD_SECONDS = 30.0


class HoldingProxy:
    """Forwards Secrets Manager calls to the emulator; once armed, holds the first call of one
    operation until released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.held = threading.Event()
        self.release = threading.Event()
        self.operations: list[str] = []
        self._armed: str | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                operation = self.headers.get("X-Amz-Target", "").removeprefix("secretsmanager.")
                proxy.operations.append(operation)
                if proxy.take(operation):
                    proxy.held.set()
                    proxy.release.wait(HOLD_SECONDS)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                answer = requests.post(proxy.upstream + self.path, data=body, headers=headers, timeout=10)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def arm(self, operation: str) -> None:
        with self._lock:
            self._armed = operation

    def take(self, operation: str) -> bool:
        with self._lock:
            if self._armed == operation:
                self._armed = None
                return True
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HoldingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(aws_env: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HoldingProxy]:
    with HoldingProxy(aws_env) as holding:
        # Every function of this process reaches Secrets Manager through the proxy.
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", holding.url)
        reset_layer_caches()
        yield holding
    reset_layer_caches()


def emulator_session(aws_env: str, prefix: str) -> dict[str, Any]:
    """The session as stored, read from the emulator itself (not through the proxy)."""
    store = SessionStore(boto3.client("secretsmanager", endpoint_url=aws_env), prefix)
    session: KiteSession = store.get("AB1234")
    return {"status": session.status, "access_token": session.access_token}


def race(
    sim: KiteSimulator, prefix: str, proxy: HoldingProxy, event: dict[str, str], operation: str
) -> tuple[dict[str, Any] | BaseException, dict[str, Any]]:
    """Run the job in a thread, hold its ``operation`` until a new login is stored, then let it
    finish. Returns the job's answer (or what it raised) and the newer login's stored session."""
    app = load_function("session")
    outcome: list[dict[str, Any] | BaseException] = []

    def job() -> None:
        try:
            outcome.append(app.handler(event, FakeLambdaContext()))
        except BaseException as error:
            outcome.append(error)

    proxy.arm(operation)
    worker = threading.Thread(target=job)
    worker.start()
    try:
        assert proxy.held.wait(HOLD_SECONDS), f"the job never called {operation}"
        newer = login(sim, prefix)  # in the main thread, as Lambda runs a handler
    finally:
        proxy.release.set()
        worker.join(HOLD_SECONDS)
    assert not worker.is_alive()
    return outcome[0], newer


def arrange(action: str, sim: KiteSimulator, prefix: str) -> dict[str, Any]:
    """A session the job will want to change, and the job's event."""
    if action == "expire":
        logged_in(sim, prefix, "AB1234", expires_in=timedelta(minutes=-1))  # due
        return {"action": "expire"}
    session = login(sim, prefix)
    if action == "check":
        sim.kill_access_tokens(session["access_token"])  # dead at Kite: check wants it expired
    return {"action": action, "user_id": "AB1234"}


@pytest.mark.parametrize("operation", ["PutSecretValue", "UpdateSecretVersionStage"])
@pytest.mark.parametrize("action", ["expire", "check", "logout", "renew"])
def test_a_login_during_the_jobs_write_survives_active_with_its_token(
    sim: KiteSimulator,
    prefix: str,
    proxy: HoldingProxy,
    captured: EventCapture,
    aws_env: str,
    action: str,
    operation: str,
) -> None:
    event = arrange(action, sim, prefix)
    captured.events()
    answer, newer = race(sim, prefix, proxy, event, operation)
    assert not isinstance(answer, BaseException), answer

    survivor = emulator_session(aws_env, prefix)
    assert survivor == {"status": "active", "access_token": newer["access_token"]}
    assert newer["access_token"] in sim.active_access_tokens()
    # The job saw its write refused and decided again on the newer version.
    assert proxy.operations.count("UpdateSecretVersionStage") >= 1
    events = captured.events()
    assert [e["detail-type"] for e in events] == ["Kite session started"]  # the login's; nothing ended
    if action == "expire":
        assert answer["detail"]["expired"] == []
    elif action == "check":
        assert (answer["detail"]["expired"], answer["detail"]["superseded"]) == ([], ["AB1234"])
    else:
        assert answer["ok"] is False
        assert "newer login" in answer["detail"]["error"]
    if action == "renew":
        # The token renewed for nothing was ended at Kite: only the newer login's stays live.
        assert sim.active_access_tokens() == [newer["access_token"]]


def test_without_the_compare_and_swap_the_same_race_loses_the_login(
    sim: KiteSimulator,
    prefix: str,
    proxy: HoldingProxy,
    aws_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The harness must be able to fail: with a plain write (the old expire_due), the login that
    # completes during the job's write is overwritten, marked expired, and its token dropped.
    def plain_write(store: SessionStore, read: object, session: KiteSession) -> None:
        store.put(session)

    monkeypatch.setattr(SessionStore, "replace", plain_write)
    event = arrange("expire", sim, prefix)
    answer, newer = race(sim, prefix, proxy, event, "PutSecretValue")
    assert not isinstance(answer, BaseException), answer
    lost = emulator_session(aws_env, prefix)
    assert lost == {"status": "expired", "access_token": ""}
    assert newer["access_token"] in sim.active_access_tokens()  # live at Kite, lost to kitehooks


def test_the_proxy_forwards_faithfully(aws_env: str, proxy: HoldingProxy, prefix: str) -> None:
    client = boto3.client("secretsmanager", endpoint_url=proxy.url)
    name = f"{prefix}/probe-{uuid.uuid4().hex[:6]}"
    client.create_secret(Name=name, SecretString="x")
    assert client.get_secret_value(SecretId=name)["SecretString"] == "x"
    assert proxy.operations == ["CreateSecret", "GetSecretValue"]
