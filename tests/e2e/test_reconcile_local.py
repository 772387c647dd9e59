"""`make reconcile` on the local stack (`make dev`'s code path, on free ports): two users log in
through the simulator's login page, a scripted day drops some postbacks, and one run of the
template's ReconcilerFunction (through the local Invoke API) recovers them; a token killed at Kite
ends that user's session through SessionFunction, on the same stack."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import requests

from local.dev import DevStack
from tests.conftest import run_make
from tests.e2e.test_local_stack import aws
from tests.e2e.test_local_stack import stack as stack

TIMEOUT = 90


def stored(stack: DevStack, user_id: str) -> dict[str, Any]:
    value = aws(stack, "secretsmanager").get_secret_value(SecretId=f"{stack.session_prefix}/{user_id}")
    session: dict[str, Any] = json.loads(value["SecretString"])
    return session


def simulator(stack: DevStack, path: str, body: dict[str, Any]) -> Any:
    answer = requests.post(f"{stack.kite_url}{path}", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def log_in_as(stack: DevStack, user_id: str) -> None:
    """The browser login, with the simulator told which Kite user is at its login page."""
    simulator(stack, "/__sim/control", {"login_user_id": user_id})
    page = requests.Session().get(f"{stack.api_url}/login", timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    assert stored(stack, user_id)["status"] == "active"


def reconcile(stack: DevStack) -> list[str]:
    result = run_make({**os.environ, "KITEHOOKS_API_URL": stack.api_url}, "reconcile", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout
    return lines


def source_counts(stack: DevStack) -> dict[str, int]:
    sqs, url = aws(stack, "sqs"), stack.resources["OrderUpdatesQueue"]["Ref"]
    counts: dict[str, int] = {}
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        for message in batch:
            source = message["MessageAttributes"]["source"]["StringValue"]
            counts[source] = counts.get(source, 0) + 1
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return counts


def test_make_reconcile_recovers_dropped_postbacks_and_a_dead_token_ends_its_session(stack: DevStack) -> None:
    log_in_as(stack, "AB1234")
    log_in_as(stack, "CD5678")
    # As `make orders` plays it: Kite's timestamps are now's. The local grace is a few seconds.
    assert stack.gateway.functions["ReconcilerFunction"].environment["RECONCILER_GRACE_SECONDS"] == "5"
    day = simulator(
        stack,
        "/__sim/orders/day",
        {"orders": 20, "seed": 4, "drop_share": 0.3, "users": ["AB1234", "CD5678"]},
    )
    assert day["postbacks"]["dropped"] > 0
    time.sleep(6)

    polled, recovered = reconcile(stack)
    assert polled.startswith("2 of 2 session(s) polled (0 inactive, 0 not reached, 0 token refused")
    count = int(recovered.split(": ")[1].split(" state(s) recovered")[0])
    assert count > 0
    assert source_counts(stack).get("reconciler") == count
    assert reconcile(stack)[1].split(": ")[1].startswith("0 state(s) recovered")

    # A login elsewhere ends CD5678's token at Kite: the run hands it to SessionFunction's check.
    assert simulator(stack, "/__sim/kill", {"user_id": "CD5678"}) == {"killed": 1}
    polled, _ = reconcile(stack)
    assert polled.startswith("1 of 2 session(s) polled (0 inactive, 0 not reached, 1 token refused")
    until = time.monotonic() + 30
    while stored(stack, "CD5678")["status"] == "active":
        assert time.monotonic() < until, "SessionFunction never marked the dead session"
        time.sleep(0.2)
    assert stored(stack, "CD5678")["status"] == "expired"
    assert stored(stack, "AB1234")["status"] == "active"
