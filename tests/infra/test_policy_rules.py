"""The policy pack's rules, applied to the resources the mocked programs register: the real
programs pass, and each rule fires on a resource made bad in the way it guards against."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

HERE = Path(__file__).resolve().parent
for _path in (str(HERE), str(HERE.parents[1])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pulumi_mocks as pm

from infra.policy import rules
from infra.policy.pack import build_policies

ALLOW = {rules.ALLOWED_PUBLIC_IPV4_ROLES: ["redis"]}


@pytest.fixture(scope="module")
def programs() -> dict[str, pm.ProgramRun]:
    staging = pm.run_shared_stack("staging")
    return {
        "staging": staging,
        "prod": pm.run_shared_stack("prod"),
        "tenant-light": pm.run_tenant(staging, "t42", "light"),
        "tenant-heavy": pm.run_tenant(staging, "t43", "heavy"),
    }


def resource(programs, program: str, type_: str, **labels) -> dict:
    """A deep copy of the inputs of the first ``type_`` in ``program`` with these labels."""
    for reg in programs[program].of_type(type_):
        if all(reg.inputs.get("labels", {}).get(k) == v for k, v in labels.items()):
            return copy.deepcopy(reg.inputs)
    raise LookupError((program, type_, labels))


def ssh_firewall(programs):
    return resource(programs, "staging", pm.FIREWALL, role="ssh")


def test_the_real_programs_pass_every_rule(programs):
    checked = 0
    for name, run in programs.items():
        for reg in run.resources:
            assert rules.check(reg.type, reg.inputs) == {}, (name, reg.name)
            checked += reg.type in (pm.SERVER, pm.FIREWALL)
    assert checked == 2 * (3 + 6) + 2


@pytest.mark.parametrize("port", ["22", "6379", "6380", "9090", "3000"])
@pytest.mark.parametrize("world", ["0.0.0.0/0", "::/0"])
def test_admin_port_open_to_the_world_fires(programs, port, world):
    props = ssh_firewall(programs)
    props["rules"].append(
        {"direction": "in", "protocol": "tcp", "port": port, "sourceIps": [world]}
    )
    assert list(rules.check(pm.FIREWALL, props)) == ["no-world-open-admin-ports"]


@pytest.mark.parametrize("port", ["any", "1-65535", "6000-7000", "20-25"])
def test_port_range_covering_an_admin_port_fires(programs, port):
    props = ssh_firewall(programs)
    props["rules"][0].update(port=port, sourceIps=["10.0.0.0/16", "0.0.0.0/0"])
    assert rules.world_open_ports(pm.FIREWALL, props)


def test_public_web_ports_and_outbound_rules_do_not_fire(programs):
    props = resource(programs, "staging", pm.FIREWALL, role="web")
    props["rules"].append(
        {"direction": "out", "protocol": "tcp", "port": "22", "destinationIps": ["0.0.0.0/0"]}
    )
    assert rules.world_open_ports(pm.FIREWALL, props) == []


@pytest.mark.parametrize("drop", ["app", "env", "role"])
def test_shared_server_missing_a_label_fires(programs, drop):
    props = resource(programs, "staging", pm.SERVER, role="redis")
    del props["labels"][drop]
    assert list(rules.check(pm.SERVER, props)) == ["servers-labelled"]


def test_tenant_server_missing_its_tenant_label_fires(programs):
    props = resource(programs, "tenant-light", pm.SERVER)
    del props["labels"]["tenant"]
    assert "servers-labelled" in rules.check(pm.SERVER, props)


@pytest.mark.parametrize("keep_disk", [False, None])
def test_tenant_server_without_keep_disk_fires(programs, keep_disk):
    props = resource(programs, "tenant-heavy", pm.SERVER)
    props["keepDisk"] = keep_disk
    assert list(rules.check(pm.SERVER, props)) == ["tenant-keep-disk"]


@pytest.mark.parametrize("role", ["redis", "monitoring"])
def test_private_host_with_public_ipv4_fires_unless_configured(programs, role):
    props = resource(programs, "prod", pm.SERVER, role=role)
    props["publicNets"][0]["ipv4Enabled"] = True
    assert list(rules.check(pm.SERVER, props)) == ["private-hosts-no-public-ipv4"]
    del props["publicNets"]  # Hetzner's default is a public IPv4 address
    assert rules.public_ipv4_on_private_host(pm.SERVER, props)
    allowed = {rules.ALLOWED_PUBLIC_IPV4_ROLES: [role]}
    assert rules.public_ipv4_on_private_host(pm.SERVER, props, allowed) == []


def test_stack_configured_with_public_redis_needs_the_policy_config_too():
    run = pm.run_shared_stack("staging", redisPublicIpv4="true")
    redis = run.server("redis")
    assert rules.check(pm.SERVER, redis.inputs) == {
        "private-hosts-no-public-ipv4": ["redis server has a public IPv4 address"]
    }
    assert rules.check(pm.SERVER, redis.inputs, ALLOW) == {}


def validation_args(type_: str, props: dict, config: dict | None = None) -> ResourceValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    return ResourceValidationArgs(
        type_, props, f"urn:pulumi:test::hermes-max::{type_}::x", "x", opts, None, config
    )


def test_policy_pack_reports_through_each_policy(programs):
    policies = {p.name: p for p in build_policies()}
    assert set(policies) == set(rules.RULES)
    bad_fw = ssh_firewall(programs)
    bad_fw["rules"][0]["sourceIps"] = ["::/0"]
    bad_server = resource(programs, "tenant-light", pm.SERVER)
    bad_server.update(keepDisk=False, labels={"tenant": "t42"})
    bad_redis = resource(programs, "staging", pm.SERVER, role="redis")
    bad_redis["publicNets"] = [{"ipv4Enabled": True}]
    cases = {
        "no-world-open-admin-ports": (pm.FIREWALL, bad_fw),
        "servers-labelled": (pm.SERVER, bad_server),
        "tenant-keep-disk": (pm.SERVER, bad_server),
        "private-hosts-no-public-ipv4": (pm.SERVER, bad_redis),
    }
    for name, (type_, props) in cases.items():
        assert run_policy(policies[name], validation_args(type_, props)), name
    allowed = validation_args(pm.SERVER, bad_redis, ALLOW)
    assert run_policy(policies["private-hosts-no-public-ipv4"], allowed) == []


def run_policy(policy, args: ResourceValidationArgs) -> list[str]:
    """Messages ``policy`` reports for ``args``."""
    reported: list[str] = []
    policy.validate(args, lambda message, urn=None: reported.append(message))
    return reported
