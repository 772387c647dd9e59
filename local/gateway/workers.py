"""Warm worker processes, one request at a time each, as Lambda sandboxes serve a function."""

from __future__ import annotations

import contextlib
import io
import json
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from local.gateway.functions import FunctionSpec

INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit for loading a handler

_WORKER_MODULE = "_kitehooks_local_worker"
# A worker loads runtime.py by path, so nothing but the function's folders joins its sys.path.
_RUNTIME_FILE = Path(__file__).resolve().with_name("runtime.py")
_WORKER_BOOTSTRAP = """\
import importlib.util, sys
spec = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
sys.exit(module.worker_main(sys.argv[3]))
"""


class _InvocationFailed(Exception):
    """No response from the handler; the message says why, for the console."""


class _HandlerRaised(_InvocationFailed):
    """The handler raised; its worker is fine and stays warm. ``error_type``, ``error_message``
    and ``stack_trace`` are for Lambda's Invoke API, never for an HTTP route's response."""

    def __init__(self, error_type: str, error_message: str = "", stack_trace: Sequence[str] = ()) -> None:
        super().__init__(f"the handler raised {error_type} (traceback above)")
        self.error_type = error_type
        self.error_message = error_message
        self.stack_trace = list(stack_trace)


class _WorkerLost(_InvocationFailed):
    """The worker crashed, timed out, failed to load the handler or spoke nonsense."""


class _GatewayClosed(Exception):
    pass


class _Worker:
    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        config = {
            "code_uri": str(spec.code_uri),
            "layers": [str(layer) for layer in spec.layers],
            "handler": spec.handler,
            "function_arn": spec.function_arn,
        }
        # -I: no PYTHONPATH, no user site, no script folder; sys.path is the interpreter's own
        # plus what the worker prepends. -u: handler logs reach the console as they are written.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-u",
                "-c",
                _WORKER_BOOTSTRAP,
                _WORKER_MODULE,
                str(_RUNTIME_FILE),
                json.dumps(config),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(spec.environment),
            cwd=spec.code_uri,
        )
        self.ready = False
        self._pending = bytearray()

    def initialise(self) -> None:
        message = self._receive(time.monotonic() + INIT_TIMEOUT_SECONDS, "loading the handler")
        if message.get("ready") is not True:
            raise _WorkerLost("the handler could not be loaded (traceback above)")
        self.ready = True

    def invoke(self, event: dict[str, Any]) -> Any:
        deadline = time.monotonic() + self.spec.timeout
        request = {
            "event": event,
            "aws_request_id": str(uuid.uuid4()),
            "deadline_ms": int(time.time() * 1000 + self.spec.timeout * 1000),
        }
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            raise _WorkerLost(self._exit_reason()) from None
        message = self._receive(deadline, f"the handler (Timeout {self.spec.timeout:g} s)")
        if "error" in message:
            raise _HandlerRaised(
                str(message["error"]), str(message.get("message", "")), list(message.get("stack", []))
            )
        return message.get("result")

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        stream = cast(io.BufferedReader, self.process.stdout)  # Popen's default buffered pipe
        while (end := self._pending.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
                    raise _WorkerLost(f"timed out waiting for {waiting_for}; worker stopped")
                # One read of what is there: the stream's own buffer stays empty, so select holds.
                chunk = stream.read1(1 << 16)
            except (OSError, ValueError):
                raise _WorkerLost("worker stopped") from None
            if not chunk:
                raise _WorkerLost(self._exit_reason())
            self._pending += chunk
        line = bytes(self._pending[:end])
        del self._pending[: end + 1]
        try:
            message = json.loads(line)
        except ValueError:
            raise _WorkerLost("worker sent an unreadable message") from None
        if not isinstance(message, dict):
            raise _WorkerLost("worker sent an unreadable message")
        return message

    def _exit_reason(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "worker closed its pipe but did not exit"
        if code < 0:
            return f"worker process {self.process.pid} was killed by signal {-code}"
        return f"worker process {self.process.pid} exited with code {code}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Stop the process and reap it; safe from any thread, any number of times."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        """Terminate, then release the pipes (only by the thread that owns the worker)."""
        self.terminate()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class _FunctionPool:
    """Warm workers of one function; each serves one request at a time, as a Lambda sandbox does."""

    def __init__(self, spec: FunctionSpec, size: int) -> None:
        self.spec = spec
        self._size = size
        self._condition = threading.Condition()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._closed = False

    def invoke(self, event: dict[str, Any]) -> Any:
        worker = self._acquire()
        reusable = False
        try:
            if not worker.ready:
                worker.initialise()
            result = worker.invoke(event)
            reusable = True
            return result
        except _HandlerRaised:
            reusable = True
            raise
        finally:
            self._release(worker, reusable)

    def _acquire(self) -> _Worker:
        with self._condition:
            while True:
                if self._closed:
                    raise _GatewayClosed
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive:
                        return worker
                    self._workers.discard(worker)  # died while idle (killed from outside)
                    worker.close()
                if len(self._workers) < self._size:
                    # Started under the lock so close() cannot miss it; Popen returns quickly.
                    worker = _Worker(self.spec)
                    self._workers.add(worker)
                    return worker
                self._condition.wait()

    def _release(self, worker: _Worker, reusable: bool) -> None:
        with self._condition:
            keep = reusable and not self._closed and worker.alive
            if keep:
                self._idle.append(worker)
            else:
                self._workers.discard(worker)
            self._condition.notify()
        if not keep:
            worker.close()

    def pids(self) -> list[int]:
        with self._condition:
            return [worker.process.pid for worker in self._workers if worker.alive]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            idle = list(self._idle)
            busy = [worker for worker in self._workers if worker not in idle]
            self._idle.clear()
            self._workers.clear()
            self._condition.notify_all()
        for worker in idle:
            worker.close()
        for worker in busy:  # their requests' threads release the pipes when they see the end
            worker.terminate()
