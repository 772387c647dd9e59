"""The HTTP side: LocalGateway listens, routes each request, invokes and maps the answer back."""

from __future__ import annotations

import contextlib
import errno
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from local.gateway.console import _console
from local.gateway.events import (
    LOCAL_API_ID,
    GatewayRequest,
    HttpResponse,
    InvalidLambdaResponse,
    _json_message,
    build_event,
    new_request_id,
    response_from_result,
)
from local.gateway.functions import function_specs
from local.gateway.lambda_api import invoke_api_response, is_invoke_request, unrouted_functions
from local.gateway.routes import load_routes, match_route
from local.gateway.workers import _FunctionPool, _GatewayClosed, _InvocationFailed

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
DEFAULT_WORKERS_PER_FUNCTION = 4
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


class GatewayError(RuntimeError):
    """The gateway cannot start, e.g. because its port is taken."""


class _RequestRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = _json_message(status, message)


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR still refuses a port that something listens on; SO_REUSEPORT would not.
    allow_reuse_port = False

    def __init__(self, address: tuple[str, int], gateway: LocalGateway) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gateway = gateway
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # TCPServer's bind, without HTTPServer's getfqdn(), which can stall on a DNS lookup.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections, whose threads would otherwise wait for more requests."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GatewayServer
    timeout = 120  # idle kept-alive connections end after this long

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET  # noqa: N815

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # the gateway writes its own access line, without the query string

    def log_error(self, format: str, *args: Any) -> None:
        # http.server's messages quote the request line, query string (and its tokens) included.
        code = next((arg for arg in args if isinstance(arg, int)), None)
        _console(f"{self.client_address[0]} malformed or timed-out request dropped ({code or '-'})")

    def _serve(self) -> None:
        started = time.perf_counter()
        raw_path, _, raw_query = self.path.partition("?")
        try:
            body = self._read_body()
        except _RequestRejected as rejected:
            self.close_connection = True
            response = rejected.response
        else:
            request = GatewayRequest(
                method=self.command,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=list(self.headers.items()),
                body=body,
                source_ip=str(self.client_address[0]),
                server_port=self.server.server_port,
                protocol=self.request_version,
            )
            response = self.server.gateway.respond(request)
        # Logged before sending, so the line is out by the time the client has its answer.
        elapsed_ms = (time.perf_counter() - started) * 1000
        _console(f"{self.command} {raw_path} {response.status} {elapsed_ms:.0f} ms")
        try:
            self._send(response)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _RequestRejected(400, "Bad Request") from None
        if length < 0:
            raise _RequestRejected(400, "Bad Request")
        if length > MAX_REQUEST_BYTES:
            raise _RequestRejected(413, "Request Entity Too Large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _RequestRejected(400, "Bad Request") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BYTES:
                raise _RequestRejected(413, "Request Entity Too Large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class LocalGateway:
    """The template's HttpApi routes on ``http://host:port``, each function in warm workers.

    Everything is read from the template when constructed, so a missing value fails before any
    port is taken. ``start()`` listens (port 0 picks a free one), ``stop()`` stops the server and
    every worker process it started; also usable as a context manager.
    """

    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        resources: Mapping[str, Mapping[str, str]] | None = None,
        env_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        extra_env: Mapping[str, str] | None = None,
        parameter_overrides: Mapping[str, str] | None = None,
        workers_per_function: int = DEFAULT_WORKERS_PER_FUNCTION,
        api_id: str = LOCAL_API_ID,
    ) -> None:
        if workers_per_function < 1:
            raise ValueError("workers_per_function must be at least 1")
        self.routes = load_routes(template_path)
        self.functions = function_specs(
            template_path,
            resources,
            env_overrides,
            extra_env,
            parameter_overrides=parameter_overrides,
        )
        # Functions without a route answer Lambda's Invoke API on this port (lambda_api.py).
        unrouted, self.unavailable_functions = unrouted_functions(
            template_path, self.functions, resources, env_overrides, extra_env, parameter_overrides
        )
        self.functions.update(unrouted)
        self._host = host
        self._port = port
        self._workers_per_function = workers_per_function
        self._api_id = api_id
        self._pools: dict[str, _FunctionPool] = {}
        self._server: _GatewayServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise GatewayError("the gateway is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._server.server_port}"

    def start(self) -> None:
        if self._server is not None:
            raise GatewayError("the gateway is already started")
        self._pools = {
            function_id: _FunctionPool(spec, self._workers_per_function)
            for function_id, spec in self.functions.items()
        }
        try:
            server = _GatewayServer((self._host, self._port), self)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise GatewayError(f"{self._host}:{self._port} is already in use") from None
            raise GatewayError(f"cannot listen on {self._host}:{self._port}: {error.strerror}") from None
        self._server = server
        # A short poll interval keeps stop() quick; serve_forever checks for shutdown that often.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="local-gateway", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for pool in self._pools.values():
            pool.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes running now."""
        return [pid for pool in self._pools.values() for pid in pool.pids()]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def invoke_function(self, function_id: str, event: Any) -> Any:
        """The handler's result for ``event`` from the function's warm workers; raises as they do."""
        pool = self._pools.get(function_id)
        if pool is None:
            raise _GatewayClosed
        return pool.invoke(event)

    def respond(self, request: GatewayRequest) -> HttpResponse:
        """API Gateway's answer to one request: route, invoke, map the result back."""
        if is_invoke_request(request):
            return invoke_api_response(self, request)
        request_id = new_request_id()
        match = match_route(self.routes, request.method, request.raw_path)
        if match is None:
            response = _json_message(404, "Not Found")
        else:
            function_id = match.route.function_id
            event = build_event(request, match, request_id=request_id, api_id=self._api_id)
            try:
                pool = self._pools.get(function_id)
                if pool is None:
                    raise _GatewayClosed
                response = response_from_result(pool.invoke(event))
            except _GatewayClosed:
                response = _json_message(503, "Service Unavailable")
            except (_InvocationFailed, InvalidLambdaResponse) as failure:
                _console(f"{function_id}: {failure}; answered 502")
                response = _json_message(502, "Internal Server Error")
            except Exception:
                _console(f"{function_id}: local gateway error; answered 502\n{traceback.format_exc()}")
                response = _json_message(502, "Internal Server Error")
        response.headers.append(("apigw-requestid", request_id))
        return response
