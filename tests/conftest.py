"""Fixtures shared by the test tiers: a moto server over HTTP, the template's resources in it,
and handlers loaded the way Lambda loads them."""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from moto.server import ThreadedMotoServer

# As the template sets them for every function; set before any handler module is imported.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kitehooks")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "kitehooks")

from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues, provision

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
REGION = "ap-south-1"
TEST_API_KEY = "kitehooks_test_key"
TEST_API_SECRET = "kt-secret-5c1d9e0a7b"  # planted: tests scan output for it


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server per test session, reached over HTTP like real AWS."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def point_boto3_at(patch: pytest.MonkeyPatch, endpoint: str) -> None:
    """boto3 (and so every handler) reaches ``endpoint`` through its own AWS_ENDPOINT_URL setting,
    with no per-service endpoint or profile left over from the environment."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_LAMBDA",
        "AWS_ENDPOINT_URL_EVENTBRIDGE",
    ):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_REGION", REGION)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 at the moto server for one test."""
    point_boto3_at(monkeypatch, moto_endpoint)
    return moto_endpoint


@pytest.fixture
def stack(aws_env: str) -> ResourceValues:
    """The template's queues, bucket and secrets, made fresh for each test under its own name."""
    credentials = f'{{"api_key": "{TEST_API_KEY}", "api_secret": "{TEST_API_SECRET}"}}'
    return provision(
        TEMPLATE,
        stack_name=f"t{uuid.uuid4().hex[:10]}",
        region=REGION,
        secret_values={"ApiCredentialsSecret": credentials},
    )


def load_function(name: str) -> ModuleType:
    """Import ``functions/<name>/app.py`` under a unique module name (every handler is ``app``)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"kitehooks_function_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def service_logs() -> Iterator[io.StringIO]:
    """Everything the Powertools logger of the service writes during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    service_logger = logging.getLogger("kitehooks")
    for existing in service_logger.handlers:  # the Powertools JSON formatter, extra keys included
        handler.setFormatter(existing.formatter)
    service_logger.addHandler(handler)
    yield stream
    service_logger.removeHandler(handler)


@dataclass
class FakeLambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str = "kitehooks-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:ap-south-1:123456789012:function:kitehooks-test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def reset_layer_caches() -> None:
    """Forget per-container state, as a new container would."""
    from kitehooks import aws, config, credentials
    from kitehooks.postbacks import receiver

    for cached in (
        config.credentials_settings,
        config.postback_settings,
        config.login_settings,
        config.callback_settings,
        config.session_settings,
        credentials.credentials_store,
        receiver.receiver,
        aws.sqs_client,
        aws.s3_client,
        aws.secretsmanager_client,
        aws.dynamodb_client,
        aws.events_client,
        aws.lambda_client,
    ):
        cached.cache_clear()


def callback_settings(
    stack: ResourceValues, kite_url: str, session_prefix: str, kite_read_timeout: str
) -> dict[str, str]:
    """The login and callback functions' settings as template.yaml gives them, against the Kite
    at ``kite_url``: every user allowed, a login state good for ten minutes."""
    return {
        "API_CREDENTIALS_SECRET_ID": stack["ApiCredentialsSecret"]["Ref"],
        "KITE_LOGIN_URL": f"{kite_url}/connect/login",
        "KITE_API_ROOT": kite_url,
        "SESSION_PREFIX": session_prefix,
        "LOGIN_STATES_TABLE": stack["LoginStatesTable"]["Ref"],
        "ALLOWED_USER_IDS": "",
        "KITE_READ_TIMEOUT_SECONDS": kite_read_timeout,
        "LOGIN_STATE_TTL_SECONDS": "600",
    }


def lambda_child_environment(moto: str, **variables: str) -> dict[str, str]:
    """The environment for a handler run by tests/lambda_child.py: this process's, less its own AWS,
    Powertools, Kite and PYTHONPATH settings, pointed at moto, with the Powertools names the
    template gives every function; ``variables`` (the function's own) on top."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "KITE_")) and key != "PYTHONPATH"
    }
    environment.update(
        AWS_ENDPOINT_URL=moto,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        POWERTOOLS_SERVICE_NAME="kitehooks",
        POWERTOOLS_METRICS_NAMESPACE="kitehooks",
    )
    environment.update(variables)
    return environment


def lambda_child_command(function: str, timeout: float) -> list[str]:
    """The command that runs ``functions/<function>``'s handler in an interpreter of its own, with
    only its folder and the layer importable, stopped at ``timeout`` seconds as Lambda would."""
    return [
        sys.executable,
        "-I",
        str(ROOT / "tests" / "lambda_child.py"),
        str(ROOT / "functions" / function),
        str(ROOT / "layers" / "kitehooks"),
        str(timeout),
    ]


def closed_port() -> int:
    """A local port with nothing listening: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[KiteSimulator]:
    """A Kite simulator for this test's app credentials, redirecting to a callback nobody serves;
    an approved platform, so sessions carry refresh tokens to renew and revoke."""
    with KiteSimulator(
        api_key=TEST_API_KEY,
        api_secret=TEST_API_SECRET,
        redirect_url="https://kitehooks.example/callback",
        approved_platform=True,
    ) as simulator:
        yield simulator


def fresh_request_token(sim: KiteSimulator) -> str:
    """Log in at the simulator as a browser would and take the request_token off the redirect."""
    location = requests.get(sim.login_url(), allow_redirects=False, timeout=5).headers["Location"]
    return parse_qs(urlsplit(location).query)["request_token"][0]


def as_a_user_runs_make(environment: dict[str, str]) -> dict[str, str]:
    """``environment`` without what an enclosing ``make test`` passes down (MAKELEVEL and the
    flags), so a helper run by a test prints "make: ***" as it does in a user's shell, not
    "make[1]: ***"."""
    passed_down = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    return {key: value for key, value in environment.items() if key not in passed_down}


def run_make(
    environment: dict[str, str], *arguments: str, timeout: float, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``make`` in the project, as a user runs it in ``environment``; its output captured."""
    return subprocess.run(
        # -o: the venv is there already; do not let make reinstall it.
        ["make", "--no-print-directory", "-o", ".venv/.installed", *arguments],
        cwd=ROOT,
        env=as_a_user_runs_make(environment),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
