"""``MockEngineWorkspace``: the rehearsal's stand-in for the Pulumi engine (CLI + hcloud plugin).

The Pulumi CLI and provider plugins cannot be installed here, so this ``StackWorkspace`` runs
the REAL inline program (``infra.tenant.build`` through ``TenantProgram``) under Pulumi's own
mocks (``pulumi.runtime.set_mocks``), with the stack's config set exactly as the provisioner
set it. The mocks play the hcloud provider against the Hetzner API (here the hcloud stand-in):
a new ``hcloud:index/server:Server`` is created with the program's rendered name, type, image,
labels, networks and cloud-init ``user_data``; a server the state already tracks is updated
in place (labels; a changed ``serverType`` is applied as poweroff → change_type → poweron,
``upgrade_disk`` false for ``keepDisk``), as the provider does. Stack state (config, resources,
outputs) is one JSON file per stack below the ``file://`` backend directory, mode 0600.

Not modelled: diffs of other inputs (``ignore_changes`` on image and user data makes them
moot for this program), previews beyond the server type, and the passphrase encryption of
secret config (the state file is root-only instead). Never used outside the rehearsal: the
production default is ``PulumiStackWorkspace``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from control.providers.hetzner.stacks import SERVER_TYPE_TOKEN
from control.providers.hetzner.workspace import (
    PreviewOutcome,
    StackOperationError,
    StackRef,
    classify_output,
)

SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # Pulumi's secret signature (sdk rpc.py)
_RUN_LOCK = threading.Lock()  # Pulumi's runtime settings are process-global.


class HcloudApiError(Exception):
    """The Hetzner API answered an error; the text mimics the provider's error line."""


class HcloudApi:
    """The few Hetzner Cloud API calls the hcloud provider makes for a server."""

    def __init__(self, endpoint: str, token: str, timeout: float = 30.0):
        self.http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """Send one request and return its JSON body.

        Raises:
            HcloudApiError: a non-2xx answer (message carries Hetzner's code and the status).
        """
        response = self.http.request(method, path, json=body)
        if response.status_code >= 400:
            error = (response.json() if response.content else {}).get("error") or {}
            raise HcloudApiError(f"error: {method} {path}: {error.get('message')} "
                                 f"({error.get('code')}, {response.status_code})")
        return response.json() if response.content else {}

    def wait(self, action: dict, timeout: float = 60.0) -> None:
        """Poll ``/actions/{id}`` until the action succeeded.

        Raises:
            HcloudApiError: the action failed or did not finish within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.call("GET", f"/actions/{action['id']}")["action"]
            if current["status"] == "success":
                return
            if current["status"] == "error":
                raise HcloudApiError(f"error: action {action['command']} failed: "
                                     f"{current.get('error')}")
            time.sleep(0.1)
        raise HcloudApiError(f"error: action {action['command']} timed out (timeout, 504)")


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if SECRET_SIG_KEY in value:
            return _unwrap(value.get("value"))
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


class StackFiles:
    """One JSON document per stack: ``<dir>/<project>/<stack>.json``."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, project: str, name: str) -> Path:
        return self.directory / project / f"{name}.json"

    def load(self, ref: StackRef) -> dict:
        path = self.path(ref.project, ref.name)
        if not path.exists():
            text = f"error: no stack named '{ref.name}' found"
            raise StackOperationError(ref.name, classify_output(text), text)
        return json.loads(path.read_text())

    def save(self, ref: StackRef, stack: dict) -> None:
        path = self.path(ref.project, ref.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(stack, indent=2, sort_keys=True))
        tmp.replace(path)


def _new_stack() -> dict:
    return {"config": {}, "resources": [], "outputs": {}, "pending_operations": []}


class MockEngineWorkspace:
    """``StackWorkspace`` running inline programs under Pulumi mocks against the hcloud API.

    Same constructor as ``PulumiStackWorkspace`` so it can replace it one-for-one.

    Args:
        backend_url: ``file:///dir``; stack state lives below ``dir``.
        passphrase: accepted for interface parity; not used (see module doc).
        env_vars: must hold ``HCLOUD_TOKEN`` and ``HCLOUD_ENDPOINT`` (the provider's settings).
        pulumi_home: ignored (no plugins).

    Raises:
        ValueError: the backend is not a ``file://`` URL.
    """

    def __init__(self, backend_url: str, passphrase: str = "", env_vars: dict | None = None,
                 pulumi_home: str | None = None):
        parsed = urlparse(backend_url)
        if parsed.scheme != "file":
            raise ValueError(f"the rehearsal engine keeps state in a file:// backend, "
                             f"not {backend_url!r}")
        self.files = StackFiles(Path(parsed.path))
        env = env_vars or {}
        self.api = HcloudApi(env["HCLOUD_ENDPOINT"], env["HCLOUD_TOKEN"])

    # -- StackWorkspace ---------------------------------------------------------------------
    def ensure(self, ref):
        if not self.files.path(ref.project, ref.name).exists():
            self.files.save(ref, _new_stack())

    def exists(self, ref):
        return self.files.path(ref.project, ref.name).exists()

    def set_config(self, ref, values):
        stack = self.files.load(ref)
        stack["config"].update({k: {"value": v.value, "secret": v.secret}
                                for k, v in values.items()})
        self.files.save(ref, stack)

    def up(self, ref):
        if ref.program is None:
            raise StackOperationError(ref.name, "failed",
                                      "the rehearsal engine runs inline programs only")
        stack = self.files.load(ref)
        if stack["pending_operations"]:
            text = ("error: the current deployment has pending operations: "
                    "interrupted while creating")
            raise StackOperationError(ref.name, classify_output(text), text)
        mocks = ProviderMocks(self.api, ref, stack)
        try:
            outputs = run_program(ref, stack, mocks)
        except HcloudApiError as err:
            self.files.save(ref, stack)
            raise StackOperationError(ref.name, classify_output(str(err)), str(err)) from err
        except Exception as err:  # the program's own errors, as `pulumi up` reports them
            self.files.save(ref, stack)
            text = f"error: program failed: {type(err).__name__}: {err}"
            raise StackOperationError(ref.name, classify_output(text), text) from err
        stack["outputs"] = outputs
        self.files.save(ref, stack)
        return dict(outputs)

    def preview(self, ref, *, refresh, expect_no_changes):
        stack = self.files.load(ref)
        if refresh:
            self._refresh(stack)
        changes = {"same": len(stack["resources"])}
        for res in stack["resources"]:
            server = self._server(res["id"])
            if server is None:
                changes = {"create": 1, "same": len(stack["resources"]) - 1}
            elif server["server_type"]["name"] != res["inputs"].get("serverType"):
                changes = {"update": 1, "same": len(stack["resources"]) - 1}
        return PreviewOutcome(changes, "rehearsal engine preview (server type and existence)")

    def refresh(self, ref):
        stack = self.files.load(ref)
        self._refresh(stack)
        self.files.save(ref, stack)

    def destroy(self, ref):
        stack = self.files.load(ref)
        for res in list(stack["resources"]):
            try:
                self.api.call("DELETE", f"/servers/{res['id']}")
            except HcloudApiError as err:
                if "not_found" not in str(err):
                    self.files.save(ref, stack)
                    raise StackOperationError(ref.name, classify_output(str(err)),
                                              str(err)) from err
            stack["resources"].remove(res)
        stack["outputs"] = {}
        self.files.save(ref, stack)

    def outputs(self, ref):
        return dict(self.files.load(ref)["outputs"])

    def export_state(self, ref):
        stack = self.files.load(ref)
        resources = [{"urn": r["urn"], "type": r["type"], "id": r["id"]}
                     for r in stack["resources"]]
        return {"version": 3, "deployment": {"resources": resources,
                                             "pending_operations": stack["pending_operations"]}}

    def import_state(self, ref, state):
        stack = self.files.load(ref)
        deployment = state.get("deployment") or {}
        known = {r["urn"]: r for r in stack["resources"]}
        stack["resources"] = [{**known.get(r["urn"], {"inputs": {}}), **r}
                              for r in deployment.get("resources") or []]
        stack["pending_operations"] = list(deployment.get("pending_operations") or [])
        self.files.save(ref, stack)

    def remove(self, ref):
        stack = self.files.load(ref)
        if stack["resources"]:
            text = f"error: stack '{ref.name}' still has resources; destroy it first"
            raise StackOperationError(ref.name, "failed", text)
        self.files.path(ref.project, ref.name).unlink()

    def list_stacks(self, project, work_dir=None):
        folder = self.files.directory / project
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    # -- helpers ----------------------------------------------------------------------------
    def _server(self, server_id) -> dict | None:
        try:
            return self.api.call("GET", f"/servers/{server_id}")["server"]
        except HcloudApiError as err:
            if "not_found" in str(err):
                return None
            raise

    def _refresh(self, stack: dict) -> None:
        stack["resources"] = [r for r in stack["resources"] if self._server(r["id"])]


class ProviderMocks:
    """Pulumi ``Mocks`` playing the hcloud provider for ``hcloud:index/server:Server``."""

    def __init__(self, api: HcloudApi, ref: StackRef, stack: dict):
        self.api, self.ref, self.stack = api, ref, stack

    def new_resource(self, args):
        if not args.custom:
            return "", {}
        if args.typ != SERVER_TYPE_TOKEN:
            raise HcloudApiError(f"error: resource type {args.typ} is not modelled by the "
                                 "rehearsal engine")
        inputs = _unwrap(dict(args.inputs))
        urn = f"urn:pulumi:{self.ref.name}::{self.ref.project}::{args.typ}::{args.name}"
        tracked = next((r for r in self.stack["resources"] if r["urn"] == urn), None)
        if tracked is None and args.resource_id:
            # Pulumi's ``import`` option (a claimed warm-pool server): the existing server is
            # read and brought to the inputs, as an import followed by an update would.
            tracked = {"urn": urn, "type": args.typ, "id": str(args.resource_id), "inputs": {}}
            self.stack["resources"].append(tracked)
        server = self._update(tracked, inputs) if tracked else self._create(urn, inputs)
        recorded = {k: v for k, v in inputs.items() if k != "userData"}
        if tracked:
            tracked["inputs"] = recorded
        else:
            self.stack["resources"].append({"urn": urn, "type": args.typ,
                                            "id": str(server["id"]), "inputs": recorded})
        return str(server["id"]), self._state(inputs, server)

    def call(self, args):
        return {}, None

    def _create(self, urn: str, inputs: dict) -> dict:
        body = {
            "name": inputs["name"], "server_type": inputs["serverType"],
            "image": inputs["image"], "location": inputs.get("location"),
            "labels": inputs.get("labels") or {}, "user_data": inputs.get("userData"),
            "ssh_keys": inputs.get("sshKeys") or [], "start_after_create": True,
            "networks": [int(n["networkId"]) for n in inputs.get("networks") or []],
        }
        # Pulumi records a pending create before calling the provider.
        pending = {"resource": {"urn": urn, "type": SERVER_TYPE_TOKEN}, "type": "creating"}
        self.stack["pending_operations"].append(pending)
        answer = self.api.call("POST", "/servers", body)
        self.api.wait(answer["action"])
        self.stack["pending_operations"].remove(pending)
        return self.api.call("GET", f"/servers/{answer['server']['id']}")["server"]

    def _update(self, tracked: dict, inputs: dict) -> dict:
        sid = tracked["id"]
        server = self.api.call("GET", f"/servers/{sid}")["server"]
        if server["server_type"]["name"] != inputs["serverType"]:
            self.api.wait(self.api.call("POST", f"/servers/{sid}/actions/poweroff")["action"])
            self.api.wait(self.api.call("POST", f"/servers/{sid}/actions/change_type", {
                "server_type": inputs["serverType"],
                "upgrade_disk": not inputs.get("keepDisk", False)})["action"])
            self.api.wait(self.api.call("POST", f"/servers/{sid}/actions/poweron")["action"])
        if server["labels"] != (inputs.get("labels") or {}) or server["name"] != inputs["name"]:
            self.api.call("PUT", f"/servers/{sid}", {"labels": inputs.get("labels") or {},
                                                    "name": inputs["name"]})
        return self.api.call("GET", f"/servers/{sid}")["server"]

    @staticmethod
    def _state(inputs: dict, server: dict) -> dict:
        state = dict(inputs)
        state.update(name=server["name"], serverType=server["server_type"]["name"],
                     status=server["status"], labels=server["labels"],
                     ipv4Address=(server["public_net"].get("ipv4") or {}).get("ip", ""))
        networks = []
        for attachment, net in zip(inputs.get("networks") or [], server["private_net"],
                                   strict=False):
            networks.append({**attachment, "ip": net["ip"]})
        state["networks"] = networks
        return state


def run_program(ref: StackRef, stack: dict, mocks: ProviderMocks) -> dict:
    """Run ``ref.program`` under Pulumi mocks with the stack's config; return plain outputs.

    The run happens in a fresh thread with its own event loop and context (Pulumi's runtime
    settings are context variables and its RPCs need a loop), one run at a time per process.
    """
    result: dict[str, Any] = {}

    def target():
        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            result["outputs"] = contextvars.copy_context().run(_run_isolated, ref, stack, mocks)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    with _RUN_LOCK:
        thread = threading.Thread(target=target, name=f"pulumi-mock-{ref.name}")
        thread.start()
        thread.join()
    if "error" in result:
        raise result["error"]
    return result["outputs"]


def _run_isolated(ref: StackRef, stack: dict, mocks: ProviderMocks) -> dict:
    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime.settings import ROOT, get_root_resource
    from pulumi.runtime.stack import Stack, run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    class _Mocks(pulumi_mocks.Mocks):
        def new_resource(self, args):
            return mocks.new_resource(args)

        def call(self, args):
            return mocks.call(args)

    ROOT.set(None)
    config = {k: v["value"] for k, v in stack["config"].items()}
    secret_keys = sorted(k for k, v in stack["config"].items() if v["secret"])
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(_Mocks(), project=ref.project, stack=ref.name, preview=False)
    root = get_root_resource()
    if ref.program is None or not isinstance(root, Stack):
        raise RuntimeError(f"stack {ref.name} has no program, or the mocks made no root stack")
    _sync_await(run_pulumi_func(ref.program))
    outputs = {}
    for name, value in root.outputs.items():
        outputs[name] = _unwrap(_sync_await(pulumi.Output.from_input(value).future()))
    return outputs
