"""The template's HttpApi routes and how API Gateway picks one for a request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from local.gateway.template import TemplateError, _functions, _properties, load_template

DEFAULT_ROUTE = "$default"


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
