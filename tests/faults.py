"""Endpoints that fail the way networks do: one that accepts and never answers, one that answers
a byte at a time, and (see ``conftest.closed_port``) one that refuses."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self


class _Listener:
    """A TCP listener on 127.0.0.1 that hands each connection to :meth:`_serve` in a thread."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._stopped = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.connections_accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for connection in self._connections:
            connection.close()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections_accepted += 1
            self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError


class HangingEndpoint(_Listener):
    """Accepts every connection and never sends a byte: only a read timeout or a deadline ends a
    request to it."""

    def _serve(self, connection: socket.socket) -> None:
        self._stopped.wait()


class TricklingEndpoint(_Listener):
    """Answers every request with a valid-looking HTTP response, one byte every ``interval``
    seconds: each socket read succeeds in time, so per-read timeouts never fire."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self._interval = interval

    def _serve(self, connection: socket.socket) -> None:
        response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        response += b"{" + b" " * 100_000
        for byte in response:
            if self._stopped.wait(self._interval):
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return


class FailingEndpoint(_Listener):
    """Answers every request at once with HTTP 500 and an AWS-style JSON error, and counts them:
    how many attempts a client makes is then a number to assert."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self._lock = threading.Lock()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(rest) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                buffer = rest[length:]
                with self._lock:
                    self.requests += 1
                body = b'{"__type":"InternalServiceError","message":"injected fault"}'
                connection.sendall(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/x-amz-json-1.1\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
        except OSError:
            return
