"""A local API gateway without Docker: serves the HttpApi routes that ``template.yaml`` declares.

It does what ``sam local start-api`` does, minus the containers. Routes, handlers, layers,
environment and timeouts come from the template alone. Each function runs in worker processes of
its own (own ``os.environ``, own ``sys.modules``, only its CodeUri and layer folders prepended to
``sys.path``, as in Lambda), kept warm between requests. Requests reach handlers as API Gateway
HTTP API payload format 2.0 events; responses are mapped back the way API Gateway maps them.

    python -m local.gateway --port 3000 --template template.yaml \\
        --resources resources.json --env-vars events/env.json
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import functools
import importlib
import io
import json
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qsl, unquote

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_REGION",
    "FunctionSpec",
    "GatewayError",
    "GatewayRequest",
    "HttpResponse",
    "InvalidLambdaResponse",
    "LocalGateway",
    "LocalLambdaContext",
    "Route",
    "RouteMatch",
    "TemplateError",
    "build_event",
    "function_specs",
    "load_routes",
    "load_template",
    "main",
    "match_route",
    "response_from_result",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
DEFAULT_REGION = "ap-south-1"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_STACK_NAME = "kitehooks"
LOCAL_API_ID = "local"
DEFAULT_ROUTE = "$default"
DEFAULT_WORKERS_PER_FUNCTION = 4
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit for loading a handler
DEFAULT_TIMEOUT_SECONDS = 3  # Lambda's default when the template sets none
DEFAULT_MEMORY_MB = 128  # likewise

# Given to every function by the CLI when set in its shell, as sam local passes credentials on.
FORWARDED_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
)

_WORKER_MODULE = "_kitehooks_local_worker"
# A worker loads this file by path, so nothing but the function's folders joins its sys.path.
_WORKER_BOOTSTRAP = """\
import importlib.util, sys
spec = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
sys.exit(module.worker_main(sys.argv[3]))
"""

_TEXT_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
    }
)
# Framing is the gateway's job: a handler's values for these would corrupt the response.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_console_lock = threading.Lock()


class TemplateError(ValueError):
    """The template, or a value it needs, cannot be served locally; the message says why."""


class GatewayError(RuntimeError):
    """The gateway cannot start, e.g. because its port is taken."""


class InvalidLambdaResponse(ValueError):
    """The handler returned something API Gateway would refuse to turn into a response."""


def _console(message: str) -> None:
    with _console_lock:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The template


@functools.cache
def _template_loader() -> type[Any]:
    # yaml is imported here, not at the top: worker processes load this module and never read it.
    import yaml

    class CloudFormationLoader(yaml.SafeLoader):
        """Reads the short-form intrinsics (!Ref, !GetAtt, !Sub, ...) as their long form."""

    def intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        else:  # pragma: no cover - yaml has no other node kinds
            raise TemplateError(f"unexpected YAML node for !{suffix}")
        if suffix in ("Ref", "Condition"):
            return {suffix: value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{suffix}": value}

    CloudFormationLoader.add_multi_constructor("!", intrinsic)
    return CloudFormationLoader


def load_template(template_path: str | Path) -> dict[str, Any]:
    """The template as plain data, short-form intrinsics turned into their long form."""
    import yaml

    path = Path(template_path)
    try:
        with path.open(encoding="utf-8") as stream:
            template = yaml.load(stream, Loader=_template_loader())  # noqa: S506 - a SafeLoader
    except OSError as error:
        raise TemplateError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise TemplateError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources section")
    return template


def _functions(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function"
    }


def _properties(resource: Mapping[str, Any]) -> dict[str, Any]:
    properties = resource.get("Properties")
    return properties if isinstance(properties, dict) else {}


# ---------------------------------------------------------------------------------------------
# Routes


@dataclass(frozen=True)
class Route:
    """One HttpApi event of a function: ``method`` is upper-case (``ANY`` for all methods) and
    ``path`` is as in the template (``/x/{id}``, ``/x/{proxy+}``) or ``$default``."""

    function_id: str
    event_id: str
    method: str
    path: str

    @property
    def route_key(self) -> str:
        return DEFAULT_ROUTE if self.path == DEFAULT_ROUTE else f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[tuple[int, ...], bool]:
        """Lower is more specific: literal segments, then {params}, then {greedy+}; then a method
        before ANY. This is the order in which API Gateway picks among matching routes."""
        if self.path == DEFAULT_ROUTE:
            return (3,), True
        ranks = tuple(
            (2 if segment.endswith("+}") else 1) if segment.startswith("{") else 0
            for segment in self.path.split("/")[1:]
        )
        return ranks, self.method == "ANY"

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """The path parameters (decoded) when this route serves the request, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        if self.path == DEFAULT_ROUTE:
            return {}
        patterns = self.path.split("/")[1:]
        segments = raw_path.split("/")[1:]
        parameters: dict[str, str] = {}
        for index, pattern in enumerate(patterns):
            if pattern.startswith("{") and pattern.endswith("+}"):
                rest = "/".join(segments[index:])
                if not rest:
                    return None
                parameters[pattern[1:-2]] = unquote(rest)
                return parameters
            if index >= len(segments):
                return None
            segment = segments[index]
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                parameters[pattern[1:-1]] = unquote(segment)
            elif unquote(segment) != pattern:
                return None
        return parameters if len(segments) == len(patterns) else None


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_parameters: dict[str, str]


def match_route(routes: Iterable[Route], method: str, raw_path: str) -> RouteMatch | None:
    """The route API Gateway would pick for the request, or None (HttpApi answers 404 then,
    also when only the method differs)."""
    candidates = [
        (route, parameters) for route in routes if (parameters := route.match(method, raw_path)) is not None
    ]
    if not candidates:
        return None
    route, parameters = min(candidates, key=lambda candidate: candidate[0].specificity)
    return RouteMatch(route, parameters)


def _routes(template: Mapping[str, Any]) -> list[Route]:
    routes: list[Route] = []
    seen: dict[str, Route] = {}
    for function_id, resource in _functions(template).items():
        events = _properties(resource).get("Events")
        if not isinstance(events, dict):
            continue
        for event_id, event in events.items():
            if not isinstance(event, dict) or event.get("Type") != "HttpApi":
                continue
            where = f"{function_id} event {event_id}"
            properties = _properties(event)
            version = str(properties.get("PayloadFormatVersion", "2.0"))
            if version != "2.0":
                raise TemplateError(f"{where}: PayloadFormatVersion {version}; only 2.0 is served")
            method, path = properties.get("Method"), properties.get("Path")
            if method is None and path is None:
                route = Route(function_id, event_id, "ANY", DEFAULT_ROUTE)
            elif isinstance(method, str) and isinstance(path, str) and path.startswith("/"):
                route = Route(function_id, event_id, method.upper(), path)
            else:
                raise TemplateError(f"{where}: needs both Method and Path ('/...'), or neither")
            if route.route_key in seen:
                other = seen[route.route_key]
                raise TemplateError(
                    f"{where}: route {route.route_key} is also {other.function_id} event {other.event_id}"
                )
            seen[route.route_key] = route
            routes.append(route)
    return routes


def load_routes(template_path: str | Path) -> list[Route]:
    """Every HttpApi event of every AWS::Serverless::Function in the template, in template order."""
    return _routes(load_template(template_path))


# ---------------------------------------------------------------------------------------------
# Functions and their environment


@dataclass(frozen=True)
class FunctionSpec:
    """What a worker needs to run one function as Lambda would. ``environment`` is the worker's
    whole environment: Lambda's own variables, the template's (resolved), then the extras."""

    function_id: str
    handler: str
    code_uri: Path
    layers: tuple[Path, ...]
    environment: Mapping[str, str] = field(hash=False)
    timeout: float
    memory_size: int
    function_arn: str


class _Unresolvable(Exception):
    pass


class _Resolver:
    """Turns a template value into its local string: parameters from their Default (or an
    override), resources from the caller's ``resources``, pseudo parameters from fixed values."""

    def __init__(
        self,
        template: Mapping[str, Any],
        resources: Mapping[str, Mapping[str, str]],
        parameter_overrides: Mapping[str, str],
        pseudo: Mapping[str, str],
    ) -> None:
        parameters = template.get("Parameters")
        self._parameters: Mapping[str, Any] = parameters if isinstance(parameters, dict) else {}
        self._template_resources: Mapping[str, Any] = template["Resources"]
        conditions = template.get("Conditions")
        self._conditions: Mapping[str, Any] = conditions if isinstance(conditions, dict) else {}
        self._functions = set(_functions(template))
        self._resources = resources
        self._parameter_overrides = parameter_overrides
        self._pseudo = pseudo
        self._region = pseudo["AWS::Region"]
        self._account_id = pseudo["AWS::AccountId"]

    def value(self, raw: Any) -> str | None:
        """The string value, or None for AWS::NoValue (the variable is then left out)."""
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, (str, int, float)):
            return str(raw)
        if isinstance(raw, dict) and len(raw) == 1:
            ((function, argument),) = raw.items()
            if function == "Ref":
                return self._ref(argument)
            if function == "Fn::GetAtt":
                return self._get_att(argument)
            if function == "Fn::Sub":
                return self._sub(argument)
            if function == "Fn::Join":
                return self._join(argument)
            if function == "Fn::If":
                if not (isinstance(argument, list) and len(argument) == 3):
                    raise _Unresolvable("!If needs [condition, value if true, value if false]")
                name, when_true, when_false = argument
                return self.value(when_true if self.condition(name) else when_false)
            raise _Unresolvable(f"{function} is not supported locally")
        raise _Unresolvable(f"a {type(raw).__name__} value is not supported locally")

    def condition(self, name: Any) -> bool:
        """A named condition of the template, evaluated with the local parameter values."""
        if not isinstance(name, str) or name not in self._conditions:
            raise _Unresolvable(f"condition {name!r} is not in the template's Conditions")
        return self._truth(self._conditions[name])

    def _truth(self, raw: Any) -> bool:
        if not (isinstance(raw, dict) and len(raw) == 1):
            raise _Unresolvable("a condition must be one Fn::Equals/Not/And/Or or Condition")
        ((function, argument),) = raw.items()
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::Equals" and isinstance(argument, list) and len(argument) == 2:
            return self.value(argument[0]) == self.value(argument[1])
        if function == "Fn::Not" and isinstance(argument, list) and len(argument) == 1:
            return not self._truth(argument[0])
        if function == "Fn::And" and isinstance(argument, list):
            return all(self._truth(item) for item in argument)
        if function == "Fn::Or" and isinstance(argument, list):
            return any(self._truth(item) for item in argument)
        raise _Unresolvable(f"{function} is not supported in conditions locally")

    def _ref(self, name: Any) -> str | None:
        if not isinstance(name, str):
            raise _Unresolvable("!Ref needs a name")
        if name == "AWS::NoValue":
            return None
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            if name in self._parameter_overrides:
                return str(self._parameter_overrides[name])
            parameter = self._parameters[name]
            default = parameter.get("Default") if isinstance(parameter, dict) else None
            if default is None:
                raise _Unresolvable(f"parameter {name} has no Default; give it as a parameter override")
            return self.value(default)
        local = self._resources.get(name, {})
        if "Ref" in local:
            return local["Ref"]
        if name in self._functions:
            return name  # functions run under their logical id, as with sam local
        if name in self._template_resources:
            raise _Unresolvable(f"!Ref {name} has no local value; give resources['{name}']['Ref']")
        raise _Unresolvable(f"!Ref {name}: no such parameter or resource")

    def _get_att(self, argument: Any) -> str:
        if isinstance(argument, str) and "." in argument:
            argument = argument.split(".", 1)
        if not (
            isinstance(argument, list) and len(argument) == 2 and all(isinstance(a, str) for a in argument)
        ):
            raise _Unresolvable("!GetAtt needs Resource.Attribute")
        name, attribute = argument
        local = self._resources.get(name, {})
        if attribute in local:
            return local[attribute]
        if name in self._functions and attribute == "Arn":
            return _function_arn(name, self._region, self._account_id)
        if name in self._template_resources:
            raise _Unresolvable(
                f"!GetAtt {name}.{attribute} has no local value; give resources['{name}']['{attribute}']"
            )
        raise _Unresolvable(f"!GetAtt {name}.{attribute}: no such resource")

    def _sub(self, argument: Any) -> str:
        variables: Mapping[str, Any] = {}
        if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            argument, variables = argument
        if not isinstance(argument, str):
            raise _Unresolvable("!Sub needs a string, or [string, {variables}]")

        def substitute(found: re.Match[str]) -> str:
            name = found.group(1)
            if name.startswith("!"):  # ${!Literal} stands for the text ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                value = self.value(variables[name])
            elif "." in name:
                value = self._get_att(name)
            else:
                value = self._ref(name)
            if value is None:
                raise _Unresolvable(f"${{{name}}} in !Sub has no value")
            return value

        return _SUB_VARIABLE.sub(substitute, argument)

    def _join(self, argument: Any) -> str:
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], list)):
            raise _Unresolvable("!Join needs [delimiter, [values]]")
        delimiter, items = argument
        values = [self.value(item) for item in items]
        if any(value is None for value in values):
            raise _Unresolvable("!Join of AWS::NoValue")
        return str(delimiter).join(value for value in values if value is not None)


def _function_arn(function_id: str, region: str, account_id: str) -> str:
    return f"arn:aws:lambda:{region}:{account_id}:function:{function_id}"


def _variables(settings: Mapping[str, Any]) -> dict[str, Any]:
    environment = settings.get("Environment")
    variables = environment.get("Variables") if isinstance(environment, dict) else None
    return dict(variables) if isinstance(variables, dict) else {}


def _override_values(section: Any) -> dict[str, str]:
    if not isinstance(section, Mapping):
        return {}
    return {
        str(name): ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in section.items()
        if value is not None
    }


def _layer_folder(function_id: str, layer: Any, template: Mapping[str, Any], base: Path) -> Path:
    name = layer.get("Ref") if isinstance(layer, dict) and len(layer) == 1 else None
    resource = template["Resources"].get(name) if isinstance(name, str) else None
    if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::LayerVersion":
        content = _properties(resource).get("ContentUri")
        if isinstance(content, str):
            folder = (base / content).resolve()
            if not folder.is_dir():
                raise TemplateError(f"{function_id}: layer {name} ContentUri {content} is not a folder")
            return folder
    raise TemplateError(
        f"{function_id}: layer {layer!r} is not an AWS::Serverless::LayerVersion of this template "
        "with a local ContentUri"
    )


def _function_spec(
    function_id: str,
    resource: Mapping[str, Any],
    template: Mapping[str, Any],
    base: Path,
    resolver: _Resolver,
    env_overrides: Mapping[str, Any],
    extra_env: Mapping[str, str],
    region: str,
    account_id: str,
) -> FunctionSpec:
    globals_section = template.get("Globals")
    global_settings = globals_section.get("Function") if isinstance(globals_section, dict) else None
    if not isinstance(global_settings, dict):
        global_settings = {}
    properties = _properties(resource)

    def setting(name: str, default: Any = None) -> Any:
        return properties.get(name, global_settings.get(name, default))

    def number(name: str, default: int) -> float:
        try:
            value = resolver.value(setting(name, default))
            return float(value if value is not None else default)
        except (_Unresolvable, ValueError):
            raise TemplateError(f"{function_id}: {name} is not a number locally") from None

    if setting("PackageType", "Zip") != "Zip":
        raise TemplateError(f"{function_id}: only Zip functions run locally")
    runtime = setting("Runtime")
    if not isinstance(runtime, str) or not runtime.startswith("python"):
        raise TemplateError(f"{function_id}: Runtime {runtime!r} is not a Python runtime")
    handler = setting("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{function_id}: Handler must be module.function")
    code_uri = setting("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{function_id}: CodeUri must be a local folder")
    code_folder = (base / code_uri).resolve()
    if not code_folder.is_dir():
        raise TemplateError(f"{function_id}: CodeUri {code_uri} is not a folder")
    # SAM appends a function's Layers to the global ones.
    layer_list = [*(global_settings.get("Layers") or []), *(properties.get("Layers") or [])]
    layers = tuple(_layer_folder(function_id, layer, template, base) for layer in layer_list)
    timeout = number("Timeout", DEFAULT_TIMEOUT_SECONDS)
    memory_size = int(number("MemorySize", DEFAULT_MEMORY_MB))
    function_arn = _function_arn(function_id, region, account_id)

    environment = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(code_folder),
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{function_id}",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_SAM_LOCAL": "true",
    }
    # As with `sam local --env-vars`: "Parameters" applies to every function, a function's own
    # section wins, and only variables the template declares are set.
    overrides = {
        **_override_values(env_overrides.get("Parameters")),
        **_override_values(env_overrides.get(function_id)),
    }
    declared = {**_variables(global_settings), **_variables(properties)}
    for name, raw in declared.items():
        if name in overrides:
            environment[name] = overrides[name]
            continue
        try:
            value = resolver.value(raw)
        except _Unresolvable as error:
            raise TemplateError(f"{function_id}: environment variable {name}: {error}") from None
        if value is not None:
            environment[name] = value
    environment.update(extra_env)
    return FunctionSpec(
        function_id=function_id,
        handler=handler,
        code_uri=code_folder,
        layers=layers,
        environment=environment,
        timeout=timeout,
        memory_size=memory_size,
        function_arn=function_arn,
    )


def function_specs(
    template_path: str | Path,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    env_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    extra_env: Mapping[str, str] | None = None,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    function_ids: Iterable[str] | None = None,
    region: str | None = None,
    account_id: str = DEFAULT_ACCOUNT_ID,
    stack_name: str = DEFAULT_STACK_NAME,
) -> dict[str, FunctionSpec]:
    """How to run each function that has an HttpApi route (or each of ``function_ids``).

    ``resources`` gives what ``!Ref``/``!GetAtt`` of a resource mean locally, e.g.
    ``{"OrderUpdatesQueue": {"Ref": "<queue url>", "Arn": "<queue arn>"}}``; ``env_overrides`` is
    a ``sam local --env-vars`` file's content; ``extra_env`` goes to every function and wins over
    everything. The region is ``region``, else ``extra_env["AWS_REGION"]``, else ap-south-1.
    Raises TemplateError naming the function (and variable) when something cannot be resolved.
    """
    path = Path(template_path)
    template = load_template(path)
    extra = dict(extra_env or {})
    region = region or extra.get("AWS_REGION") or DEFAULT_REGION
    pseudo = {
        "AWS::Region": region,
        "AWS::AccountId": account_id,
        "AWS::StackName": stack_name,
        "AWS::StackId": f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    resolver = _Resolver(template, resources or {}, parameter_overrides or {}, pseudo)
    functions = _functions(template)
    if function_ids is None:
        function_ids = dict.fromkeys(route.function_id for route in _routes(template))
    specs: dict[str, FunctionSpec] = {}
    for function_id in function_ids:
        if function_id not in functions:
            raise TemplateError(f"{function_id} is not an AWS::Serverless::Function of {path}")
        specs[function_id] = _function_spec(
            function_id,
            functions[function_id],
            template,
            path.parent,
            resolver,
            env_overrides or {},
            extra,
            region,
            account_id,
        )
    return specs


# ---------------------------------------------------------------------------------------------
# Events and responses (payload format 2.0)


@dataclass(frozen=True)
class GatewayRequest:
    """An HTTP request as received: ``raw_path`` and ``raw_query`` exactly as on the wire."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    server_port: int
    protocol: str = "HTTP/1.1"


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def new_request_id() -> str:
    """An id shaped like API Gateway's (e.g. ``JKJaXmPLvHcESHA=``)."""
    return base64.b64encode(secrets.token_bytes(11)).decode("ascii")


def _request_time(epoch_seconds: float) -> str:
    # Month names fixed here: strftime's %b follows the locale, API Gateway's do not.
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return f"{moment:%d}/{_MONTHS[moment.month - 1]}/{moment:%Y:%H:%M:%S} +0000"


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type in _TEXT_MEDIA_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


def _event_body(body: bytes, content_type: str | None) -> tuple[str, bool]:
    if _is_text(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _query_parameters(raw_query: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    return parameters


def build_event(
    request: GatewayRequest,
    match: RouteMatch,
    *,
    request_id: str | None = None,
    epoch_seconds: float | None = None,
    api_id: str = LOCAL_API_ID,
    account_id: str = DEFAULT_ACCOUNT_ID,
    forwarded_proto: str = "http",
) -> dict[str, Any]:
    """The API Gateway HTTP API (payload format 2.0) event for ``request`` on ``match``.

    Like API Gateway: header names lower-case, repeated headers and query parameters joined with
    ",", cookies moved from the Cookie header to ``cookies``, x-forwarded-* added; ``cookies``,
    ``queryStringParameters``, ``pathParameters`` and ``body`` left out when there are none; the
    body base64-encoded unless its content type is text and it is valid UTF-8.
    """
    now = time.time() if epoch_seconds is None else epoch_seconds
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    forwarded_for = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = (
        f"{forwarded_for}, {request.source_ip}" if forwarded_for else request.source_ip
    )
    headers["x-forwarded-port"] = str(request.server_port)
    headers["x-forwarded-proto"] = forwarded_proto  # deployed API Gateway: always https
    headers.setdefault("x-amzn-trace-id", f"Root=1-{int(now):08x}-{secrets.token_hex(12)}")

    host = headers.get("host", "localhost")
    domain_name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    route_key = match.route.route_key
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    query_parameters = _query_parameters(request.raw_query)
    if query_parameters:
        event["queryStringParameters"] = query_parameters
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": request.method.upper(),
            "path": request.raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id or new_request_id(),
        "routeKey": route_key,
        "stage": "$default",
        "time": _request_time(now),
        "timeEpoch": int(now * 1000),
    }
    if match.path_parameters:
        event["pathParameters"] = dict(match.path_parameters)
    is_base64_encoded = False
    if request.body:
        event["body"], is_base64_encoded = _event_body(request.body, headers.get("content-type"))
    event["isBase64Encoded"] = is_base64_encoded
    return event


def _header_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (str, int, float)):
        text = str(value)
    else:
        raise InvalidLambdaResponse(f"header {name} has a {type(value).__name__} value")
    if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
        raise InvalidLambdaResponse(f"header {name!r} contains a line break")
    return text


def response_from_result(result: Any) -> HttpResponse:
    """The HTTP response API Gateway makes of a handler's result (payload format 2.0).

    A dict with ``statusCode`` gives status, ``headers`` (and ``multiValueHeaders``), ``cookies``
    (one Set-Cookie each) and ``body`` (base64-decoded when ``isBase64Encoded``). Anything else is
    the body of a 200 application/json response: a string as is, other values as JSON.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        text = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("content-type", "application/json")], text.encode("utf-8"))
    status = result["statusCode"]
    try:
        if isinstance(status, bool) or not isinstance(status, (int, str)):
            raise ValueError
        status_code = int(status)
    except ValueError:
        raise InvalidLambdaResponse(f"statusCode {status!r} is not an integer") from None
    if not 100 <= status_code <= 599:
        raise InvalidLambdaResponse(f"statusCode {status_code} is not an HTTP status")
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise InvalidLambdaResponse("headers and multiValueHeaders must be objects")
    for name, value in single.items():
        headers.append((str(name), _header_text(str(name), value)))
    for name, values in multi.items():
        if not isinstance(values, list):
            raise InvalidLambdaResponse(f"multiValueHeaders {name} must be a list")
        headers.extend((str(name), _header_text(str(name), value)) for value in values)
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(cookie, str) for cookie in cookies):
        raise InvalidLambdaResponse("cookies must be a list of strings")
    headers.extend(("set-cookie", _header_text("set-cookie", cookie)) for cookie in cookies)
    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise InvalidLambdaResponse(f"body must be a string, not {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidLambdaResponse("isBase64Encoded is true but body is not base64") from None
    else:
        payload = body.encode("utf-8")
    headers = [(name, value) for name, value in headers if name.lower() not in _FRAMING_HEADERS]
    return HttpResponse(status_code, headers, payload)


def _json_message(status: int, message: str) -> HttpResponse:
    body = json.dumps({"message": message}, separators=(",", ":")).encode("utf-8")
    return HttpResponse(status, [("content-type", "application/json")], body)


# ---------------------------------------------------------------------------------------------
# Worker processes


class LocalLambdaContext:
    """The context object of Lambda's Python runtime, with the same attributes and types
    (``memory_limit_in_mb`` is a string there too)."""

    def __init__(self, aws_request_id: str, invoked_function_arn: str, deadline_ms: int) -> None:
        self.aws_request_id = aws_request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def worker_main(config_json: str) -> int:
    """A worker process: load one function's handler, then invoke it for each request line.

    Requests arrive as JSON lines on stdin, results leave as JSON lines on stdout. The handler gets
    neither: its stdin is empty and its stdout is the gateway's console (stderr), as its logs are.
    """
    config = json.loads(config_json)
    requests_in = os.fdopen(os.dup(0), "rb")
    results_out = os.fdopen(os.dup(1), "wb")
    empty = os.open(os.devnull, os.O_RDONLY)
    os.dup2(empty, 0)
    os.close(empty)
    os.dup2(2, 1)
    # Ctrl-C reaches the whole process group; the gateway stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:0] = [config["code_uri"], *config["layers"]]

    def send(line: str) -> None:
        results_out.write(line.encode("utf-8") + b"\n")
        results_out.flush()

    module_name, _, function_name = str(config["handler"]).rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception:
        traceback.print_exc()
        send(json.dumps({"ready": False}))
        return 1
    send(json.dumps({"ready": True}))
    for line in requests_in:
        request = json.loads(line)
        context = LocalLambdaContext(
            request["aws_request_id"], config["function_arn"], request["deadline_ms"]
        )
        try:
            # Serialised here, so a result that is not JSON counts as the handler's error.
            reply = json.dumps({"result": handler(request["event"], context)})
        except Exception as error:
            traceback.print_exc()
            reply = json.dumps({"error": type(error).__name__, **_error_detail(error)})
        send(reply)
    return 0


def _error_detail(error: BaseException) -> dict[str, Any]:
    """What Lambda's Invoke API answers about a handler's exception: its message and stack."""
    try:
        message = str(error)
    except Exception:
        message = ""
    return {"message": message, "stack": traceback.format_tb(error.__traceback__)}


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
                str(Path(__file__).resolve()),
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


# ---------------------------------------------------------------------------------------------
# The HTTP side


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
        # Functions without a route answer Lambda's Invoke API on this port (local/lambda_api.py).
        from local.lambda_api import unrouted_functions

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
        from local.lambda_api import invoke_api_response, is_invoke_request

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


# ---------------------------------------------------------------------------------------------
# Command line


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


if __name__ == "__main__":
    # Run as local.gateway, not __main__: local.lambda_api must see the same exception classes.
    from local.gateway import main as _main

    raise SystemExit(_main())
