"""Where the running local stack is: the small state file `make dev` writes and the helpers read.

`make dev` writes ``.kitehooks-dev.json`` in the project root once every part listens (its URLs,
the stack name, the emulator's names for the queue and the credentials secret, and its own pid)
and removes it when it stops. ``make postback``, ``make queue``, ``make sessions``, ``make logout``,
``make session-status`` and ``make expire`` read it, so they follow the ports given in
``DEV_ARGS``. ``KITEHOOKS_DEV_STATE`` names another file (the tests use that). No secret is
written: a helper that needs the app's api_secret reads it from the emulator, as the functions do.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_FILE_NAME = ".kitehooks-dev.json"
STATE_VARIABLE = "KITEHOOKS_DEV_STATE"


class StackNotRunning(RuntimeError):
    """No running local stack could be found; the message is the one line to print."""


@dataclass(frozen=True)
class DevState:
    """What a helper needs to reach the running local stack."""

    pid: int
    api_url: str
    aws_url: str
    kite_url: str
    region: str
    stack_name: str
    session_prefix: str
    queue_url: str
    credentials_secret: str


def state_path() -> Path:
    """The state file: ``$KITEHOOKS_DEV_STATE``, else ``.kitehooks-dev.json`` in the project root."""
    return Path(os.environ.get(STATE_VARIABLE) or ROOT / STATE_FILE_NAME)


def write_state(state: DevState, path: Path | None = None) -> Path:
    """Write ``state`` atomically: a helper never reads half a file."""
    target = path or state_path()
    partial = target.with_name(f"{target.name}.{state.pid}.tmp")
    partial.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    partial.replace(target)
    return target


def remove_state(pid: int, path: Path | None = None) -> None:
    """Remove the state file if it is this process's: another `make dev` may have written it since."""
    target = path or state_path()
    try:
        owner = json.loads(target.read_text(encoding="utf-8")).get("pid")
    except (OSError, ValueError, AttributeError):
        return
    if owner == pid:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours to signal
    return True


def _shown(path: Path) -> str:
    """The path as a user in the project root would type it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def read_state(path: Path | None = None) -> DevState:
    """The running stack's state, or StackNotRunning saying why not and what to do."""
    target = path or state_path()
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackNotRunning(
            f"the local stack is not running (no {_shown(target)}): start it with `make dev`"
        ) from None
    except (OSError, ValueError):
        raise StackNotRunning(f"{_shown(target)} is unreadable: delete it and start `make dev`") from None
    names = {field.name for field in fields(DevState)}
    if not isinstance(raw, dict) or not names <= raw.keys():
        raise StackNotRunning(
            f"{_shown(target)} is not `make dev`'s state file: delete it and start `make dev` again"
        )
    state = DevState(**{name: raw[name] for name in names})
    if not isinstance(state.pid, int) or not _alive(state.pid):
        raise StackNotRunning(
            f"the local stack is not running (`make dev`, pid {state.pid}, ended without removing "
            f"{_shown(target)}): start it with `make dev`"
        )
    return state
