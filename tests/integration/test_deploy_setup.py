"""`make deploy`'s credentials and region check and `make set-credentials`, against a moto server
over HTTP, run as a person runs them: through make, in a shell without the test's settings."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import closed_port, run_make

ROOT = Path(__file__).resolve().parents[2]
REGION = "ap-south-1"
TIMEOUT = 60
KITE_API_KEY = "kh7q2appkey0001"
KITE_API_SECRET = "kt-deploy-secret-9f3a1c77e2"  # planted: no output may show it
NO_CREDENTIALS = (
    "error: no AWS credentials found: set AWS_PROFILE (a profile in ~/.aws/config) or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def shell(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no AWS or Kite settings, and a home without ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KITE_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # No instance metadata lookup: this is not an EC2 machine, and it would only add seconds.
    return {**env, "HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true", **extra}


def signed_in(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    return shell(
        tmp_path,
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        **extra,
    )


def make(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_make(env, *arguments, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def aws_setup(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """scripts/aws_setup.py run directly, without make, in ``env``."""
    return subprocess.run(
        [sys.executable, "scripts/aws_setup.py", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The helper's single error line; make may add only its own "make: ***" line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    first, *rest = result.stderr.splitlines()
    assert all(line.startswith("make: ***") for line in rest), result.stderr
    return first


def client(endpoint: str, service: str) -> Any:
    make_client: Any = boto3.client
    return make_client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def placeholder_secret(endpoint: str) -> str:
    """A secret as the template creates ApiCredentialsSecret: holding the placeholder."""
    created = client(endpoint, "secretsmanager").create_secret(
        Name=f"t{uuid.uuid4().hex[:10]}/api-credentials",
        SecretString='{"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}',
    )
    return str(created["ARN"])


def stored(endpoint: str, secret_id: str) -> dict[str, str]:
    value = client(endpoint, "secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    parsed: dict[str, str] = json.loads(value)
    return parsed


def kitehooks_stack(endpoint: str, secret_arn: str) -> str:
    """A CloudFormation stack in the emulator whose outputs name the secret, as kitehooks' do.
    (moto's CloudFormation cannot create a secret, so the output names one made beforehand.)"""
    name = f"kh-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"ApiCredentialsSecretArn": {"Value": secret_arn}},
    }
    client(endpoint, "cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


# ---------------------------------------------------------------------------------------------
# The check before a deploy


def test_the_check_names_the_account_and_the_region(tmp_path: Path, moto_endpoint: str) -> None:
    result = make(signed_in(tmp_path, moto_endpoint), "deploy", "-n")  # -n: show, run nothing
    assert result.stdout.splitlines()[0].endswith("scripts/aws_setup.py check")  # first of all
    checked = aws_setup(signed_in(tmp_path, moto_endpoint), "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == (
        "AWS account 123456789012 as arn:aws:sts::123456789012:user/moto, region ap-south-1\n"
    )


def test_make_deploy_without_credentials_stops_at_once_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = make(shell(tmp_path), "deploy")
    assert one_line(result) == NO_CREDENTIALS
    assert "sam" not in result.stdout  # neither built nor asked anything
    assert time.monotonic() - started < 30


def test_an_unknown_profile_is_one_line(tmp_path: Path) -> None:
    result = make(shell(tmp_path, AWS_PROFILE="nobody-here"), "deploy")
    assert one_line(result) == "error: AWS_PROFILE 'nobody-here' is not in ~/.aws/config"


def test_an_unknown_region_is_one_line(tmp_path: Path, moto_endpoint: str) -> None:
    checked = aws_setup(signed_in(tmp_path, moto_endpoint), "check", "--region", "ap-south-9")
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [
        "error: 'ap-south-9' is not an AWS region (ap-south-1 is Mumbai, nearest Kite)"
    ]


def test_no_answer_from_aws_is_one_line_within_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    nobody = f"http://127.0.0.1:{closed_port()}"
    result = make(signed_in(tmp_path, nobody), "deploy")
    assert one_line(result) == (
        "error: cannot reach AWS in ap-south-1 for the credentials check (sts get-caller-identity): "
        "check the network and the region"
    )
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------------------------
# make set-credentials


def test_set_credentials_with_a_secret_id_stores_both_values(tmp_path: Path, moto_endpoint: str) -> None:
    secret = placeholder_secret(moto_endpoint)
    env = signed_in(tmp_path, moto_endpoint, KITE_API_KEY=KITE_API_KEY, KITE_API_SECRET=KITE_API_SECRET)
    result = make(env, "set-credentials", f"SECRET_ID={secret}")
    assert result.returncode == 0, result.stderr
    assert stored(moto_endpoint, secret) == {"api_key": KITE_API_KEY, "api_secret": KITE_API_SECRET}
    assert KITE_API_KEY in result.stdout  # says which app it stored
    assert KITE_API_SECRET not in result.stdout + result.stderr


def test_set_credentials_finds_the_secret_in_the_stacks_outputs(tmp_path: Path, moto_endpoint: str) -> None:
    secret = placeholder_secret(moto_endpoint)
    stack = kitehooks_stack(moto_endpoint, secret)
    env = signed_in(tmp_path, moto_endpoint, KITE_API_KEY=KITE_API_KEY, KITE_API_SECRET=KITE_API_SECRET)
    result = make(env, "set-credentials", f"STACK={stack}")
    assert result.returncode == 0, result.stderr
    assert stored(moto_endpoint, secret)["api_secret"] == KITE_API_SECRET
    assert KITE_API_SECRET not in result.stdout + result.stderr


def test_set_credentials_for_a_stack_that_is_not_there_is_one_line(
    tmp_path: Path, moto_endpoint: str
) -> None:
    env = signed_in(tmp_path, moto_endpoint, KITE_API_KEY=KITE_API_KEY, KITE_API_SECRET=KITE_API_SECRET)
    result = make(env, "set-credentials", "STACK=not-deployed")
    assert one_line(result) == (
        "error: no stack 'not-deployed' in ap-south-1: deploy it first (`make deploy`), "
        "or name it with STACK=.."
    )
    # Without STACK, samconfig.toml's stack name: kitehooks, also not deployed in this emulator.
    default = make(env, "set-credentials")
    assert one_line(default).startswith("error: no stack 'kitehooks' in ap-south-1")


def test_set_credentials_without_credentials_or_values_says_what_is_missing(
    tmp_path: Path, moto_endpoint: str
) -> None:
    secret = placeholder_secret(moto_endpoint)
    no_aws = make(shell(tmp_path, KITE_API_KEY=KITE_API_KEY), "set-credentials", f"SECRET_ID={secret}")
    assert one_line(no_aws) == NO_CREDENTIALS
    # No KITE_API_SECRET and no terminal to ask in: nothing is stored.
    no_secret = make(
        signed_in(tmp_path, moto_endpoint, KITE_API_KEY=KITE_API_KEY),
        "set-credentials",
        f"SECRET_ID={secret}",
    )
    assert one_line(no_secret) == "error: set KITE_API_SECRET, or run this in a terminal to be asked for it"
    placeholder = make(
        signed_in(tmp_path, moto_endpoint, KITE_API_KEY=KITE_API_KEY, KITE_API_SECRET="REPLACE_ME"),
        "set-credentials",
        f"SECRET_ID={secret}",
    )
    assert one_line(placeholder).startswith("error: no usable api_secret")
    assert stored(moto_endpoint, secret) == {"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}


def _read_until(master: int, wanted: bytes, seen: bytearray) -> None:
    deadline = time.monotonic() + TIMEOUT
    while wanted not in seen:
        assert time.monotonic() < deadline, f"never saw {wanted!r} in {bytes(seen)!r}"
        if select.select([master], [], [], 0.5)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return


def _controlling_terminal() -> None:
    # In the child: a session of its own with the pty as its terminal, as in a real shell.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_set_credentials_asks_in_a_terminal_without_echoing_the_secret(
    tmp_path: Path, moto_endpoint: str
) -> None:
    secret = placeholder_secret(moto_endpoint)
    master, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "scripts/aws_setup.py", "set-credentials", "--secret-id", secret],
        cwd=ROOT,
        env=signed_in(tmp_path, moto_endpoint),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        preexec_fn=_controlling_terminal,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        _read_until(master, b"api_key: ", seen)
        os.write(master, KITE_API_KEY.encode() + b"\n")
        _read_until(master, b"(not shown): ", seen)
        os.write(master, KITE_API_SECRET.encode() + b"\n")
        _read_until(master, b"stored api_key", seen)
        _read_until(master, b"\n", seen)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    assert KITE_API_KEY.encode() in seen  # the key is echoed as typed: it is not a secret
    assert KITE_API_SECRET.encode() not in seen
    assert stored(moto_endpoint, secret) == {"api_key": KITE_API_KEY, "api_secret": KITE_API_SECRET}
