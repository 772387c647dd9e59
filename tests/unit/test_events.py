"""The sample events stay what the README says they are."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kitehooks.postbacks.postback import PostbackRejected, parse_postback, verify_postback
from local.samples import LOCAL_API_SECRET, http_api_event

EVENTS = Path(__file__).resolve().parents[2] / "events"


def body_of(name: str) -> bytes:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    assert event["version"] == "2.0"
    body: str = event["body"]
    return base64.b64decode(body) if event["isBase64Encoded"] else body.encode()


def test_sample_postback_verifies_with_the_documented_local_secret() -> None:
    signed = parse_postback(body_of("postback.json"), 65536)
    assert verify_postback(signed, LOCAL_API_SECRET).order_id == "220303000308932"


def test_tampered_sample_is_well_formed_but_fails_its_checksum() -> None:
    signed = parse_postback(body_of("postback-tampered.json"), 65536)
    with pytest.raises(PostbackRejected, match="checksum"):
        verify_postback(signed, LOCAL_API_SECRET)


def test_malformed_sample_is_refused_as_json() -> None:
    with pytest.raises(PostbackRejected) as rejected:
        parse_postback(body_of("postback-malformed.json"), 65536)
    assert rejected.value.code == "malformed_json"


def test_env_json_names_only_functions_of_the_template_and_variables_they_declare() -> None:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(EVENTS.parent / "template.yaml"))
    global_vars = set(template["Globals"]["Function"]["Environment"]["Variables"])
    env = json.loads((EVENTS / "env.json").read_text())
    assert set(env["Parameters"]) <= global_vars
    for function, variables in env.items():
        if function == "Parameters":
            continue
        declared = global_vars | set(
            template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        )
        # sam local only overrides variables the template declares.
        assert set(variables) <= declared, function


@pytest.mark.parametrize("time_epoch", [10**15, 10**20, -1, True, "1795000000000", None, 0])
def test_an_implausible_receive_time_counts_as_now(time_epoch: object) -> None:
    from datetime import UTC, datetime

    from kitehooks.http import received_at

    event = http_api_event("POST", "/postback", b"{}")
    event["requestContext"]["timeEpoch"] = time_epoch
    assert abs((received_at(event) - datetime.now(UTC)).total_seconds()) < 5  # type: ignore[arg-type]


def test_the_receive_time_is_api_gateways() -> None:
    from datetime import UTC, datetime, timedelta

    from kitehooks.http import received_at

    event = http_api_event("POST", "/postback", b"{}")
    earlier = datetime.now(UTC) - timedelta(seconds=3)
    event["requestContext"]["timeEpoch"] = int(earlier.timestamp() * 1000)
    assert abs((received_at(event) - earlier).total_seconds()) < 0.002  # type: ignore[arg-type]
