"""The example consumer in the local stack: like the deployed stack, it exists only with
ExampleConsumer=on."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.gateway.functions import function_specs
from local.gateway.lambda_api import unrouted_functions
from local.gateway.template import TemplateError

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
RESOURCES = {
    "ApiCredentialsSecret": {"Ref": "arn:aws:secretsmanager:ap-south-1:123456789012:secret:credentials"},
    "ConsumerIdempotencyTable": {"Ref": "kitehooks-ConsumerIdempotencyTable"},
}


def test_with_the_default_parameters_the_consumer_does_not_run_locally() -> None:
    with pytest.raises(TemplateError, match=r"ConsumerFunction is not deployed with these parameters"):
        function_specs(TEMPLATE, RESOURCES, function_ids=["ConsumerFunction"])
    _, unavailable = unrouted_functions(TEMPLATE, {}, RESOURCES, None, None, None)
    assert "HasExampleConsumer is false" in unavailable["ConsumerFunction"]


def test_with_example_consumer_on_it_runs_as_the_template_says() -> None:
    [spec] = function_specs(
        TEMPLATE, RESOURCES, parameter_overrides={"ExampleConsumer": "on"}, function_ids=["ConsumerFunction"]
    ).values()
    assert spec.environment["IDEMPOTENCY_TABLE"] == "kitehooks-ConsumerIdempotencyTable"
    assert (spec.handler, spec.code_uri.name, spec.timeout) == ("app.handler", "consumer", 10)
    invocable, unavailable = unrouted_functions(
        TEMPLATE, {}, RESOURCES, None, None, {"ExampleConsumer": "on"}
    )
    assert "ConsumerFunction" in invocable
    assert "ConsumerFunction" not in unavailable
