"""The make helpers follow the running `make dev`, on whatever ports DEV_ARGS gave it, through the
state file it writes; without a running stack every helper fails with one clear line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.dev_state import DevState, StackNotRunning, read_state, remove_state, write_state
from tests.conftest import run_make

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
DEV_API_SECRET = "kt-dev-secret-3e8b51"  # planted: the state file must not hold it
HELPERS = (
    ["postback"],
    ["queue"],
    ["sessions"],
    ["logout", "USER=AB1234"],
    ["session-status", "USER=AB1234"],
    ["expire"],
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_env(state_file: Path) -> dict[str, str]:
    """The user's shell: no URL variables, only where the state file is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEHOOKS_", "KITE_"))}
    return {**env, "KITEHOOKS_DEV_STATE": str(state_file)}


def make(state_file: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_make(_clean_env(state_file), *arguments, timeout=TIMEOUT)


class RunningDev:
    def __init__(self, process: subprocess.Popen[str], state_file: Path, ports: list[int]) -> None:
        self.process = process
        self.state_file = state_file
        self.api_url = f"http://127.0.0.1:{ports[0]}"
        self.aws_url = f"http://127.0.0.1:{ports[1]}"
        self.kite_url = f"http://127.0.0.1:{ports[2]}"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDev]:
    """`make dev DEV_ARGS="--api-port A --aws-port B --kite-port C"` on ports that are not the defaults."""
    state_file = tmp_path_factory.mktemp("dev") / "state.json"
    ports = [_free_port() for _ in range(3)]
    assert not {3000, 5000, 5100} & set(ports)
    dev_args = f"--api-port {ports[0]} --aws-port {ports[1]} --kite-port {ports[2]}"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "dev", f"DEV_ARGS={dev_args}"],
        cwd=ROOT,
        # The app's own secret in make dev's shell only: the helpers' shells do not have it.
        env={**_clean_env(state_file), "KITE_API_SECRET": DEV_API_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # SIGTERM to the group reaches make and local.dev, as Ctrl-C does
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not any("Ctrl-C stops everything" in line for line in lines):
            line = process.stdout.readline()
            assert line, "make dev exited early:\n" + "".join(lines)
            lines.append(line)
        yield RunningDev(process, state_file, ports)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_make_dev_writes_where_it_listens(dev: RunningDev) -> None:
    state = json.loads(dev.state_file.read_text(encoding="utf-8"))
    assert (state["api_url"], state["aws_url"], state["kite_url"]) == (dev.api_url, dev.aws_url, dev.kite_url)
    assert state["session_prefix"] == "kitehooks-local/sessions"
    assert "secret" not in json.dumps({k: v for k, v in state.items() if k != "credentials_secret"})
    assert DEV_API_SECRET not in dev.state_file.read_text(encoding="utf-8")


def test_the_helpers_follow_the_ports_of_dev_args(dev: RunningDev) -> None:
    empty = make(dev.state_file, "sessions")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == f"no sessions yet: log in at {dev.api_url}/login"

    sent = make(dev.state_file, "postback", "ORDER_ID=260101000000077")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    # Signed with the api_secret make dev was started with, read from its emulator.
    assert sent.stdout.startswith("POST /postback -> 200")
    assert DEV_API_SECRET not in sent.stdout + sent.stderr

    queue = make(dev.state_file, "queue")
    assert queue.returncode == 0, queue.stderr
    assert "group=260101000000077 status=COMPLETE" in queue.stdout
    assert f"127.0.0.1:{dev.aws_url.rsplit(':', 1)[1]}" in queue.stdout

    browser = requests.Session()
    assert browser.get(f"{dev.api_url}/login", timeout=TIMEOUT).status_code == 200
    sessions = make(dev.state_file, "sessions")
    assert sessions.returncode == 0, sessions.stderr
    assert sessions.stdout.startswith("kitehooks-local/sessions/AB1234: ")
    assert "access_token set" in sessions.stdout

    status = make(dev.state_file, "session-status", "USER=AB1234")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["detail"]["status"] == "active"


def test_stopping_make_dev_removes_the_file_and_every_helper_says_so_in_one_line(
    dev: RunningDev,
) -> None:
    os.killpg(dev.process.pid, signal.SIGINT)  # Ctrl-C in the terminal
    dev.process.wait(timeout=30)  # make's own status after Ctrl-C is make's business
    deadline = time.monotonic() + 30
    while _listening(dev.api_url):  # local.dev may still be stopping after make has gone
        assert time.monotonic() < deadline, "make dev did not stop"
        time.sleep(0.1)
    assert not dev.state_file.exists()
    for helper in HELPERS:
        result = make(dev.state_file, *helper)
        assert result.returncode != 0, helper
        assert result.stdout == "", helper
        first, *rest = result.stderr.splitlines()
        assert (
            first == f"error: the local stack is not running (no {dev.state_file}): start it with `make dev`"
        )
        assert all(line.startswith("make: ***") for line in rest), result.stderr
        assert "Traceback" not in result.stderr


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _state(pid: int) -> DevState:
    return DevState(
        pid=pid,
        api_url="http://127.0.0.1:1",
        aws_url="http://127.0.0.1:2",
        kite_url="http://127.0.0.1:3",
        region="ap-south-1",
        stack_name="kitehooks-local",
        session_prefix="kitehooks-local/sessions",
        queue_url="http://127.0.0.1:2/123456789012/q.fifo",
        credentials_secret="kitehooks-local/api-credentials",
    )


def test_a_file_left_by_a_killed_make_dev_is_not_taken_for_a_running_stack(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    state_file = write_state(_state(int(gone.stdout)), tmp_path / "state.json")
    with pytest.raises(StackNotRunning, match=r"pid \d+, ended without removing .*start it with `make dev`"):
        read_state(state_file)
    result = make(state_file, "queue")
    assert result.stderr.splitlines()[0].startswith("error: the local stack is not running (`make dev`, pid ")

    alive = write_state(_state(os.getpid()), tmp_path / "alive.json")
    assert read_state(alive).api_url == "http://127.0.0.1:1"


def test_an_unreachable_emulator_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # The file names this (live) process, but nothing listens where it says the emulator is.
    closed = _free_port()
    state = _state(os.getpid())
    state_file = write_state(
        DevState(**{**state.__dict__, "aws_url": f"http://127.0.0.1:{closed}"}), tmp_path / "state.json"
    )
    for helper in ("queue", "sessions"):
        result = make(state_file, helper)
        assert result.returncode != 0
        first, *rest = result.stderr.splitlines()
        assert (
            first
            == f"error: cannot reach the AWS emulator at http://127.0.0.1:{closed}; is `make dev` running?"
        )
        assert all(line.startswith("make: ***") for line in rest), result.stderr


def test_only_the_make_dev_that_wrote_the_file_removes_it(tmp_path: Path) -> None:
    state_file = write_state(_state(os.getpid()), tmp_path / "state.json")
    remove_state(os.getpid() + 1, state_file)  # another, older `make dev` stopping
    assert state_file.exists()
    remove_state(os.getpid(), state_file)
    assert not state_file.exists()
    remove_state(os.getpid(), state_file)  # twice is harmless
