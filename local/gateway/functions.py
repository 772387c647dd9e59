"""How to run each function as Lambda would: handler, folders, timeout and its resolved environment."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.gateway.routes import _routes
from local.gateway.template import TemplateError, _functions, _properties, load_template

DEFAULT_REGION = "ap-south-1"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_STACK_NAME = "kitehooks"
DEFAULT_TIMEOUT_SECONDS = 3  # Lambda's default when the template sets none
DEFAULT_MEMORY_MB = 128  # likewise
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


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
        # A function whose Condition is false is not deployed: locally it does not run either.
        condition = functions[function_id].get("Condition")
        try:
            deployed = condition is None or resolver.condition(condition)
        except _Unresolvable as error:
            raise TemplateError(f"{function_id}: Condition: {error}") from None
        if not deployed:
            raise TemplateError(f"{function_id} is not deployed with these parameters ({condition} is false)")
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
