"""`python -m local.gateway`: the gateway on its own, configured from the command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from local.gateway.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_WORKERS_PER_FUNCTION,
    GatewayError,
    LocalGateway,
)
from local.gateway.template import TemplateError

# Given to every function by the CLI when set in its shell, as sam local passes credentials on.
FORWARDED_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
)


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        data = json.load(stream)
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return data


def _pairs(items: Iterable[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, separator, value = item.partition("=")
        if not separator or not name:
            raise ValueError(f"{option} takes NAME=VALUE, got {name or item!r}")
        pairs[name] = value
    return pairs


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.gateway",
        description="Serve template.yaml's HttpApi routes locally, without Docker.",
    )
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--resources",
        type=Path,
        help='JSON {"LogicalId": {"Ref": ..., "Arn": ...}}: what !Ref and !GetAtt of resources mean',
    )
    parser.add_argument(
        "--env-vars",
        type=Path,
        help='as sam local --env-vars: JSON {"FunctionId" or "Parameters": {"NAME": "value"}}',
    )
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a variable for every function; {', '.join(FORWARDED_VARIABLES)} are passed on when set",
    )
    parser.add_argument("--workers-per-function", type=int, default=DEFAULT_WORKERS_PER_FUNCTION)
    args = parser.parse_args(argv)
    try:
        extra_env = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
        extra_env.update(_pairs(args.env, "--env"))
        gateway = LocalGateway(
            args.template,
            host=args.host,
            port=args.port,
            resources=_read_json_object(args.resources, "--resources") if args.resources else None,
            env_overrides=_read_json_object(args.env_vars, "--env-vars") if args.env_vars else None,
            extra_env=extra_env,
            parameter_overrides=_pairs(args.parameter_overrides, "--parameter-overrides"),
            workers_per_function=args.workers_per_function,
        )
        gateway.start()
    except (TemplateError, GatewayError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"kitehooks local API on {gateway.url}", flush=True)
        for route in gateway.routes:
            print(f"  {route.route_key} -> {route.function_id}", flush=True)
        invocable = ", ".join(gateway.functions)
        print(f"  Lambda Invoke API (POST /2015-03-31/functions/NAME/invocations): {invocable}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
    return 0
