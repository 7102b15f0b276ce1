"""In-process stand-in of the Pulumi workspace boundary (``StackWorkspace``) for tests.

It models what the provisioner relies on: stacks per project, config (secret flags kept),
checkpoints with resources and ``pending_operations``, outputs, and the effect of the tenant
program (one labelled server in the hcloud stand-in, sized by the plan's config key), plus
injected failures whose *text* goes through the real ``classify_output`` (429, 5xx, concurrent
update) and an interrupted ``up`` that leaves a pending create behind.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from control.providers.hetzner.stacks import SERVER_TYPE_TOKEN
from control.providers.hetzner.workspace import (
    PreviewOutcome,
    StackOperationError,
    StackRef,
    classify_output,
)
from infra import tenant_config as tc

RATE_LIMITED = ("error: hcloud:index/server:Server resource 'agent': 1 error occurred: "
                "* limit of 3600 requests per hour reached (rate_limit_exceeded, 7c9ab2)")
SERVER_ERROR = ("error: creating server: error within the API (server_error, 3f1a2b): "
                "500 Internal Server Error")
CONCURRENT = "error: the stack is currently locked by 1 lock(s). Either wait or `pulumi cancel`"


@dataclass
class FakeStack:
    config: dict = field(default_factory=dict)
    resources: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)


class FakeStackWorkspace:
    """``StackWorkspace`` stand-in backed by an ``HcloudStandin`` for the program's effect."""

    def __init__(self, hcloud_standin):
        self.api = hcloud_standin
        self.stacks: dict[tuple[str, str], FakeStack] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str]] = []  # (operation, output text)
        self.interrupt_next_up = False
        self.shared_changes: dict[str, int] = {}

    # -- test controls ----------------------------------------------------------------------
    def fail(self, operation: str, output: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` fail with ``output``."""
        self.failures.extend([(operation, output)] * times)

    def _enter(self, op: str, ref: StackRef) -> None:
        self.calls.append((op, ref.name))
        for i, (fail_op, text) in enumerate(self.failures):
            if fail_op == op:
                del self.failures[i]
                raise StackOperationError(ref.name, classify_output(text), text)

    def _stack(self, ref: StackRef) -> FakeStack:
        try:
            return self.stacks[(ref.project, ref.name)]
        except KeyError:
            text = f"error: no stack named '{ref.name}' found"
            raise StackOperationError(ref.name, classify_output(text), text) from None

    # -- StackWorkspace ----------------------------------------------------------------------
    def ensure(self, ref):
        self._enter("ensure", ref)
        self.stacks.setdefault((ref.project, ref.name), FakeStack())

    def exists(self, ref):
        self._enter("exists", ref)
        return (ref.project, ref.name) in self.stacks

    def set_config(self, ref, values):
        self._enter("set_config", ref)
        self._stack(ref).config.update(values)

    def up(self, ref):
        self._enter("up", ref)
        stack = self._stack(ref)
        if stack.pending:
            text = ("error: the current deployment has 1 resource(s) with pending operations:\n"
                    f"  * {stack.pending[0]['resource']['urn']}, interrupted while creating")
            raise StackOperationError(ref.name, classify_output(text), text)
        program = ref.program
        cfg = {k: v.value for k, v in stack.config.items()}
        for key in (tc.BUS_URL, tc.AGENT_TOKEN):
            if key not in stack.config or not stack.config[key].secret:
                raise StackOperationError(ref.name, "failed", f"missing secret config {key}")
        server_type = cfg[tc.PLAN_SERVER_TYPE_KEYS[program.plan]]
        labels = {**tc.parse_label_selector(cfg[tc.FIREWALL_LABEL]), "app": "hermes",
                  "env": cfg[tc.ENV], "tenant": program.tenant, "plan": program.plan}
        urn = f"urn:pulumi:{ref.name}::{ref.project}::{SERVER_TYPE_TOKEN}::agent"
        server = self._tracked_server(stack)
        if server is None:
            name = tc.server_name(cfg[tc.ENV], program.tenant)
            if self.interrupt_next_up:
                # The provider created the server, then the worker died before the checkpoint
                # recorded it: Pulumi leaves a pending create (docs, "Interrupted updates").
                self.interrupt_next_up = False
                self.api.add_server(name, labels, server_type, networks=(int(cfg[tc.NETWORK_ID]),))
                stack.pending.append({"resource": {"urn": urn, "type": SERVER_TYPE_TOKEN},
                                      "type": "creating"})
                raise StackOperationError(ref.name, "failed", "signal: killed")
            server = self.api.add_server(name, labels, server_type,
                                         networks=(int(cfg[tc.NETWORK_ID]),))
            stack.resources = [{"urn": f"urn:pulumi:{ref.name}::{ref.project}::pulumi:pulumi:"
                                       f"Stack::{ref.project}-{ref.name}",
                                "type": "pulumi:pulumi:Stack"},
                               {"urn": urn, "type": SERVER_TYPE_TOKEN, "id": str(server["id"])}]
        else:
            # keep_disk=True: Hetzner changes the type in place, up or down.
            server["server_type"] = self.api._type(server_type)
            server["labels"] = labels
        stack.outputs = {"server_id": str(server["id"]), "server_name": server["name"],
                         "private_ip": server["private_net"][0]["ip"],
                         "server_type": server_type, "plan": program.plan}
        return dict(stack.outputs)

    def _tracked_server(self, stack: FakeStack):
        for res in stack.resources:
            if res["type"] == SERVER_TYPE_TOKEN:
                return self.api.servers.get(int(res["id"]))
        return None

    def preview(self, ref, *, refresh, expect_no_changes):
        self._enter("preview", ref)
        if ref.work_dir is not None:
            return PreviewOutcome(dict(self.shared_changes) or {"same": 12}, "shared preview")
        stack = self._stack(ref)
        tracked = [r for r in stack.resources if r["type"] == SERVER_TYPE_TOKEN]
        server = self._tracked_server(stack)
        if tracked and server is None:
            return PreviewOutcome({"create": 1, "same": 1}, "server deleted out of band")
        if server is not None:
            cfg = {k: v.value for k, v in stack.config.items()}
            wanted = cfg[tc.PLAN_SERVER_TYPE_KEYS[stack.outputs["plan"]]]
            if server["server_type"]["name"] != wanted:
                return PreviewOutcome({"update": 1, "same": 1}, "server type changed")
        return PreviewOutcome({"same": len(stack.resources)}, "no changes")

    def refresh(self, ref):
        self._enter("refresh", ref)
        stack = self._stack(ref)
        stack.resources = [r for r in stack.resources if r["type"] != SERVER_TYPE_TOKEN
                           or int(r["id"]) in self.api.servers]

    def destroy(self, ref):
        self._enter("destroy", ref)
        stack = self._stack(ref)
        for res in stack.resources:
            if res["type"] == SERVER_TYPE_TOKEN:
                self.api.servers.pop(int(res["id"]), None)
        stack.resources, stack.outputs = [], {}

    def outputs(self, ref):
        self._enter("outputs", ref)
        return dict(self._stack(ref).outputs)

    def export_state(self, ref):
        self._enter("export", ref)
        stack = self._stack(ref)
        return {"version": 3, "deployment": {"resources": copy.deepcopy(stack.resources),
                                             "pending_operations": copy.deepcopy(stack.pending)}}

    def import_state(self, ref, state):
        self._enter("import", ref)
        stack = self._stack(ref)
        stack.resources = copy.deepcopy(state["deployment"].get("resources") or [])
        stack.pending = copy.deepcopy(state["deployment"].get("pending_operations") or [])

    def remove(self, ref):
        self._enter("remove", ref)
        if self._stack(ref).resources:
            raise StackOperationError(ref.name, "failed",
                                      f"error: stack '{ref.name}' still has resources")
        del self.stacks[(ref.project, ref.name)]

    def list_stacks(self, project, work_dir=None):
        self.calls.append(("list_stacks", project))
        return sorted(name for proj, name in self.stacks if proj == project)
