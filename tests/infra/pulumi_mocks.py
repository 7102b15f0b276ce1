"""Run a Pulumi program under Pulumi's own mocks and record what it registered.

Each ``run_program`` call starts from a fresh runtime: no root stack, the given config only, a new
mock monitor. The config mirrors what the Pulumi CLI hands a program: ``Pulumi.yaml`` defaults,
then ``Pulumi.<stack>.yaml`` values, then the secret keys (here: placeholders).

The mocks stand in for the Hetzner provider: numeric ids, inputs echoed as outputs, plus what
Hetzner computes (server addresses, ``<network id>-<ip range>`` subnet ids).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.settings import ROOT, get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO = Path(__file__).resolve().parents[2]
PROJECT = "hermes-max"
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # Pulumi's secret signature (sdk rpc.py)
REDACTED = "[secret]"
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
NETWORK = "hcloud:index/network:Network"
SUBNET = "hcloud:index/networkSubnet:NetworkSubnet"


def _encode(value: Any) -> str:
    """Config values as the CLI passes them: strings as-is, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def stack_config(stack: str) -> tuple[dict[str, str], set[str]]:
    """The shared stack's config for ``stack`` with placeholder secrets.

    Returns:
        (config dict of ``project:key`` -> string, set of secret keys).
    """
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    values = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    config: dict[str, str] = {}
    secrets: set[str] = set()
    for key, decl in project["config"].items():
        full = f"{PROJECT}:{key}"
        if decl.get("secret"):
            config[full] = f"placeholder-{key}-value"
            secrets.add(full)
        elif "default" in decl:
            config[full] = _encode(decl["default"])
    config.update({key: _encode(value) for key, value in values.items()})
    return config, secrets


def _unwrap(value: Any, redact: bool) -> Any:
    if isinstance(value, dict):
        if SECRET_SIG_KEY in value:
            return REDACTED if redact else _unwrap(value.get("value"), redact)
        return {k: _unwrap(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, redact) for v in value]
    return value


@dataclass
class Registration:
    """One resource the program registered.

    Attributes:
        type, name: Pulumi type token and logical name.
        custom: ``False`` for components.
        inputs: inputs with secrets unwrapped (camelCase keys, as providers and policies see them).
        plain_view: inputs with every secret replaced by ``"[secret]"`` (what is safe to show).
        ignore_changes: the ``ignore_changes`` option (camelCase property names).
        parent: the parent's URN.
    """

    type: str
    name: str
    custom: bool
    inputs: dict
    plain_view: dict
    ignore_changes: list[str]
    parent: str


@dataclass
class ProgramRun:
    """What one program run registered and exported."""

    resources: list[Registration]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, type_: str) -> list[Registration]:
        """Registrations of ``type_``, in registration order."""
        return [r for r in self.resources if r.type == type_]

    def servers(self) -> list[Registration]:
        """Every ``hcloud.Server``."""
        return self.of_type(SERVER)

    def server(self, role: str) -> Registration:
        """The shared server labelled ``role``."""
        (match,) = [s for s in self.servers() if s.inputs["labels"].get("role") == role]
        return match


class HcloudMocks(pulumi_mocks.Mocks):
    """Stand-in for the hcloud provider: numeric ids and echoed inputs."""

    def __init__(self) -> None:
        self._ids = itertools.count(4_711_001)

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        if not args.custom:
            return "", {}
        state = copy.deepcopy(args.inputs)
        n = next(self._ids)
        if args.typ == SUBNET:
            return f"{int(args.inputs['networkId'])}-{args.inputs['ipRange']}", state
        if args.typ == SERVER:
            self._server_state(state, n)
        return str(n), state

    @staticmethod
    def _server_state(state: dict, n: int) -> None:
        public = (state.get("publicNets") or [{}])[0]
        if public.get("ipv4Enabled", True):
            state["ipv4Address"] = f"203.0.113.{n % 250 + 1}"
        for network in state.get("networks") or []:
            network.setdefault("ip", f"10.0.16.{n % 250 + 2}")
        state["status"] = "running"

    def call(self, args: pulumi_mocks.MockCallArgs):
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The standard mock monitor, additionally keeping each registration's raw request."""

    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object)
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    inputs=_unwrap(raw, redact=False),
                    plain_view=_unwrap(raw, redact=True),
                    ignore_changes=list(request.ignoreChanges),
                    parent=request.parent,
                )
            )
        return response


def run_program(
    program: Callable[[], None],
    *,
    stack: str,
    config: dict[str, str],
    secret_keys: set[str] | None = None,
    project: str = PROJECT,
) -> ProgramRun:
    """Run ``program`` in a fresh mocked Pulumi runtime and collect its resources and outputs.

    The runtime's settings, root stack and config are context variables; the run happens in a
    copy of the current context, so nothing leaks into other tests (or theirs into this run).

    Raises:
        Whatever the program raises (after the runtime has drained its RPCs).
    """
    return contextvars.copy_context().run(
        _run_isolated, program, stack, config, secret_keys or set(), project
    )


def _run_isolated(
    program: Callable[[], None], stack: str, config: dict, secret_keys: set[str], project: str
) -> ProgramRun:
    ROOT.set(None)
    # Pulumi's runtime asks asyncio for this thread's loop; an earlier ``asyncio.run`` in the
    # same thread (another test) leaves none set, and then asyncio will not make one itself.
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_all_config(dict(config), sorted(secret_keys))
    mocks = HcloudMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    root = get_root_resource()
    _sync_await(run_pulumi_func(program))
    outputs, secret_outputs = {}, set()
    for name, value in root.outputs.items():
        output = pulumi.Output.from_input(value)
        outputs[name] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            secret_outputs.add(name)
    return ProgramRun(monitor.registrations, outputs, secret_outputs)


def run_shared_stack(stack: str, **overrides: str) -> ProgramRun:
    """Run ``infra/__main__.py`` (the real entry point) with ``stack``'s config.

    Args:
        overrides: extra ``hermes-max:<key>`` values (keys without the namespace).
    """
    import runpy

    config, secrets = stack_config(stack)
    config.update({f"{PROJECT}:{k}": v for k, v in overrides.items()})
    return run_program(
        lambda: runpy.run_path(str(REPO / "infra" / "__main__.py"), run_name="__main__"),
        stack=stack,
        config=config,
        secret_keys=secrets,
    )


BUS_URL = "rediss://tenant-t42:bus-password-7f3a9c@10.0.1.20:6380/0"
AGENT_TOKEN = "agent-token-5b1e0d7c"
ANTHROPIC_API_KEY = "sk-ant-api03-test-4e8d2a61"
OPENAI_API_KEY = "sk-or-v1-test-0a9b7c3d"
# PEM-shaped text: the tenant program only carries it; no TLS handshake happens under mocks.
BUS_CA_CERT = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"


def tenant_stack_config(shared: ProgramRun, **overrides: str) -> tuple[dict[str, str], set[str]]:
    """The config ``HetznerProvisioner`` sets on a tenant stack, built from shared outputs.

    Keys come from ``infra.tenant_config`` so a renamed key breaks this helper too.
    """
    from infra import tenant_config as tc

    out = shared.outputs
    config = {
        tc.ENV: out["env"],
        tc.LOCATION: out["location"],
        tc.SNAPSHOT_ID: out["snapshotId"],
        tc.NETWORK_ID: str(out["networkId"]),
        tc.FIREWALL_LABEL: out["tenantFirewallLabel"],
        tc.SERVER_TYPE_LIGHT: out["tenantServerTypeLight"],
        tc.SERVER_TYPE_HEAVY: out["tenantServerTypeHeavy"],
        tc.SSH_KEY_NAMES: out["sshKeyNames"],
        tc.CONTROL_URL: "https://control.staging.hermes.example",
        tc.BUS_URL: BUS_URL,
        tc.AGENT_TOKEN: AGENT_TOKEN,
        tc.BUS_CA_CERT: BUS_CA_CERT,
        "hermes:llmChain": "anthropic,openai_compat",
        "hermes:model": "claude-haiku-4-5",
        "hermes:anthropicApiKey": ANTHROPIC_API_KEY,
        "hermes:openaiBaseUrl": "https://openrouter.ai/api/v1",
        "hermes:openaiApiKey": OPENAI_API_KEY,
        "hermes:openaiModel": "meta-llama/llama-3.1-8b-instruct",
        tc.DAILY_BUDGET_CENTS: "50",
        "hermes:tz": "Europe/Berlin",
    }
    config.update({f"{tc.NAMESPACE}:{k}": v for k, v in overrides.items()})
    return config, {k for k in config if tc.TENANT_CONFIG_KEYS[k].secret}


def run_tenant(shared: ProgramRun, tenant_id: str, plan: str, **overrides: str) -> ProgramRun:
    """Run ``infra.tenant.build(tenant_id, plan)`` as the provisioner's inline program would."""
    from infra import tenant

    config, secrets = tenant_stack_config(shared, **overrides)
    return run_program(
        lambda: tenant.build(tenant_id, plan),
        stack=f"tenant-{tenant_id}",
        config=config,
        secret_keys=secrets,
        project="hermes-tenants",
    )
