"""Stopping `make dev` and starting it again at once: connections the stopped stack closed sit in
TIME_WAIT on its ports, which must not block the restart; a port something listens on still must."""

from __future__ import annotations

import errno
import socket

import pytest
import requests

from local.dev import DevPorts, DevStack, DevStackError

TIMEOUT = 30
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _server_closes_first(port: int) -> None:
    """One request with ``Connection: close``: the server closes first, so its end of the
    connection (on ``port``) is left in TIME_WAIT, as a browser's connections are after Ctrl-C."""
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as client:
        client.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while client.recv(65536):
            pass  # until the server's FIN


def _bind_without_reuse(port: int) -> OSError | None:
    """What a bind without SO_REUSEADDR (the old port check) meets on ``port``."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as error:
            return error
    return None


def test_a_restart_at_once_works_while_closed_connections_sit_in_time_wait() -> None:
    ports = DevPorts(api=_free_port(), aws=_free_port(), kite=_free_port())
    with DevStack(ports=ports):
        for port in (ports.api, ports.aws, ports.kite):
            _server_closes_first(port)
    # The situation the issue describes: a plain bind is refused on every port for about 60 s.
    for port in (ports.api, ports.aws, ports.kite):
        refused = _bind_without_reuse(port)
        assert refused is not None, f"port {port} has no connection in TIME_WAIT; the test proves nothing"
        assert refused.errno == errno.EADDRINUSE

    with DevStack(ports=DevPorts(api=ports.api, aws=ports.aws, kite=ports.kite)) as again:
        answer = requests.get(f"{again.api_url}/nothing-here", timeout=TIMEOUT)
        assert answer.status_code == 404  # the gateway's own answer: it listens on the same port
        assert again.api_url == f"http://{HOST}:{ports.api}"


@pytest.mark.parametrize(
    ("which", "what", "option"),
    [
        ("api", "the local API", "--api-port"),
        ("aws", "the AWS emulator", "--aws-port"),
        ("kite", "the Kite simulator", "--kite-port"),
    ],
)
def test_a_port_something_listens_on_is_still_reported(which: str, what: str, option: str) -> None:
    with socket.socket() as taken:
        # Bound as a server binds (SO_REUSEADDR too): the check must still see the listener.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((HOST, 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        stack = DevStack(ports=DevPorts(**{"api": 0, "aws": 0, "kite": 0, which: port}))
        with pytest.raises(DevStackError) as refused:
            stack.start()
    assert str(refused.value) == (
        f"port {port} ({what}) is already in use: stop what uses it, or pick another with {option}"
    )
    assert stack.emulator_pid is None  # nothing was started before the check refused
