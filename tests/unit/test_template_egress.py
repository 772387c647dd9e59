"""The optional static-egress network (parameter StaticEgress).

Kite accepts order placement only from registered IPs, so users' own trading functions may join a
VPC whose private subnets leave the internet through NAT gateways with Elastic IPs. With the
parameter at ``none`` (the default) nothing of it exists; with ``single-az`` or ``two-az`` exactly
that network exists, and the rest of the stack is the same in every mode.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
TEMPLATE: dict[str, Any] = cfn_yaml.load(str(TEMPLATE_PATH))
MODES = ("none", "single-az", "two-az")
ZONES = {"none": 0, "single-az": 1, "two-az": 2}
OUTPUTS = ("StaticEgressIps", "StaticEgressSubnetIds", "StaticEgressSecurityGroupId", "StaticEgressVpcId")
ANYWHERE = "0.0.0.0/0"
_NO_VALUE = object()  # what !Ref AWS::NoValue leaves: the property is absent


class Deployment:
    """The template as CloudFormation deploys it for one StaticEgress value: resources and outputs
    whose conditions hold, with every Fn::If replaced by the branch its condition picks."""

    def __init__(self, mode: str, template: dict[str, Any] = TEMPLATE) -> None:
        self.template = template
        self.parameters = {
            name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
        }
        self.parameters["StaticEgress"] = mode
        self.resources: dict[str, dict[str, Any]] = {
            lid: self.resolve(resource)
            for lid, resource in template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }
        self.outputs: dict[str, Any] = {
            name: self.resolve(output["Value"])
            for name, output in template["Outputs"].items()
            if "Condition" not in output or self.condition(output["Condition"])
        }

    def condition(self, name: str) -> bool:
        return self._truth(self.template["Conditions"][name])

    def _truth(self, expression: Any) -> bool:
        ((function, argument),) = expression.items()
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::Not":
            return not self._truth(argument[0])
        if function == "Fn::And":
            return all(self._truth(item) for item in argument)
        if function == "Fn::Or":
            return any(self._truth(item) for item in argument)
        if function == "Fn::Equals":
            return bool(self._scalar(argument[0]) == self._scalar(argument[1]))
        raise AssertionError(f"{function} is not evaluated by these tests")

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in self.parameters:
            return self.parameters[value["Ref"]]
        return value

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Fn::If"}:
                name, when_true, when_false = value["Fn::If"]
                return self.resolve(when_true if self.condition(name) else when_false)
            if value == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not _NO_VALUE}
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not _NO_VALUE]
        return value

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            lid: resource["Properties"]
            for lid, resource in self.resources.items()
            if resource["Type"] == resource_type
        }


DEPLOYMENTS = {mode: Deployment(mode) for mode in MODES}


def ref(value: Any) -> str:
    assert isinstance(value, dict), value
    assert set(value) == {"Ref"}, value
    name: str = value["Ref"]
    return name


def get_att(value: Any) -> tuple[str, str]:
    assert isinstance(value, dict), value
    assert set(value) == {"Fn::GetAtt"}, value
    name, attribute = value["Fn::GetAtt"]
    return str(name), str(attribute)


def joined(value: Any) -> list[Any]:
    """The items of a comma-joined output; a single item is an output of one."""
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        delimiter, items = value["Fn::Join"]
        assert delimiter == ","
        return list(items)
    return [value]


def referenced(value: Any) -> set[str]:
    """Every name a value refers to through Ref, Fn::GetAtt or ${...} in Fn::Sub."""
    names: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref":
                names.add(str(item))
            elif key == "Fn::GetAtt":
                names.add(str(item[0]) if isinstance(item, list) else str(item).split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (item[0], item[1]) if isinstance(item, list) else (item, {})
                names.update(
                    name.split(".")[0]
                    for name in re.findall(r"\$\{([^!}][^}]*)\}", text)
                    if name not in variables
                )
                names |= referenced(variables)
            else:
                names |= referenced(item)
    elif isinstance(value, list):
        for item in value:
            names |= referenced(item)
    return names


def depends_on(resource: dict[str, Any]) -> list[str]:
    names = resource.get("DependsOn", [])
    return [names] if isinstance(names, str) else [str(name) for name in names]


def network(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in deployment.resources.items() if r["Type"].startswith("AWS::EC2::")}


# --- The parameter ----------------------------------------------------------------------------


def test_static_egress_is_off_unless_chosen() -> None:
    spec = TEMPLATE["Parameters"]["StaticEgress"]
    assert spec["Default"] == "none"
    assert list(spec["AllowedValues"]) == list(MODES)


# --- What exists in each mode -------------------------------------------------------------------

EXPECTED_NETWORK: dict[str, Counter[str]] = {
    "none": Counter(),
    "single-az": Counter(
        {
            "AWS::EC2::VPC": 1,
            "AWS::EC2::InternetGateway": 1,
            "AWS::EC2::VPCGatewayAttachment": 1,
            "AWS::EC2::Subnet": 2,  # one private, one public for the NAT gateway
            "AWS::EC2::RouteTable": 2,  # the private subnet's, the public one
            "AWS::EC2::Route": 2,
            "AWS::EC2::SubnetRouteTableAssociation": 2,
            "AWS::EC2::EIP": 1,
            "AWS::EC2::NatGateway": 1,
            "AWS::EC2::SecurityGroup": 1,
        }
    ),
    "two-az": Counter(
        {
            "AWS::EC2::VPC": 1,
            "AWS::EC2::InternetGateway": 1,
            "AWS::EC2::VPCGatewayAttachment": 1,
            "AWS::EC2::Subnet": 4,
            "AWS::EC2::RouteTable": 3,  # one per private subnet, one shared by the public ones
            "AWS::EC2::Route": 3,
            "AWS::EC2::SubnetRouteTableAssociation": 4,
            "AWS::EC2::EIP": 2,
            "AWS::EC2::NatGateway": 2,
            "AWS::EC2::SecurityGroup": 1,
        }
    ),
}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_creates_exactly_its_network(mode: str) -> None:
    found = Counter(resource["Type"] for resource in network(DEPLOYMENTS[mode]).values())
    assert found == EXPECTED_NETWORK[mode]


@pytest.mark.parametrize("mode", MODES)
def test_egress_outputs_exist_only_with_the_network(mode: str) -> None:
    present = {name for name in DEPLOYMENTS[mode].outputs if name in OUTPUTS}
    assert present == (set() if mode == "none" else set(OUTPUTS))


@pytest.mark.parametrize("mode", ["single-az", "two-az"])
def test_the_rest_of_the_stack_is_the_same_in_every_mode(mode: str) -> None:
    def rest(deployment: Deployment) -> dict[str, Any]:
        return {lid: r for lid, r in deployment.resources.items() if lid not in network(deployment)}

    assert rest(DEPLOYMENTS[mode]) == rest(DEPLOYMENTS["none"])
    outputs = {name: v for name, v in DEPLOYMENTS[mode].outputs.items() if name not in OUTPUTS}
    assert outputs == DEPLOYMENTS["none"].outputs


@pytest.mark.parametrize("mode", MODES)
def test_kitehooks_own_functions_stay_out_of_the_vpc(mode: str) -> None:
    # They need no fixed IP, and a VPC would change their cold starts.
    assert "VpcConfig" not in TEMPLATE["Globals"]["Function"]
    functions = DEPLOYMENTS[mode].of_type("AWS::Serverless::Function")
    assert functions
    assert [lid for lid, properties in functions.items() if "VpcConfig" in properties] == []


def test_two_az_only_adds_to_single_az_so_the_registered_ip_stays() -> None:
    # CloudFormation keeps a resource whose logical id and properties do not change: moving from
    # single-az to two-az keeps the first Elastic IP, the one already registered at Kite.
    single, double = network(DEPLOYMENTS["single-az"]), network(DEPLOYMENTS["two-az"])
    assert set(single) < set(double)
    assert {lid: double[lid] for lid in single} == single


@pytest.mark.parametrize("mode", MODES)
def test_every_reference_names_something_deployed(mode: str) -> None:
    deployment = DEPLOYMENTS[mode]
    known = set(deployment.resources) | set(deployment.parameters) | {"AWS::StackName", "AWS::Region"}
    known |= {"AWS::AccountId", "AWS::Partition", "AWS::URLSuffix", "AWS::NoValue"}
    egress = {lid: r for lid, r in deployment.resources.items() if lid in network(deployment)}
    egress_outputs = {name: deployment.outputs[name] for name in OUTPUTS if name in deployment.outputs}
    waits_for = {name for resource in egress.values() for name in depends_on(resource)}
    assert (referenced(egress) | referenced(egress_outputs) | waits_for) - known == set()


# --- The network's shape ------------------------------------------------------------------------


class Network:
    """The deployed network, read the way traffic flows: subnet -> route table -> target."""

    def __init__(self, deployment: Deployment) -> None:
        self.subnets = deployment.of_type("AWS::EC2::Subnet")
        self.nat_gateways = deployment.of_type("AWS::EC2::NatGateway")
        self.elastic_ips = deployment.of_type("AWS::EC2::EIP")
        self.route_tables = deployment.of_type("AWS::EC2::RouteTable")
        self.routes = deployment.of_type("AWS::EC2::Route")
        self.security_groups = deployment.of_type("AWS::EC2::SecurityGroup")
        [(self.vpc, _)] = deployment.of_type("AWS::EC2::VPC").items()
        [(self.internet_gateway, _)] = deployment.of_type("AWS::EC2::InternetGateway").items()
        [attachment] = deployment.of_type("AWS::EC2::VPCGatewayAttachment").values()
        assert (ref(attachment["VpcId"]), ref(attachment["InternetGatewayId"])) == (
            self.vpc,
            self.internet_gateway,
        )
        self.table_of: dict[str, str] = {}
        for association in deployment.of_type("AWS::EC2::SubnetRouteTableAssociation").values():
            subnet = ref(association["SubnetId"])
            assert subnet not in self.table_of, f"{subnet} has two route tables"
            self.table_of[subnet] = ref(association["RouteTableId"])
        # What users' functions join: the subnets the output names.
        self.private = [ref(item) for item in joined(deployment.outputs["StaticEgressSubnetIds"])]
        self.public = [ref(nat["SubnetId"]) for nat in self.nat_gateways.values()]

    def routes_of(self, table: str) -> list[tuple[str, str, str]]:
        """(destination, target kind, target) of every route in a table."""
        found: list[tuple[str, str, str]] = []
        for route in self.routes.values():
            if ref(route["RouteTableId"]) != table:
                continue
            targets = {key: value for key, value in route.items() if key not in ("RouteTableId",)}
            destination = targets.pop("DestinationCidrBlock")
            [(kind, target)] = targets.items()  # one target, and no IPv6 or prefix-list route
            found.append((destination, kind, ref(target)))
        return found

    def zone(self, subnet: str) -> Any:
        return self.subnets[subnet]["AvailabilityZone"]


@pytest.mark.parametrize("mode", ["single-az", "two-az"])
def test_subnets_are_private_for_functions_and_public_only_for_nat_gateways(mode: str) -> None:
    net = Network(DEPLOYMENTS[mode])
    assert len(net.private) == len(set(net.private)) == ZONES[mode]
    assert len(net.public) == len(set(net.public)) == ZONES[mode]
    assert set(net.private) | set(net.public) == set(net.subnets)
    assert not set(net.private) & set(net.public)
    # One subnet of each kind per zone, zones picked from the region's own list.
    for subnets in (net.private, net.public):
        assert sorted(net.zone(s)["Fn::Select"][0] for s in subnets) == list(range(ZONES[mode]))
        assert all(net.zone(s)["Fn::Select"][1] == {"Fn::GetAZs": ""} for s in subnets)
    for lid, subnet in net.subnets.items():
        assert ref(subnet["VpcId"]) == net.vpc
        # Nothing launched in them gets a public IP: users' functions reach Kite only via NAT.
        assert subnet["MapPublicIpOnLaunch"] is False, lid


@pytest.mark.parametrize("mode", ["single-az", "two-az"])
def test_private_subnets_leave_only_through_their_zones_nat_gateway(mode: str) -> None:
    net = Network(DEPLOYMENTS[mode])
    used_nat_gateways: set[str] = set()
    for subnet in net.private:
        [(destination, kind, nat)] = net.routes_of(net.table_of[subnet])
        assert (destination, kind) == (ANYWHERE, "NatGatewayId")
        assert net.zone(ref(net.nat_gateways[nat]["SubnetId"])) == net.zone(subnet)
        used_nat_gateways.add(nat)
    assert used_nat_gateways == set(net.nat_gateways)  # each NAT gateway (and IP) carries a zone
    assert len({net.table_of[subnet] for subnet in net.private}) == ZONES[mode]


@pytest.mark.parametrize("mode", ["single-az", "two-az"])
def test_public_subnets_route_only_to_the_internet_gateway(mode: str) -> None:
    net = Network(DEPLOYMENTS[mode])
    for subnet in net.public:
        assert net.routes_of(net.table_of[subnet]) == [(ANYWHERE, "GatewayId", net.internet_gateway)]
    # No route anywhere else in the VPC.
    counted = sum(len(net.routes_of(table)) for table in net.route_tables)
    assert counted == len(net.routes)
    assert all(ref(table["VpcId"]) == net.vpc for table in net.route_tables.values())


@pytest.mark.parametrize("mode", ["single-az", "two-az"])
def test_each_nat_gateway_has_its_own_elastic_ip_and_the_output_names_them_all(mode: str) -> None:
    deployment = DEPLOYMENTS[mode]
    net = Network(deployment)
    allocations = [get_att(nat["AllocationId"]) for nat in net.nat_gateways.values()]
    assert all(attribute == "AllocationId" for _, attribute in allocations)
    assert sorted(ip for ip, _ in allocations) == sorted(net.elastic_ips)
    assert all(nat["ConnectivityType"] == "public" for nat in net.nat_gateways.values())
    assert all(ip["Domain"] == "vpc" for ip in net.elastic_ips.values())
    # Every IP an order can leave from is one to register at Kite.
    registered = [get_att(item) for item in joined(deployment.outputs["StaticEgressIps"])]
    assert sorted(registered) == sorted((ip, "PublicIp") for ip in net.elastic_ips)
    assert len(registered) == ZONES[mode]


@pytest.mark.parametrize("mode", ["single-az", "two-az"])
def test_functions_security_group_allows_https_out_and_nothing_in(mode: str) -> None:
    deployment = DEPLOYMENTS[mode]
    net = Network(deployment)
    [(group_id, group)] = net.security_groups.items()
    assert ref(group["VpcId"]) == net.vpc
    assert "SecurityGroupIngress" not in group
    rules = [{k: v for k, v in rule.items() if k != "Description"} for rule in group["SecurityGroupEgress"]]
    assert rules == [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": ANYWHERE}]
    # No rule added from outside the group either.
    assert not deployment.of_type("AWS::EC2::SecurityGroupIngress")
    assert not deployment.of_type("AWS::EC2::SecurityGroupEgress")
    assert get_att(deployment.outputs["StaticEgressSecurityGroupId"]) == (group_id, "GroupId")
    assert ref(deployment.outputs["StaticEgressVpcId"]) == net.vpc


# --- The checks of the bad case: these tests see a broken network ----------------------------


def _broken(edit: str, mode: str) -> Deployment:
    template = cfn_yaml.loads(TEMPLATE_PATH.read_text())
    resources = template["Resources"]
    if edit == "private route to the internet gateway":
        del resources["EgressPrivateDefaultRouteA"]["Properties"]["NatGatewayId"]
        resources["EgressPrivateDefaultRouteA"]["Properties"]["GatewayId"] = {"Ref": "EgressInternetGateway"}
    elif edit == "public IPs in a private subnet":
        resources["EgressPrivateSubnetA"]["Properties"]["MapPublicIpOnLaunch"] = True
    elif edit == "second zone routed through the first zone's NAT gateway":
        resources["EgressPrivateDefaultRouteB"]["Properties"]["NatGatewayId"] = {"Ref": "EgressNatGatewayA"}
    elif edit == "first zone routed through the second zone's NAT gateway":
        resources["EgressPrivateDefaultRouteA"]["Properties"]["NatGatewayId"] = {"Ref": "EgressNatGatewayB"}
    elif edit == "an ingress rule":
        resources["EgressFunctionSecurityGroup"]["Properties"]["SecurityGroupIngress"] = [
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": ANYWHERE}
        ]
    return Deployment(mode, template)


BROKEN_NETWORKS = [
    (
        "private route to the internet gateway",
        "single-az",
        test_private_subnets_leave_only_through_their_zones_nat_gateway,
    ),
    (
        "public IPs in a private subnet",
        "single-az",
        test_subnets_are_private_for_functions_and_public_only_for_nat_gateways,
    ),
    (
        "second zone routed through the first zone's NAT gateway",
        "two-az",
        test_private_subnets_leave_only_through_their_zones_nat_gateway,
    ),
    (
        "first zone routed through the second zone's NAT gateway",
        "single-az",
        test_every_reference_names_something_deployed,
    ),
    ("an ingress rule", "two-az", test_functions_security_group_allows_https_out_and_nothing_in),
]


@pytest.mark.parametrize(
    ("edit", "mode", "check"), [pytest.param(*case, id=case[0]) for case in BROKEN_NETWORKS]
)
def test_the_network_checks_fail_on_a_broken_network(
    edit: str, mode: str, check: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(DEPLOYMENTS, mode, _broken(edit, mode))
    with pytest.raises(AssertionError):
        check(mode)


# --- Lint in every mode -------------------------------------------------------------------------

BIN = Path(sys.executable).parent


def template_defaulting_to(mode: str, directory: Path, text: str | None = None) -> Path:
    """A copy of the template whose StaticEgress defaults to ``mode``: how both linters see it."""
    source = TEMPLATE_PATH.read_text() if text is None else text
    changed, count = re.subn(
        r"(\n  StaticEgress:\n    Type: String\n    Default: )none\n", rf"\g<1>{mode}\n", source
    )
    assert count == 1, "the StaticEgress parameter is not where this test looks for it"
    path = directory / f"template-{mode}.yaml"
    path.write_text(changed)
    assert cfn_yaml.load(str(path))["Parameters"]["StaticEgress"]["Default"] == mode
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


@pytest.mark.parametrize("mode", MODES)
def test_sam_validate_lint_and_cfn_lint_pass_in_every_mode(mode: str, tmp_path: Path) -> None:
    template = template_defaulting_to(mode, tmp_path)
    sam = run(str(BIN / "sam"), "validate", "--lint", "--template", str(template), "--region", "ap-south-1")
    assert sam.returncode == 0, sam.stdout + sam.stderr
    cfn_lint = run(str(BIN / "cfn-lint"), str(template))
    assert cfn_lint.returncode == 0, cfn_lint.stdout + cfn_lint.stderr


def test_cfn_lint_refuses_a_reference_that_single_az_lacks(tmp_path: Path) -> None:
    # The linters judge the conditions: a single-az route to the second zone's NAT gateway fails.
    text = TEMPLATE_PATH.read_text().replace(
        "NatGatewayId: !Ref EgressNatGatewayA", "NatGatewayId: !Ref EgressNatGatewayB", 1
    )
    cfn_lint = run(str(BIN / "cfn-lint"), str(template_defaulting_to("single-az", tmp_path, text)))
    assert cfn_lint.returncode != 0
    assert "EgressNatGatewayB" in cfn_lint.stdout
