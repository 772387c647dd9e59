"""Small commands against the running local stack (`make postback`, `make queue`, `make sessions`,
`make logout`, `make session-status`, `make expire`).

They talk to it over HTTP only: the local API for postbacks, the AWS emulator for the queue and
the session secrets, and Lambda's Invoke API on the local API's port for SessionFunction, so
logout, status and expire run the same function code as deployed. Tokens are never printed:
sessions show who and until when, not what.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from local.samples import LOCAL_API_SECRET, postback_body

LOCAL_STACK = "kitehooks-local"
DEFAULT_API_URL = "http://127.0.0.1:3000"
DEFAULT_AWS_URL = "http://127.0.0.1:5000"
SESSION_PREFIX = f"{LOCAL_STACK}/sessions"
# Functions run under their logical id locally, as with sam local.
SESSION_FUNCTION = "SessionFunction"
_TOKEN_FIELDS = ("access_token", "public_token", "refresh_token")


def _aws(service: str, endpoint: str) -> Any:
    import boto3

    make_client: Any = boto3.client  # the service name is a variable here, not a literal
    return make_client(
        service,
        endpoint_url=endpoint,
        region_name="ap-south-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the emulator accepts any credentials
    )


def invoke_session_function(api_url: str, event: dict[str, Any]) -> int:
    """Invoke the local SessionFunction with ``event`` and print its JSON answer.

    0 when it did what was asked, 1 when it refused or failed (its answer says why), 2 when the
    local stack cannot be reached.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    client: Any = boto3.client(
        "lambda",
        endpoint_url=api_url,
        region_name="ap-south-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local stack accepts any credentials
        # One attempt: a logout must not be sent twice. SessionFunction may take up to its 120 s.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=130),
    )
    try:
        answer = client.invoke(FunctionName=SESSION_FUNCTION, Payload=json.dumps(event).encode())
        result = json.loads(answer["Payload"].read())
    except EndpointConnectionError:
        print(f"error: cannot reach the local stack at {api_url}; is `make dev` running?", file=sys.stderr)
        return 2
    except ClientError as error:
        reason = error.response.get("Error", {})
        print(f"error: {api_url} answered {reason.get('Code')}: {reason.get('Message')}", file=sys.stderr)
        return 2
    except (BotoCoreError, ValueError) as error:
        print(
            f"error: no answer from {SESSION_FUNCTION} at {api_url} ({type(error).__name__})", file=sys.stderr
        )
        return 2
    print(json.dumps(result, indent=2))
    if answer.get("FunctionError") or not (isinstance(result, dict) and result.get("ok")):
        return 1
    return 0


def send_postback(api_url: str, api_secret: str, status: str, order_id: str | None) -> int:
    fields: dict[str, Any] = {"status": status}
    if order_id:
        fields["order_id"] = order_id
    request = urllib.request.Request(  # noqa: S310 - a URL the user gave, http(s) only
        f"{api_url.rstrip('/')}/postback",
        data=postback_body(api_secret, **fields),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status_code, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status_code, text = error.code, error.read().decode()
    except urllib.error.URLError as error:
        print(f"error: cannot reach {api_url} ({error.reason}); is `make dev` running?", file=sys.stderr)
        return 2
    print(f"POST /postback -> {status_code} {text}")
    return 0 if status_code < 300 else 1


def show_queue(aws_url: str) -> int:
    sqs = _aws("sqs", aws_url)
    urls = sqs.list_queues(QueueNamePrefix=LOCAL_STACK).get("QueueUrls", [])
    if not urls:
        print(f"error: no queues of {LOCAL_STACK} at {aws_url}; is `make dev` running?", file=sys.stderr)
        return 2
    for url in urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        print(f"{url}: {attributes['Attributes']['ApproximateNumberOfMessages']} message(s)")
        # Peek: a zero visibility timeout leaves the messages for the real consumer.
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
        ).get("Messages", [])
        for message in messages:
            order = json.loads(message["Body"])
            attributes = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
            print(
                f"  group={message['Attributes'].get('MessageGroupId')} status={attributes.get('status')} "
                f"user={attributes.get('user_id')} symbol={order.get('tradingsymbol')} "
                f"dedup={message['Attributes'].get('MessageDeduplicationId', '')[:12]}..."
            )
    return 0


def show_sessions(aws_url: str) -> int:
    secrets = _aws("secretsmanager", aws_url)
    listing = secrets.list_secrets(Filters=[{"Key": "name", "Values": [f"{SESSION_PREFIX}/"]}])
    names = sorted(s["Name"] for s in listing.get("SecretList", []) if s["Name"].startswith(SESSION_PREFIX))
    if not names:
        print("no sessions yet: log in at http://127.0.0.1:3000/login")
        return 0
    for name in names:
        session = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
        shown = {k: v for k, v in session.items() if k not in _TOKEN_FIELDS}
        tokens = ", ".join(f"{k} {'set' if session.get(k) else 'empty'}" for k in _TOKEN_FIELDS)
        print(f"{name}: {json.dumps(shown)} ({tokens})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local.tools", description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=os.environ.get("KITEHOOKS_API_URL", DEFAULT_API_URL))
    parser.add_argument("--aws-url", default=os.environ.get("KITEHOOKS_AWS_URL", DEFAULT_AWS_URL))
    commands = parser.add_subparsers(dest="command", required=True)
    postback = commands.add_parser("postback", help="send a signed sample postback")
    postback.add_argument("--status", default="COMPLETE")
    postback.add_argument("--order-id")
    postback.add_argument("--secret", default=os.environ.get("KITE_API_SECRET", LOCAL_API_SECRET))
    commands.add_parser("queue", help="show the order-update queue")
    commands.add_parser("sessions", help="show stored sessions, without their tokens")
    for name, help_text in (
        ("logout", "end a session at Kite and mark it revoked (SessionFunction)"),
        ("session-status", "a session's status, expires_at and login_time (SessionFunction)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--user", required=True, help="the Kite user id, e.g. AB1234")
    commands.add_parser("expire", help="mark sessions past 06:00 IST expired (SessionFunction)")
    args = parser.parse_args(argv)
    if args.command == "postback":
        return send_postback(args.api_url, args.secret, args.status, args.order_id)
    if args.command == "queue":
        return show_queue(args.aws_url)
    if args.command == "logout":
        return invoke_session_function(args.api_url, {"action": "logout", "user_id": args.user})
    if args.command == "session-status":
        return invoke_session_function(args.api_url, {"action": "status", "user_id": args.user})
    if args.command == "expire":
        return invoke_session_function(args.api_url, {"action": "expire"})
    return show_sessions(args.aws_url)


if __name__ == "__main__":
    sys.exit(main())
