"""`make deploy`'s first step and `make set-credentials`, with the venv's boto3 (no AWS CLI needed).

    python scripts/aws_setup.py check [--region R]
    python scripts/aws_setup.py set-credentials [--stack S | --secret-id ID] [--region R]

``check`` asks STS who the credentials belong to (GetCallerIdentity, a few seconds at most) in the
region ``sam deploy`` will use, so a missing or refused credential, an unknown region or no network
is one line before any build or prompt. ``set-credentials`` puts the Kite app's api_key and
api_secret into the stack's ApiCredentialsSecret: from KITE_API_KEY / KITE_API_SECRET, else asked
for (the secret without echo). The secret is never printed. The region defaults to samconfig.toml's,
the stack name too; boto3's own AWS_ENDPOINT_URL is honoured (the tests use a moto server).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMCONFIG = ROOT / "samconfig.toml"
DEFAULT_STACK = "kitehooks"
# The template's placeholder (kitehooks.credentials.PLACEHOLDER): functions refuse while it is there.
PLACEHOLDER = "REPLACE_ME"
CREDENTIALS_OUTPUT = "ApiCredentialsSecretArn"  # the template output naming the secret
CREDENTIALS_HELP = (
    "set AWS_PROFILE (a profile in ~/.aws/config) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


class SetupError(Exception):
    """What went wrong, as the one line to print."""


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str
    region: str


def samconfig_value(name: str, path: Path = SAMCONFIG) -> str | None:
    """``name`` as `sam deploy` reads it from samconfig.toml: deploy's parameters, then global ones."""
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    default = config.get("default", {})
    for section in ("deploy", "global"):
        value = default.get(section, {}).get("parameters", {}).get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _client(service: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    make_client: Any = boto3.client  # the service name is a variable here, not a literal
    # Short: an unreachable endpoint is reported in seconds, not after minutes of retries.
    config = Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2})
    return make_client(service, region_name=region, config=config)


def _region(given: str | None) -> str:
    import boto3

    region = given or samconfig_value("region") or boto3.session.Session().region_name
    if not region:
        raise SetupError("no AWS region: set region in samconfig.toml, or AWS_REGION")
    known = boto3.session.Session().get_available_regions("cloudformation")
    if region not in known:
        raise SetupError(f"{region!r} is not an AWS region (ap-south-1 is Mumbai, nearest Kite)")
    return region


def _describe(error: Exception, region: str, what: str) -> SetupError:
    """One line for a botocore failure; never the request (it may carry a secret value)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return SetupError(f"no AWS credentials found: {CREDENTIALS_HELP}")
    if isinstance(error, ProfileNotFound):
        return SetupError(f"AWS_PROFILE {os.environ.get('AWS_PROFILE')!r} is not in ~/.aws/config")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return SetupError(f"cannot reach AWS in {region} for {what}: check the network and the region")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"):
            return SetupError(f"AWS refused the credentials ({code}): {CREDENTIALS_HELP}")
        if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            return SetupError(f"the AWS credentials have expired ({code}): renew them (e.g. sso login)")
        message = error.response.get("Error", {}).get("Message", "")
        return SetupError(f"AWS refused {what} in {region} ({code}): {message}")
    return SetupError(f"{what} failed in {region}: {type(error).__name__}: {error}")


def check(region: str | None = None) -> Identity:
    """Whose credentials these are, in the region deploys go to; SetupError when unusable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        chosen = _region(region)
    except BotoCoreError as error:  # e.g. an AWS_PROFILE that is not configured
        raise _describe(error, region or "?", "reading the AWS configuration") from None
    try:
        answer = _client("sts", chosen).get_caller_identity()
    except (BotoCoreError, ClientError) as error:
        raise _describe(error, chosen, "the credentials check (sts get-caller-identity)") from None
    return Identity(str(answer["Account"]), str(answer["Arn"]), chosen)


def stack_secret_id(stack: str, region: str) -> str:
    """The stack's ApiCredentialsSecret, from its outputs."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = _client("cloudformation", region).describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        if "does not exist" in error.response.get("Error", {}).get("Message", ""):
            raise SetupError(
                f"no stack {stack!r} in {region}: deploy it first (`make deploy`), or name it with STACK=.."
            ) from None
        raise _describe(error, region, f"reading stack {stack}") from None
    except BotoCoreError as error:
        raise _describe(error, region, f"reading stack {stack}") from None
    outputs: dict[str, str] = {
        str(output["OutputKey"]): str(output["OutputValue"])
        for described in stacks
        for output in described.get("Outputs", [])
    }
    if CREDENTIALS_OUTPUT not in outputs:
        raise SetupError(f"stack {stack!r} in {region} has no {CREDENTIALS_OUTPUT} output: is it kitehooks?")
    return outputs[CREDENTIALS_OUTPUT]


def _value(variable: str, prompt: str, *, hidden: bool) -> str:
    value = os.environ.get(variable, "")
    if not value:
        if not sys.stdin.isatty():
            raise SetupError(f"set {variable}, or run this in a terminal to be asked for it")
        try:
            value = getpass.getpass(prompt) if hidden else input(prompt)
        except EOFError:
            value = ""
    value = value.strip()
    if not value or value == PLACEHOLDER or any(char.isspace() for char in value):
        raise SetupError(
            f"no usable {variable.removeprefix('KITE_').lower()}: give the one Kite shows for your app"
        )
    return value


def set_credentials(stack: str | None, secret_id: str | None, region: str | None) -> str:
    """Store the Kite app's credentials in the stack's secret; the line to print."""
    from botocore.exceptions import BotoCoreError, ClientError

    identity = check(region)
    target = secret_id or stack_secret_id(
        stack or samconfig_value("stack_name") or DEFAULT_STACK, identity.region
    )
    api_key = _value("KITE_API_KEY", "Kite app's api_key: ", hidden=False)
    api_secret = _value("KITE_API_SECRET", "Kite app's api_secret (not shown): ", hidden=True)
    value = json.dumps({"api_key": api_key, "api_secret": api_secret})
    try:
        _client("secretsmanager", identity.region).put_secret_value(SecretId=target, SecretString=value)
    except (BotoCoreError, ClientError) as error:
        raise _describe(error, identity.region, f"storing the credentials in {target}") from None
    return (
        f"stored api_key {api_key} and its api_secret in {target}; "
        "running functions read them within 5 minutes (their cache), new ones at once"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/aws_setup.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check_command = commands.add_parser("check", help="the AWS credentials and region sam deploy will use")
    check_command.add_argument("--region", help="default: samconfig.toml's")
    store = commands.add_parser("set-credentials", help="put the Kite app's api_key/api_secret in the stack")
    store.add_argument("--region", help="default: samconfig.toml's")
    which = store.add_mutually_exclusive_group()
    which.add_argument("--stack", help="default: samconfig.toml's stack_name, else kitehooks")
    which.add_argument("--secret-id", help="the secret's name or ARN, instead of the stack's output")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            identity = check(args.region)
            print(f"AWS account {identity.account} as {identity.arn}, region {identity.region}")
        else:
            print(set_credentials(args.stack, args.secret_id, args.region))
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nerror: interrupted; nothing stored", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
