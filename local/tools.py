"""Small commands against the running local stack (`make postback`, `make queue`, `make sessions`,
`make logout`, `make session-status`, `make expire`, `make reconcile`).

They talk to it over HTTP only: the local API for postbacks, the AWS emulator for the queue and
the session secrets, and Lambda's Invoke API on the local API's port for SessionFunction, so
logout, status and expire run the same function code as deployed. Tokens are never printed:
sessions show who and until when, not what.

They find the stack through the state file `make dev` writes (local/dev_state.py), so the ports
given in DEV_ARGS are followed; ``--api-url``/``--aws-url`` (or KITEHOOKS_API_URL /
KITEHOOKS_AWS_URL) name a stack explicitly. Without a running stack each fails with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from local.dev_state import DevState, StackNotRunning, read_state
from local.samples import LOCAL_API_SECRET, postback_body

LOCAL_STACK = "kitehooks-local"
SESSION_PREFIX = f"{LOCAL_STACK}/sessions"
REGION = "ap-south-1"
# Functions run under their logical id locally, as with sam local.
SESSION_FUNCTION = "SessionFunction"
RECONCILER_FUNCTION = "ReconcilerFunction"
_TOKEN_FIELDS = ("access_token", "public_token", "refresh_token")


class _Unreachable(Exception):
    """The emulator did not answer; the message is the one line to print."""


@dataclass(frozen=True)
class _Target:
    """Where the stack is: from the command line, else from `make dev`'s state file."""

    api_url: str
    aws_url: str
    stack_name: str = LOCAL_STACK
    session_prefix: str = SESSION_PREFIX
    credentials_secret: str | None = None


def _target(api_url: str | None, aws_url: str | None, *, needs: tuple[str, ...]) -> _Target:
    """The stack to talk to. The state file is read only when a URL the command ``needs`` was not
    given, so an explicit --api-url works without it; StackNotRunning when it is needed and absent."""
    given = {"api": api_url, "aws": aws_url}
    state: DevState | None = None
    if any(given[name] is None for name in needs):
        state = read_state()
    if state is None:
        return _Target(api_url or "", aws_url or "")
    return _Target(
        api_url or state.api_url,
        aws_url or state.aws_url,
        state.stack_name,
        state.session_prefix,
        state.credentials_secret,
    )


def _aws(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    make_client: Any = boto3.client  # the service name is a variable here, not a literal
    return make_client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the emulator accepts any credentials
        # A stopped emulator is reported at once, not after botocore's retries.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=30),
    )


@contextmanager
def _emulator_errors(aws_url: str) -> Iterator[None]:
    """botocore's failures as one line naming the emulator, not a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    try:
        yield
    except EndpointConnectionError:
        raise _Unreachable(f"cannot reach the AWS emulator at {aws_url}; is `make dev` running?") from None
    except ClientError as error:
        reason = error.response.get("Error", {})
        raise _Unreachable(
            f"the AWS emulator at {aws_url} answered {reason.get('Code')}: {reason.get('Message')}"
        ) from None
    except BotoCoreError as error:
        raise _Unreachable(f"no answer from the AWS emulator at {aws_url} ({type(error).__name__})") from None


def _stack_api_secret(target: _Target) -> str | None:
    """The api_secret the running stack's functions check postbacks with, from its emulator."""
    if target.credentials_secret is None:
        return None
    with _emulator_errors(target.aws_url):
        value = _aws("secretsmanager", target.aws_url).get_secret_value(SecretId=target.credentials_secret)
    try:
        secret = json.loads(value["SecretString"])["api_secret"]
    except (KeyError, TypeError, ValueError):
        return None
    return secret if isinstance(secret, str) else None


def _invoke_local(api_url: str, function: str, payload: bytes, read_timeout: float) -> tuple[bool, Any] | int:
    """One invoke of a local function through the local Invoke API, once (never retried: a logout
    must not be sent twice): ``(function failed, its answer)``, or 2 when no answer came (said on
    stderr in one line)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    client: Any = boto3.client(
        "lambda",
        endpoint_url=api_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local stack accepts any credentials
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=read_timeout),
    )
    try:
        answer = client.invoke(FunctionName=function, Payload=payload)
        result = json.loads(answer["Payload"].read())
    except EndpointConnectionError:
        print(f"error: cannot reach the local stack at {api_url}; is `make dev` running?", file=sys.stderr)
        return 2
    except ClientError as error:
        reason = error.response.get("Error", {})
        print(f"error: {api_url} answered {reason.get('Code')}: {reason.get('Message')}", file=sys.stderr)
        return 2
    except (BotoCoreError, ValueError) as error:
        print(f"error: no answer from {function} at {api_url} ({type(error).__name__})", file=sys.stderr)
        return 2
    return bool(answer.get("FunctionError")), result


def invoke_session_function(api_url: str, event: dict[str, Any]) -> int:
    """Invoke the local SessionFunction with ``event`` and print its JSON answer.

    0 when it did what was asked, 1 when it refused or failed (its answer says why), 2 when the
    local stack cannot be reached.
    """
    # SessionFunction may take up to its 120 s Timeout.
    invoked = _invoke_local(api_url, SESSION_FUNCTION, json.dumps(event).encode(), read_timeout=130)
    if isinstance(invoked, int):
        return invoked
    failed, result = invoked
    print(json.dumps(result, indent=2))
    if failed or not (isinstance(result, dict) and result.get("ok")):
        return 1
    return 0


def run_reconciler(api_url: str) -> int:
    """Invoke the local ReconcilerFunction once, as its market-hours schedule does, and print what
    the run did in two lines. 0 when it ran, 1 when it failed, 2 when the stack cannot be reached."""
    # The function's Timeout is 50 s.
    invoked = _invoke_local(api_url, RECONCILER_FUNCTION, b'{"source": "make reconcile"}', read_timeout=70)
    if isinstance(invoked, int):
        return invoked
    failed, result = invoked
    if failed or not isinstance(result, dict):
        print(f"reconciliation failed: {json.dumps(result)}", file=sys.stderr)
        return 1
    print(
        f"{result['polled']} of {result['sessions']} session(s) polled ({result['inactive']} inactive, "
        f"{result['not_reached']} not reached, {len(result['token_invalid'])} token refused, "
        f"{len(result['failed'])} failed); {result['kite_calls']} Kite call(s), "
        f"{result['rate_limited']} answered 429"
    )
    print(
        f"{result['orders_seen']} order(s) in Kite's book, {result['histories']} history(ies) read: "
        f"{result['recovered']} state(s) recovered to the queue, {result['confirmed']} postback(s) "
        f"confirmed, {result['unconfirmed']} unconfirmed; {result['waiting']} order(s) wait for a "
        "later run (Kite's time within the grace)"
    )
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


def show_queue(aws_url: str, stack_name: str = LOCAL_STACK) -> int:
    sqs = _aws("sqs", aws_url)
    with _emulator_errors(aws_url):
        urls = sqs.list_queues(QueueNamePrefix=stack_name).get("QueueUrls", [])
        if not urls:
            print(f"error: no queues of {stack_name} at {aws_url}; is `make dev` running?", file=sys.stderr)
            return 2
        _print_queues(sqs, urls)
    return 0


def _print_queues(sqs: Any, urls: list[str]) -> None:
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


def show_sessions(aws_url: str, session_prefix: str = SESSION_PREFIX, api_url: str | None = None) -> int:
    secrets = _aws("secretsmanager", aws_url)
    with _emulator_errors(aws_url):
        listing = secrets.list_secrets(Filters=[{"Key": "name", "Values": [f"{session_prefix}/"]}])
        names = sorted(
            s["Name"] for s in listing.get("SecretList", []) if s["Name"].startswith(f"{session_prefix}/")
        )
        if not names:
            print(
                f"no sessions yet: log in at {api_url}/login" if api_url else "no sessions yet: log in first"
            )
            return 0
        _print_sessions(secrets, names)
    return 0


def _print_sessions(secrets: Any, names: list[str]) -> None:
    for name in names:
        session = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
        shown = {k: v for k, v in session.items() if k not in _TOKEN_FIELDS}
        tokens = ", ".join(f"{k} {'set' if session.get(k) else 'empty'}" for k in _TOKEN_FIELDS)
        print(f"{name}: {json.dumps(shown)} ({tokens})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local.tools", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api-url",
        default=os.environ.get("KITEHOOKS_API_URL"),
        help="the local API (default: the running `make dev`'s, from its state file)",
    )
    parser.add_argument(
        "--aws-url",
        default=os.environ.get("KITEHOOKS_AWS_URL"),
        help="the AWS emulator (default: the running `make dev`'s, from its state file)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    postback = commands.add_parser("postback", help="send a signed sample postback")
    postback.add_argument("--status", default="COMPLETE")
    postback.add_argument("--order-id")
    postback.add_argument(
        "--secret",
        help="the api_secret to sign with (default: the running stack's, else KITE_API_SECRET, "
        "else the local default)",
    )
    commands.add_parser("queue", help="show the order-update queue")
    commands.add_parser("sessions", help="show stored sessions, without their tokens")
    for name, help_text in (
        ("logout", "end a session at Kite and mark it revoked (SessionFunction)"),
        ("session-status", "a session's status, expires_at and login_time (SessionFunction)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--user", required=True, help="the Kite user id, e.g. AB1234")
    commands.add_parser("expire", help="mark sessions past 06:00 IST expired (SessionFunction)")
    commands.add_parser("reconcile", help="reconcile the sessions' orders with Kite (ReconcilerFunction)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (StackNotRunning, _Unreachable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command in ("queue", "sessions"):
        target = _target(args.api_url, args.aws_url, needs=("aws",))
        if args.command == "queue":
            return show_queue(target.aws_url, target.stack_name)
        return show_sessions(target.aws_url, target.session_prefix, target.api_url or None)
    target = _target(args.api_url, args.aws_url, needs=("api",))
    if args.command == "postback":
        secret = (
            args.secret or _stack_api_secret(target) or os.environ.get("KITE_API_SECRET") or LOCAL_API_SECRET
        )
        return send_postback(target.api_url, secret, args.status, args.order_id)
    if args.command == "logout":
        return invoke_session_function(target.api_url, {"action": "logout", "user_id": args.user})
    if args.command == "session-status":
        return invoke_session_function(target.api_url, {"action": "status", "user_id": args.user})
    if args.command == "reconcile":
        return run_reconciler(target.api_url)
    return invoke_session_function(target.api_url, {"action": "expire"})


if __name__ == "__main__":
    sys.exit(main())
