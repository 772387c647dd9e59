"""`make dev`: the whole of kitehooks on this machine, without Docker.

Starts an AWS emulator (moto server), creates in it the queues, bucket, table and secrets that
``template.yaml`` declares, starts the Kite simulator with its redirect URL pointing at the local
callback, and serves the template's routes through the local API gateway. Ctrl-C or SIGTERM
stops every process it started.

Settings (environment): KITE_API_KEY / KITE_API_SECRET (the app's credentials the simulator and
the functions share; defaults ``kitehooks_local_key`` / ``kitehooks_local_secret``) and
KITE_SIM_USER_ID (the Kite user who logs in; default ``AB1234``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from local.dev_state import DevState, remove_state, state_path, write_state
from local.gateway import GatewayError, LocalGateway
from local.kite_simulator import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_USER_ID,
    KiteSimulator,
    SimulatorStartError,
)
from local.provision import ResourceValues, provision

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
STACK_NAME = "kitehooks-local"
REGION = "ap-south-1"
HOST = "127.0.0.1"
LOCAL_RECONCILER_GRACE_SECONDS = "5"
# The emulator takes any credentials; these only keep boto3 from looking for real ones.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class DevStackError(RuntimeError):
    """The stack could not start; the message says why and what to do."""


@dataclass
class DevPorts:
    api: int = 3000
    aws: int = 5000
    kite: int = 5100


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _check_free(port: int, what: str, option: str, host: str = HOST) -> None:
    with socket.socket() as probe:
        # As the servers bind (http.server and werkzeug set SO_REUSEADDR): connections a stopped
        # stack left in TIME_WAIT do not block a restart, while a listening socket still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise DevStackError(
                f"port {port} ({what}) is already in use: stop what uses it, or pick another with {option}"
            ) from None


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(f"{what} exited with code {process.returncode} while starting")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise DevStackError(f"{what} did not start listening on port {port} within {timeout:.0f} s")


@dataclass
class DevStack:
    """The local stack; ``port 0`` in ``ports`` picks a free port (as the tests do)."""

    ports: DevPorts = field(default_factory=DevPorts)
    api_key: str = DEFAULT_API_KEY
    api_secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    user_id: str = DEFAULT_USER_ID
    template: Path = TEMPLATE
    stack_name: str = STACK_NAME
    # Where the emulator and the simulator listen. 0.0.0.0 lets `sam local` containers reach
    # them (through host.docker.internal); the default keeps them private to this machine.
    bind_host: str = HOST
    resources: ResourceValues = field(default_factory=dict)
    _emulator: subprocess.Popen[bytes] | None = None
    _simulator: KiteSimulator | None = None
    _gateway: LocalGateway | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.ports.api}"

    @property
    def aws_url(self) -> str:
        return f"http://{HOST}:{self.ports.aws}"

    @property
    def kite_url(self) -> str:
        return f"http://{HOST}:{self.ports.kite}"

    @property
    def session_prefix(self) -> str:
        return f"{self.stack_name}/sessions"

    @property
    def gateway(self) -> LocalGateway:
        assert self._gateway is not None, "the stack is not started"
        return self._gateway

    @property
    def simulator(self) -> KiteSimulator:
        assert self._simulator is not None, "the stack is not started"
        return self._simulator

    @property
    def emulator_pid(self) -> int | None:
        return self._emulator.pid if self._emulator else None

    def start(self) -> Self:
        for name, what, option, host in (
            ("api", "the local API", "--api-port", HOST),
            ("aws", "the AWS emulator", "--aws-port", self.bind_host),
            ("kite", "the Kite simulator", "--kite-port", self.bind_host),
        ):
            port = getattr(self.ports, name)
            if port == 0:
                setattr(self.ports, name, _free_port())
            else:
                _check_free(port, what, option, host)
        try:
            self._start_emulator()
            self._start_simulator()
            self._start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_emulator(self) -> None:
        # moto server with local.provision's fix applied, so sessions changed by compare-and-swap
        # read back as they would on AWS.
        self._emulator = subprocess.Popen(
            [sys.executable, "-m", "local.provision", "-H", self.bind_host, "-p", str(self.ports.aws)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        _wait_for_port(self.ports.aws, self._emulator, "the AWS emulator (moto server)")
        credentials = json.dumps({"api_key": self.api_key, "api_secret": self.api_secret})
        os.environ.update(EMULATOR_CREDENTIALS)
        self.resources = provision(
            self.template,
            self.stack_name,
            region=REGION,
            secret_values={"ApiCredentialsSecret": credentials},
            endpoint_url=self.aws_url,
        )

    def _start_simulator(self) -> None:
        self._simulator = KiteSimulator(
            api_key=self.api_key,
            api_secret=self.api_secret,
            redirect_url=f"{self.api_url}/callback",
            user_id=self.user_id,
            host=self.bind_host,
            port=self.ports.kite,
            # Order updates go where the app's postback URL points, as at Kite.
            postback_url=f"{self.api_url}/postback",
        )
        try:
            self._simulator.start()
        except SimulatorStartError as error:
            raise DevStackError(f"the Kite simulator could not start: {error}") from None

    def _start_gateway(self) -> None:
        self._gateway = LocalGateway(
            self.template,
            host=HOST,
            port=self.ports.api,
            resources=self.resources,
            parameter_overrides={
                "AwsEndpointUrl": self.aws_url,
                "KiteApiRoot": self.kite_url,
                "KiteLoginUrl": f"{self.kite_url}/connect/login",
                "SessionPrefix": self.session_prefix,
                # The one Redirect URL "registered" at the simulator: /login on another host
                # (localhost) sends the browser here first, so its cookie is where Kite returns.
                "KiteRedirectUrl": f"{self.api_url}/callback",
            },
            # The simulator posts each postback before it answers the call that moved the order,
            # so none is ever in flight here: `make orders` then `make reconcile` need not wait
            # out the deployed 60 s grace.
            env_overrides={
                "ReconcilerFunction": {"RECONCILER_GRACE_SECONDS": LOCAL_RECONCILER_GRACE_SECONDS}
            },
            extra_env={
                **EMULATOR_CREDENTIALS,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                # The reconciler hands a token Kite refused to SessionFunction on this same stack.
                "AWS_ENDPOINT_URL_LAMBDA": self.api_url,
            },
        )
        try:
            self._gateway.start()
        except GatewayError as error:
            raise DevStackError(f"the local API could not start: {error}") from None

    def stop(self) -> None:
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None
        if self._emulator is not None:
            self._emulator.terminate()
            try:
                self._emulator.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._emulator.kill()
                self._emulator.wait(timeout=10)
            self._emulator = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def state(self) -> DevState:
        """What the helpers (`make postback`, `make queue`, ...) need to find this stack."""
        return DevState(
            pid=os.getpid(),
            api_url=self.api_url,
            aws_url=self.aws_url,
            kite_url=self.kite_url,
            region=REGION,
            stack_name=self.stack_name,
            session_prefix=self.session_prefix,
            queue_url=self.resources["OrderUpdatesQueue"]["Ref"],
            credentials_secret=self.resources["ApiCredentialsSecret"]["Ref"],
        )

    def banner(self, state_file: Path | None = None) -> str:
        found = (
            f"  The make helpers find this stack, its ports included, through {state_file}.\n"
            if state_file
            else ""
        )
        return f"""
kitehooks is running locally.

  API (the template's routes)   {self.api_url}
    log in                      {self.api_url}/login
    Kite redirect URL           {self.api_url}/callback
    Kite postback URL           {self.api_url}/postback
    Lambda Invoke API           {self.api_url}/2015-03-31/functions/SessionFunction/invocations
  AWS emulator (moto server)    {self.aws_url}
  Kite simulator                {self.kite_url}   (api_key {self.api_key}, user {self.user_id})

Next:
  1. open {self.api_url}/ in a browser and log in: the simulator logs you in as {self.user_id}
  2. make sessions     # the stored session, without its tokens
  3. make postback     # a signed sample postback, as Kite would send it
  4. make queue        # the order update waiting in the FIFO queue
  5. make session-status USER={self.user_id}; make logout USER={self.user_id}; make expire
{found}
Your own code (kitehooks.client) against this stack:
  export KITEHOOKS_SESSION_PREFIX={self.session_prefix} KITEHOOKS_SESSION_FUNCTION=SessionFunction
  export AWS_ENDPOINT_URL={self.aws_url} AWS_ENDPOINT_URL_LAMBDA={self.api_url} KITE_API_ROOT={self.kite_url}
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION={REGION}

Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description=__doc__.splitlines()[0])
    parser.add_argument("--api-port", type=int, default=DevPorts.api)
    parser.add_argument("--aws-port", type=int, default=DevPorts.aws)
    parser.add_argument("--kite-port", type=int, default=DevPorts.kite)
    parser.add_argument(
        "--bind",
        default=HOST,
        help="address the AWS emulator and Kite simulator listen on (0.0.0.0 for `sam local` containers)",
    )
    args = parser.parse_args(argv)
    stack = DevStack(
        ports=DevPorts(api=args.api_port, aws=args.aws_port, kite=args.kite_port),
        api_key=os.environ.get("KITE_API_KEY") or DEFAULT_API_KEY,
        api_secret=os.environ.get("KITE_API_SECRET") or DEFAULT_API_SECRET,
        user_id=os.environ.get("KITE_SIM_USER_ID") or DEFAULT_USER_ID,
        bind_host=args.bind,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
    except DevStackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    state_file = state_path()
    try:
        write_state(stack.state(), state_file)
        shown = state_file.relative_to(ROOT) if state_file.is_relative_to(ROOT) else state_file
        print(stack.banner(shown), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping...", flush=True)
        remove_state(os.getpid(), state_file)
        stack.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
