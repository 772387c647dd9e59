"""A local API gateway without Docker: serves the HttpApi routes that ``template.yaml`` declares.

It does what ``sam local start-api`` does, minus the containers. Routes, handlers, layers,
environment and timeouts come from the template alone. Each function runs in worker processes of
its own (own ``os.environ``, own ``sys.modules``, only its CodeUri and layer folders prepended to
``sys.path``, as in Lambda), kept warm between requests. Requests reach handlers as API Gateway
HTTP API payload format 2.0 events; responses are mapped back the way API Gateway maps them.

    python -m local.gateway --port 3000 --template template.yaml \\
        --resources resources.json --env-vars events/env.json

Its parts, in the order a request meets them:

    template.py    reading template.yaml (short-form intrinsics as data)
    routes.py      the HttpApi routes and how API Gateway picks one
    functions.py   each function's handler, folders, timeout and resolved environment
    server.py      LocalGateway: the HTTP server, routing, invoking, answering
    events.py      payload format 2.0 events and the mapping of results to responses
    lambda_api.py  Lambda's Invoke API on the same port, for functions without a route
    workers.py     warm worker processes per function (the gateway's side)
    runtime.py     what runs inside a worker (Lambda's Python runtime, locally)
    console.py     the gateway's console lines
    cli.py         `python -m local.gateway`
"""

from __future__ import annotations

from local.gateway.cli import main
from local.gateway.events import (
    GatewayRequest,
    HttpResponse,
    InvalidLambdaResponse,
    build_event,
    response_from_result,
)
from local.gateway.functions import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    FunctionSpec,
    function_specs,
)
from local.gateway.routes import Route, RouteMatch, load_routes, match_route
from local.gateway.runtime import LocalLambdaContext
from local.gateway.server import DEFAULT_HOST, DEFAULT_PORT, GatewayError, LocalGateway
from local.gateway.template import TemplateError, load_template

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
