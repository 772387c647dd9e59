"""kitehooks' EventBridge events as a subscriber sees them: a rule on the moto server's default bus
that sends every event with source ``kitehooks`` to a queue, read back by the tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3


@dataclass
class EventCapture:
    queue_url: str
    rule: str

    def events(self, settle_seconds: float = 0.3) -> list[dict[str, Any]]:
        """Every event delivered so far, oldest first (drains the queue)."""
        sqs = boto3.client("sqs")
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + settle_seconds
        while True:
            answer = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = answer.get("Messages", [])
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            if not messages and time.monotonic() >= deadline:
                return sorted(found, key=lambda event: str(event["detail"].get("at", "")))

    def of_type(self, detail_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events() if event["detail-type"] == detail_type]

    def ended(self) -> list[dict[str, Any]]:
        return self.of_type("Kite session ended")


def capture_events() -> Iterator[EventCapture]:
    """A fixture's body: the rule and its queue while the test runs (AWS pointed at the emulator)."""
    sqs = boto3.client("sqs")
    events = boto3.client("events")
    name = f"kitehooks-events-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name=name, EventBusName="default", EventPattern=json.dumps({"source": ["kitehooks"]}))
    events.put_targets(Rule=name, EventBusName="default", Targets=[{"Id": "capture", "Arn": queue_arn}])
    yield EventCapture(queue_url, name)
    events.remove_targets(Rule=name, EventBusName="default", Ids=["capture"])
    events.delete_rule(Name=name, EventBusName="default")
