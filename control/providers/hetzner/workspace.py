"""The thin boundary to Pulumi's Automation API: ``StackWorkspace`` and its production class.

Everything the Hetzner provisioner and ``hermes drift`` do to Pulumi state goes through the
``StackWorkspace`` protocol, so the orchestration (locks, retries, recovery, archive-before-destroy)
is tested against an in-process stand-in (``tests/providers/``) while ``PulumiStackWorkspace``
keeps each method a one-to-few-line call of ``pulumi.automation`` (Pulumi docs, "Automation API",
Python reference ``pulumi.automation``).  The Pulumi CLI must be on ``PATH`` in production.

A stack is named by a ``StackRef``: an *inline* program (``program`` set; the tenant stacks,
project ``hermes-tenants``) or a *local* program read from ``work_dir``'s ``Pulumi.yaml`` (the
shared stack per environment, ``LocalWorkspace(work_dir=<repo root>)``).

Failures surface as ``StackOperationError`` with a ``kind`` from ``classify_output``, so the
caller decides about retries from one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Error kinds worth retrying with backoff.  ``rate_limited``: Hetzner answered 429 (the Cloud
#: API allows 3600 requests per hour per project, docs.hetzner.cloud "Rate Limiting");
#: ``server_error``: a 5xx or Hetzner's ``server_error``/``unavailable``/``timeout`` codes;
#: ``concurrent``: another process holds the stack's backend lock (Pulumi ``ConcurrentUpdateError``)
#: or Hetzner's ``locked``/``conflict`` codes (another action runs on the resource).
RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "concurrent"})

# First match wins; patterns come from Hetzner's error codes (docs.hetzner.cloud, "Errors") and
# Pulumi's CLI messages (interrupted updates, concurrent updates, --expect-no-changes).
_KIND_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("pending_operations", re.compile(r"pending operations|interrupted while (creating|"
                                      r"updating|deleting)", re.IGNORECASE)),
    ("concurrent", re.compile(r"another update is currently in progress|currently locked by|"
                              r"\b409\b|\(locked[,)]|\(conflict[,)]", re.IGNORECASE)),
    ("rate_limited", re.compile(r"\b429\b|rate.?limit|too many requests", re.IGNORECASE)),
    ("server_error", re.compile(r"\b5(?:00|02|03|04)\b|\(server_error[,)]|\(unavailable[,)]|"
                                r"\(timeout[,)]|internal server error|bad gateway|"
                                r"service unavailable|gateway timeout", re.IGNORECASE)),
    ("changes", re.compile(r"no changes were expected|expected no changes", re.IGNORECASE)),
    ("not_found", re.compile(r"no stack named.*found", re.IGNORECASE)),
)


def classify_output(text: str) -> str:
    """Return the error kind of a failed Pulumi operation from its combined output.

    Returns one of ``pending_operations``, ``concurrent``, ``rate_limited``, ``server_error``,
    ``changes``, ``not_found`` or ``failed`` (anything else, not retryable).
    """
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(text or ""):
            return kind
    return "failed"


class StackOperationError(Exception):
    """A Pulumi operation on one stack failed.

    Attributes:
        kind: see ``classify_output``.
        stack: the stack's name.
        output: the operation's stdout+stderr (may be long; never contains secret values, which
            Pulumi masks as ``[secret]``).
    """

    def __init__(self, stack: str, kind: str, output: str):
        super().__init__(f"stack {stack}: {kind}: {output.strip()[-800:]}")
        self.stack = stack
        self.kind = kind
        self.output = output

    @property
    def retryable(self) -> bool:
        """True when the same operation may succeed after a backoff."""
        return self.kind in RETRYABLE_KINDS


@dataclass(frozen=True)
class StackRef:
    """Names one stack and its program.

    Attributes:
        project: Pulumi project name (``hermes-tenants`` for tenant stacks).
        name: stack name (``{env}-tenant-{tenant}``, or the environment for the shared stack).
        program: inline program (a no-argument callable declaring resources), or ``None``.
        work_dir: directory holding ``Pulumi.yaml`` for a local program, or ``None``.
    """

    project: str
    name: str
    program: Callable[[], None] | None = field(default=None, compare=False)
    work_dir: str | None = None


@dataclass(frozen=True)
class ConfigEntry:
    """One stack config value; ``secret`` values are encrypted in state by the secrets provider."""

    value: str
    secret: bool = False


@dataclass(frozen=True)
class PreviewOutcome:
    """Result of a preview.

    Attributes:
        change_summary: operation → resource count (``same``, ``create``, ``update``, ``delete``,
            ``replace``, ...), as Pulumi's ``PreviewResult.change_summary``.
        output: the preview's text output.
    """

    change_summary: dict[str, int]
    output: str = ""

    @property
    def changes(self) -> dict[str, int]:
        """The operations other than ``same`` with a non-zero count."""
        return {op: n for op, n in self.change_summary.items() if op != "same" and n}


class StackWorkspace(Protocol):
    """Operations on Pulumi stacks; every method raises ``StackOperationError`` on failure."""

    def ensure(self, ref: StackRef) -> None:
        """Create the stack if it does not exist (select it otherwise)."""

    def exists(self, ref: StackRef) -> bool:
        """Return whether the stack exists in the backend."""

    def set_config(self, ref: StackRef, values: dict[str, ConfigEntry]) -> None:
        """Set the stack's config keys (``namespace:key``)."""

    def up(self, ref: StackRef) -> dict[str, Any]:
        """Deploy the program; return the stack outputs (name → plain value)."""

    def preview(self, ref: StackRef, *, refresh: bool, expect_no_changes: bool) -> PreviewOutcome:
        """Preview an update; with ``expect_no_changes`` a proposed change is *not* an error
        here but shows in the outcome's ``changes``."""

    def refresh(self, ref: StackRef) -> None:
        """Read the real resources' state into the stack's state."""

    def destroy(self, ref: StackRef) -> None:
        """Delete every resource of the stack (its config and history stay)."""

    def outputs(self, ref: StackRef) -> dict[str, Any]:
        """Return the stack outputs (name → plain value)."""

    def export_state(self, ref: StackRef) -> dict[str, Any]:
        """Return the checkpoint (``{"version": 3, "deployment": {...}}``)."""

    def import_state(self, ref: StackRef, state: dict[str, Any]) -> None:
        """Replace the stack's checkpoint with ``state`` (same shape as ``export_state``)."""

    def remove(self, ref: StackRef) -> None:
        """Remove the (empty) stack from the backend."""

    def list_stacks(self, project: str, work_dir: str | None = None) -> list[str]:
        """Return the names of the project's stacks."""


class PulumiStackWorkspace:
    """``StackWorkspace`` over ``pulumi.automation`` with a DIY or Pulumi Cloud backend.

    Args:
        backend_url: state backend, e.g. ``file:///var/lib/hermes/pulumi`` or
            ``s3://hermes-state?endpoint=fsn1.your-objectstorage.com&s3ForcePathStyle=true``
            (Pulumi docs, "State and backends").
        passphrase: passphrase of the ``passphrase`` secrets provider (encrypts secret config).
        env_vars: extra environment for the CLI (``HCLOUD_TOKEN``, S3 credentials, ...).
        pulumi_home: ``PULUMI_HOME`` for plugins and credentials, or ``None`` for the default.
    """

    def __init__(self, backend_url: str, passphrase: str, env_vars: dict[str, str] | None = None,
                 pulumi_home: str | None = None):
        self.backend_url = backend_url
        self.env_vars = {"PULUMI_CONFIG_PASSPHRASE": passphrase, "PULUMI_BACKEND_URL": backend_url,
                         "PULUMI_SKIP_UPDATE_CHECK": "true", **(env_vars or {})}
        self.pulumi_home = pulumi_home

    def _options(self, project: str, program=None):
        from pulumi import automation as auto

        settings = None
        if program is not None:
            settings = auto.ProjectSettings(name=project, runtime="python",
                                            backend=auto.ProjectBackend(url=self.backend_url))
        return auto.LocalWorkspaceOptions(
            env_vars=self.env_vars, pulumi_home=self.pulumi_home, project_settings=settings,
            secrets_provider="passphrase",
        )

    def _stack(self, ref: StackRef, create: bool = False):
        from pulumi import automation as auto

        pick = auto.create_or_select_stack if create else auto.select_stack
        if ref.work_dir is not None:
            return pick(stack_name=ref.name, work_dir=ref.work_dir,
                        opts=self._options(ref.project))
        return pick(stack_name=ref.name, project_name=ref.project, program=ref.program,
                    opts=self._options(ref.project, ref.program or (lambda: None)))

    def _call(self, ref: StackRef, action: Callable[[], Any]) -> Any:
        from pulumi import automation as auto

        try:
            return action()
        except auto.ConcurrentUpdateError as err:
            raise StackOperationError(ref.name, "concurrent", str(err)) from err
        except auto.StackNotFoundError as err:
            raise StackOperationError(ref.name, "not_found", str(err)) from err
        except auto.CommandError as err:
            raise StackOperationError(ref.name, classify_output(str(err)), str(err)) from err
        except FileNotFoundError as err:
            raise StackOperationError(ref.name, "failed",
                                      f"the Pulumi CLI is not installed: {err}") from err

    def ensure(self, ref):
        self._call(ref, lambda: self._stack(ref, create=True))

    def exists(self, ref):
        return ref.name in self.list_stacks(ref.project, ref.work_dir)

    def set_config(self, ref, values):
        from pulumi import automation as auto

        config = {k: auto.ConfigValue(value=v.value, secret=v.secret) for k, v in values.items()}
        self._call(ref, lambda: self._stack(ref).set_all_config(config))

    def up(self, ref):
        result = self._call(ref, lambda: self._stack(ref).up(color="never"))
        return {name: out.value for name, out in result.outputs.items()}

    def preview(self, ref, *, refresh, expect_no_changes):
        try:
            result = self._call(ref, lambda: self._stack(ref).preview(
                refresh=refresh, expect_no_changes=expect_no_changes, color="never"))
        except StackOperationError as err:
            if err.kind != "changes":
                raise
            # The CLI exits non-zero on a proposed change; the report only needs to know there
            # was one, so the counts are unknown here.
            return PreviewOutcome({"changed": 1}, err.output)
        summary = {str(getattr(op, "value", op)): n for op, n in result.change_summary.items()}
        return PreviewOutcome(summary, result.stdout)

    def refresh(self, ref):
        self._call(ref, lambda: self._stack(ref).refresh(color="never"))

    def destroy(self, ref):
        self._call(ref, lambda: self._stack(ref).destroy(color="never"))

    def outputs(self, ref):
        outs = self._call(ref, lambda: self._stack(ref).outputs())
        return {name: out.value for name, out in outs.items()}

    def export_state(self, ref):
        deployment = self._call(ref, lambda: self._stack(ref).export_stack())
        return {"version": deployment.version, "deployment": deployment.deployment}

    def import_state(self, ref, state):
        from pulumi import automation as auto

        deployment = auto.Deployment(version=state["version"], deployment=state["deployment"])
        self._call(ref, lambda: self._stack(ref).import_stack(deployment))

    def remove(self, ref):
        self._call(ref, lambda: self._stack(ref).workspace.remove_stack(ref.name))

    def list_stacks(self, project, work_dir=None):
        from pulumi import automation as auto

        def names():
            settings = None if work_dir else auto.ProjectSettings(
                name=project, runtime="python", backend=auto.ProjectBackend(url=self.backend_url))
            workspace = auto.LocalWorkspace(work_dir=work_dir, pulumi_home=self.pulumi_home,
                                            env_vars=self.env_vars, project_settings=settings)
            return [summary.name for summary in workspace.list_stacks()]

        return self._call(StackRef(project=project, name="*", work_dir=work_dir), names)
