"""The local stack as a user runs it (`make dev`'s code path, on free ports), driven over HTTP only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from local.dev import DevPorts, DevStack
from local.samples import LOCAL_API_SECRET, postback_body

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStack]:
    with DevStack(ports=DevPorts(api=0, aws=0, kite=0)) as running:
        yield running


def aws(stack: DevStack, service: str) -> Any:
    make_client: Any = boto3.client
    return make_client(
        service,
        endpoint_url=stack.aws_url,
        region_name="ap-south-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def queue_url(stack: DevStack) -> str:
    return stack.resources["OrderUpdatesQueue"]["Ref"]


def drain(stack: DevStack) -> list[dict[str, Any]]:
    sqs = aws(stack, "sqs")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url(stack), MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url(stack), ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)
    return messages


def post(stack: DevStack, body: bytes) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/postback", data=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
    )


def test_login_through_the_kite_simulator_stores_a_session(stack: DevStack) -> None:
    browser = requests.Session()
    page = browser.get(f"{stack.api_url}/login", timeout=TIMEOUT)  # follows both redirects
    assert page.status_code == 200, page.text
    assert "Welcome, Arjun Bhat" in page.text
    hops = [urlsplit_host(response.headers["Location"]) for response in page.history]
    assert hops == [stack.kite_url, stack.api_url]  # API -> Kite -> API, as in a browser

    secret = aws(stack, "secretsmanager").get_secret_value(SecretId=f"{stack.session_prefix}/AB1234")
    session = json.loads(secret["SecretString"])
    assert session["status"] == "active"
    assert session["access_token"] in stack.simulator.active_access_tokens()
    assert session["access_token"] not in page.text


def urlsplit_host(location: str) -> str:
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}"


def test_callback_without_the_browser_cookie_is_refused(stack: DevStack) -> None:
    first_hop = requests.get(f"{stack.api_url}/login", allow_redirects=False, timeout=TIMEOUT)
    kite = requests.get(first_hop.headers["Location"], allow_redirects=False, timeout=TIMEOUT)
    callback = requests.get(kite.headers["Location"], allow_redirects=False, timeout=TIMEOUT)  # no cookie jar
    assert callback.status_code == 400
    assert "did not start the login" in callback.text


def test_postbacks_valid_duplicate_tampered_malformed(stack: DevStack) -> None:
    drain(stack)
    valid = postback_body(LOCAL_API_SECRET, order_id="260101000000001", status="OPEN")
    assert post(stack, valid).status_code == 200
    assert post(stack, valid).json() == {"status": "queued", "order_id": "260101000000001"}
    tampered = valid.replace(b'"order_id":"260101000000001"', b'"order_id":"260101000000002"')
    refused = post(stack, tampered)
    assert refused.status_code == 403
    assert "checksum" in refused.json()["reason"]
    malformed = post(stack, b'{"order_id": ')
    assert malformed.status_code == 400
    assert "JSON" in malformed.json()["reason"]

    [message] = drain(stack)
    assert message["Body"] == valid.decode()
    assert message["Attributes"]["MessageGroupId"] == "260101000000001"
    filled = json.loads(valid)["filled_quantity"]
    state_id = f"260101000000001|OPEN|{filled}"
    assert message["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(state_id.encode()).hexdigest()


def test_unknown_route_is_404_and_wrong_method_on_a_route_too(stack: DevStack) -> None:
    assert requests.get(f"{stack.api_url}/nowhere", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{stack.api_url}/postback", timeout=TIMEOUT).status_code == 404  # HttpApi: no route


def test_a_handler_crash_is_502_without_a_traceback(stack: DevStack) -> None:
    # Kill the callback's worker process while it waits on a slow Kite: the handler dies mid-request.
    browser = requests.Session()
    first_hop = browser.get(f"{stack.api_url}/login", allow_redirects=False, timeout=TIMEOUT)
    kite = browser.get(first_hop.headers["Location"], allow_redirects=False, timeout=TIMEOUT)
    stack.simulator.set_delay(5)
    answer: list[requests.Response] = []
    request = threading.Thread(
        target=lambda: answer.append(
            browser.get(kite.headers["Location"], allow_redirects=False, timeout=TIMEOUT)
        )
    )
    request.start()
    try:
        deadline = time.monotonic() + 10
        while (
            not stack.simulator.api_requests() or stack.simulator.api_requests()[-1].path != "/session/token"
        ):
            assert time.monotonic() < deadline, "the callback never reached Kite"
            time.sleep(0.05)
        callback_workers = [pid for pid in stack.gateway.worker_pids() if _is_worker_of(pid, "callback")]
        assert callback_workers
        for pid in callback_workers:
            os.kill(pid, signal.SIGKILL)
        request.join(timeout=TIMEOUT)
    finally:
        stack.simulator.set_delay(0)
    [response] = answer
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}
    assert "Traceback" not in response.text
    # The next request gets a fresh worker.
    assert requests.get(f"{stack.api_url}/login", allow_redirects=False, timeout=TIMEOUT).status_code == 302


def _is_worker_of(pid: int, function_folder: str) -> bool:
    try:
        return Path(f"/proc/{pid}/cwd").resolve() == ROOT / "functions" / function_folder
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def make_dev_command(api_port: str, aws_port: str, kite_port: str) -> tuple[list[str], dict[str, str]]:
    """What `make dev` runs, with these ports."""
    command = [sys.executable, "-m", "local.dev", "--api-port", api_port, "--aws-port", aws_port]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'kitehooks'}:{ROOT}"}
    # Its state file away from the project root's, which a `make dev` of the user's may own.
    env["KITEHOOKS_DEV_STATE"] = str(Path(tempfile.gettempdir()) / f"kitehooks-dev-test-{api_port}.json")
    return [*command, "--kite-port", kite_port], env


def test_make_dev_prints_its_urls_and_sigterm_leaves_no_process_behind() -> None:
    ports = [str(_free_port()) for _ in range(3)]
    command, env = make_dev_command(*ports)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not any("Ctrl-C stops everything" in line for line in lines):
            line = process.stdout.readline()
            assert line, "make dev exited early:\n" + "".join(lines)
            lines.append(line)
        banner = "".join(lines)
        assert f"http://127.0.0.1:{ports[0]}/login" in banner
        assert f"http://127.0.0.1:{ports[1]}" in banner
        assert f"http://127.0.0.1:{ports[2]}" in banner
        api = f"http://127.0.0.1:{ports[0]}"
        body = postback_body(LOCAL_API_SECRET, order_id="260101000000009")
        assert requests.post(f"{api}/postback", data=body, timeout=TIMEOUT).status_code == 200
        started = _descendants(process.pid)
        assert len(started) >= 2  # the emulator and at least one function worker

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        time.sleep(0.5)
        assert [pid for pid in started if _alive(pid)] == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_make_dev_on_a_taken_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command, env = make_dev_command(str(port), "0", "0")
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert re.search(rf"port {port} \(the local API\) is already in use", result.stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_every_route_of_the_template_is_served_by_its_function(stack: DevStack) -> None:
    from local.gateway import load_routes

    routes = load_routes(ROOT / "template.yaml")
    # The contract's routes; others (a landing page) may join them.
    assert {"GET /login", "GET /callback", "POST /postback"} <= {route.route_key for route in routes}
    for route in routes:
        response = requests.request(
            route.method, f"{stack.api_url}{route.path}", allow_redirects=False, timeout=TIMEOUT
        )
        # Each function answers in its own way (302, 400 page, 400 JSON); never the gateway's 404/502.
        assert response.status_code not in (404, 502), route.route_key
        assert "apigw-requestid" in response.headers
