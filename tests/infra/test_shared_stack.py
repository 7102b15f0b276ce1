"""The shared stack (infra/__main__.py) under Pulumi mocks, with only Pulumi.yaml defaults, the
environment's Pulumi.<env>.yaml values and placeholder secrets: what `pulumi up` would create."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
for _path in (str(HERE), str(HERE.parents[1])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pulumi_mocks as pm

ENVS = ("staging", "prod")
PRIVATE_SERVICE_PORTS = {"6379", "6380", "9090", "3000", "9100"}


def stack_values(env: str) -> dict:
    return yaml.safe_load((pm.REPO / f"Pulumi.{env}.yaml").read_text())["config"]


@pytest.fixture(scope="module", params=ENVS)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def shared(env) -> pm.ProgramRun:
    return pm.run_shared_stack(env)


def firewall_role(fw: pm.Registration) -> str:
    return fw.inputs["labels"]["role"]


def world_rules(run: pm.ProgramRun):
    for fw in run.of_type(pm.FIREWALL):
        for rule in fw.inputs["rules"]:
            if set(rule["sourceIps"]) & {"0.0.0.0/0", "::/0"}:
                yield fw, rule


def test_private_network_is_10_0_0_0_16_with_shared_and_tenant_subnets(shared):
    (network,) = shared.of_type(pm.NETWORK)
    assert network.inputs["ipRange"] == "10.0.0.0/16"
    subnets = {s.inputs["ipRange"] for s in shared.of_type(pm.SUBNET)}
    assert subnets == {"10.0.1.0/24", "10.0.16.0/20"}
    for cidr in subnets:
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("10.0.0.0/16"))
    assert shared.outputs["tenantSubnetId"].endswith("-10.0.16.0/20")


def test_ssh_is_open_only_from_the_configured_ops_cidrs(shared, env):
    ops = stack_values(env)["hermes-max:opsCidrs"]
    ssh_rules = [
        r for fw in shared.of_type(pm.FIREWALL) for r in fw.inputs["rules"] if r["port"] == "22"
    ]
    assert ssh_rules, "no SSH rule at all"
    for rule in ssh_rules:
        assert rule["sourceIps"] == ops


def test_only_80_and_443_are_public_and_only_on_the_control_host(shared):
    public = list(world_rules(shared))
    assert sorted(rule["port"] for _, rule in public) == ["443", "80"]
    public_fw_ids = {shared.outputs["firewallIds"][firewall_role(fw)] for fw, _ in public}
    exposed = {
        s.inputs["labels"]["role"]
        for s in shared.servers()
        if public_fw_ids & {int(i) for i in s.inputs["firewallIds"]}
    }
    assert exposed == {"control"}


def test_redis_prometheus_grafana_node_exporter_only_from_the_private_network(shared):
    seen = set()
    for fw in shared.of_type(pm.FIREWALL):
        for rule in fw.inputs["rules"]:
            if rule["port"] in PRIVATE_SERVICE_PORTS:
                seen.add(rule["port"])
                assert rule["sourceIps"] == ["10.0.0.0/16"], (fw.name, rule)
    assert seen == PRIVATE_SERVICE_PORTS


def test_redis_and_monitoring_firewalls_are_attached_to_their_hosts(shared):
    ids = shared.outputs["firewallIds"]
    for role in ("redis", "monitoring", "control"):
        attached = {int(i) for i in shared.server(role).inputs["firewallIds"]}
        assert attached == {ids["ssh"], ids[role]} | ({ids["web"]} if role == "control" else set())


def test_tenant_firewall_applies_by_the_exported_label_selector(shared, env):
    (tenant_fw,) = [fw for fw in shared.of_type(pm.FIREWALL) if firewall_role(fw) == "tenant"]
    assert tenant_fw.inputs["applyTos"] == [
        {"labelSelector": shared.outputs["tenantFirewallLabel"]}
    ]
    assert shared.outputs["tenantFirewallLabel"] == f"hermes-firewall={env}-tenant"
    ports = {r["port"]: r["sourceIps"] for r in tenant_fw.inputs["rules"]}
    assert ports == {"22": stack_values(env)["hermes-max:opsCidrs"], "9100": ["10.0.0.0/16"]}


def test_every_server_is_labelled_app_env_role(shared, env):
    roles = []
    for server in shared.servers():
        labels = server.inputs["labels"]
        assert labels["app"] == "hermes"
        assert labels["env"] == env
        roles.append(labels["role"])
    assert sorted(roles) == ["control", "monitoring", "redis"]


def test_redis_and_monitoring_are_private_only_and_control_is_public(shared):
    for role, ip in (("redis", "10.0.1.20"), ("monitoring", "10.0.1.30"), ("control", "10.0.1.10")):
        server = shared.server(role)
        (attachment,) = server.inputs["networks"]
        assert attachment["ip"] == ip
        assert attachment["networkId"] == shared.outputs["networkId"]
        assert attachment["subnetId"] == shared.outputs["sharedSubnetId"]
        (public,) = server.inputs["publicNets"]
        assert public["ipv4Enabled"] is (role == "control")
    assert shared.outputs["controlPublicIpv4"]


def test_public_ipv4_on_redis_only_when_configured():
    run = pm.run_shared_stack("staging", redisPublicIpv4="true")
    assert run.server("redis").inputs["publicNets"][0]["ipv4Enabled"] is True
    assert run.server("monitoring").inputs["publicNets"][0]["ipv4Enabled"] is False


def test_shared_hosts_are_spread_and_get_the_ops_ssh_keys(shared):
    (group,) = shared.of_type("hcloud:index/placementGroup:PlacementGroup")
    assert group.inputs["type"] == "spread"
    keys = shared.of_type("hcloud:index/sshKey:SshKey")
    assert [k.inputs["name"] for k in keys] == shared.outputs["sshKeyNames"].split(",")
    for server in shared.servers():
        assert server.inputs["placementGroupId"] == shared.outputs["placementGroupId"]
        assert len(server.inputs["sshKeys"]) == len(keys)


def test_outputs_carry_what_the_tenant_program_needs(shared, env):
    values = stack_values(env)
    out = shared.outputs
    assert isinstance(out["networkId"], int)
    assert set(out["firewallIds"]) == {"ssh", "web", "control", "redis", "monitoring", "tenant"}
    assert out["snapshotId"] == values["hermes-max:snapshotId"]
    assert out["redisPrivateIp"] == "10.0.1.20"
    assert out["redisUrl"] == "rediss://10.0.1.20:6380"
    assert out["archiveBucket"] == values["hermes-max:archiveBucket"]
    assert out["archiveEndpoint"].startswith("https://")
    assert (out["tenantServerTypeLight"], out["tenantServerTypeHeavy"]) == ("cx23", "cx33")


def test_archive_credentials_are_secret_outputs_and_never_plain_inputs(shared):
    assert {"archiveAccessKey", "archiveSecretKey"} <= shared.secret_outputs
    plain = json.dumps([r.plain_view for r in shared.resources])
    assert "placeholder-archive" not in plain


def test_ops_cidr_of_the_whole_internet_is_refused():
    with pytest.raises(Exception, match="open the port to the world"):
        pm.run_shared_stack("staging", opsCidrs='["0.0.0.0/0"]')


def test_fixed_address_outside_the_shared_subnet_is_refused():
    with pytest.raises(Exception, match="redisPrivateIp"):
        pm.run_shared_stack("staging", redisPrivateIp="10.0.16.5")


def test_project_file_declares_every_key_with_a_description_and_secrets_have_no_default():
    project = yaml.safe_load((pm.REPO / "Pulumi.yaml").read_text())
    assert project["name"] == "hermes-max" and project["main"] == "infra/"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    for key, decl in project["config"].items():
        assert decl.get("description"), key
        assert decl["type"] in {"string", "boolean", "array", "integer"}, key
        if decl.get("secret"):
            assert "default" not in decl, key
    declared = {f"hermes-max:{k}" for k in project["config"]}
    secret = {f"hermes-max:{k}" for k, d in project["config"].items() if d.get("secret")}
    for env in ENVS:
        keys = set(stack_values(env))
        assert keys <= declared, keys - declared
        assert not keys & secret, "secrets belong in encrypted stack config, not in the repo"
