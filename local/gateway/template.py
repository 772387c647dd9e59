"""Reading template.yaml: CloudFormation's short-form intrinsics as plain data, and its functions."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class TemplateError(ValueError):
    """The template, or a value it needs, cannot be served locally; the message says why."""


@functools.cache
def _template_loader() -> type[Any]:
    # yaml is imported on first use: importing the package only for its events never loads it.
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
