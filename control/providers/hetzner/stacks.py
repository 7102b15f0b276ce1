"""Running Pulumi operations reliably: retry with backoff and recovery of interrupted updates.

``StackRunner`` wraps a ``StackWorkspace``:

* **Retry.** An operation failing with a retryable kind (Hetzner 429 ``rate_limit_exceeded``,
  5xx/``server_error``, a concurrent update holding the backend lock) is retried with exponential
  backoff (tenacity): ``base_delay * 2**n`` seconds, capped at ``max_delay``.  The Hetzner API
  refills one request per second (3600 per hour, docs.hetzner.cloud "Rate Limiting"), so a cap of
  60 s lets a drained bucket recover.  Anything else fails at once.  Exhausted or fatal failures
  become ``ProvisioningError``.
* **Recovery of interrupted updates.** A worker killed mid-``up`` leaves *pending operations* in
  the checkpoint (Pulumi docs, "Interrupted updates").  We export the checkpoint, drop
  ``deployment.pending_operations`` and import it back, then ``refresh`` so resources that did
  change are read from Hetzner.  That is the procedure Pulumi documents for non-interactive
  repair (``pulumi stack export`` → remove pending operations → ``pulumi stack import``; the
  Automation API documents ``export_stack``/``import_stack`` as combinable "such as recovery
  from failed deployments").  ``stack.cancel()`` is not an option: it is not supported for the
  DIY (file/S3) backends we use.  A dropped pending *create* may have left a server behind that
  the state does not track; the caller removes such servers (``HetznerProvisioner``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
import tenacity

from control.errors import ProvisioningError
from control.providers.hetzner.workspace import StackOperationError, StackRef, StackWorkspace

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Pulumi resource type of a Hetzner server (pulumi-hcloud).
SERVER_TYPE_TOKEN = "hcloud:index/server:Server"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable stack failures.

    Attributes:
        attempts: total attempts per operation (first try included).
        base_delay: first pause, seconds; doubled per attempt.
        max_delay: longest pause, seconds.
        sleep: the pause function (``time.sleep``; tests inject a recorder).
    """

    attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep


def tracked_server_ids(state: dict[str, Any]) -> set[str]:
    """Return the ids of the servers a checkpoint (``export_state`` shape) tracks."""
    resources = (state.get("deployment") or {}).get("resources") or []
    return {str(r["id"]) for r in resources if r.get("type") == SERVER_TYPE_TOKEN and r.get("id")}


class StackRunner:
    """Runs workspace operations with retry, translating failures to ``ProvisioningError``."""

    def __init__(self, workspace: StackWorkspace, policy: RetryPolicy | None = None,
                 on_recovered: Callable[[StackRef, list[dict]], None] | None = None):
        """Args:
            on_recovered: called with the stack and the dropped pending operations after a
                recovery (the provisioner removes servers a dropped create left behind).
        """
        self.workspace = workspace
        self.policy = policy or RetryPolicy()
        self.on_recovered = on_recovered

    def run(self, ref: StackRef, operation: str, action: Callable[[], T]) -> T:
        """Run ``action`` (an operation on ``ref``), retrying retryable failures.

        An operation failing because of pending operations is repaired with
        ``recover_pending`` once, then retried.

        Raises:
            ProvisioningError: a non-retryable failure, or retries exhausted.
        """
        policy = self.policy
        repaired: list[bool] = []

        def should_retry(err: BaseException) -> bool:
            if not isinstance(err, StackOperationError):
                return False
            if err.kind == "pending_operations" and not repaired:
                self.recover_pending(ref)
                repaired.append(True)
                return True
            return err.retryable

        def before_sleep(state: tenacity.RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.warning("stack_operation_retry", stack=ref.name, operation=operation,
                        kind=getattr(err, "kind", None), attempt=state.attempt_number,
                        pause_s=state.next_action.sleep if state.next_action else None)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=tenacity.wait_exponential(multiplier=policy.base_delay, max=policy.max_delay),
            retry=tenacity.retry_if_exception(should_retry),
            sleep=policy.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(action)
        except StackOperationError as err:
            if err.retryable or err.kind == "pending_operations":
                raise ProvisioningError(
                    f"{operation} of stack {ref.name} still failing after {policy.attempts} "
                    f"attempts ({err.kind}): {err.output.strip()[-400:]}"
                ) from err
            raise ProvisioningError(f"{operation} of stack {ref.name} failed ({err.kind}): "
                                    f"{err.output.strip()[-400:]}") from err

    def recover_pending(self, ref: StackRef) -> list[dict[str, Any]]:
        """Clear the stack's pending operations (export → drop → import → refresh).

        Returns:
            The pending operations that were dropped (Pulumi checkpoint shape:
            ``{"resource": {"urn", "type", ...}, "type": "creating"|"updating"|...}``); empty
            when the stack had none (then nothing is written).
        """
        state = self.workspace.export_state(ref)
        deployment = state.get("deployment") or {}
        pending = list(deployment.get("pending_operations") or [])
        if not pending:
            return []
        log.warning("stack_pending_operations_cleared", stack=ref.name,
                    operations=[(p.get("type"), (p.get("resource") or {}).get("urn"))
                                for p in pending])
        deployment["pending_operations"] = []
        self.workspace.import_state(ref, {**state, "deployment": deployment})
        self.workspace.refresh(ref)
        if self.on_recovered:
            self.on_recovered(ref, pending)
        return pending

    # Thin retrying wrappers, one per workspace operation the provisioner uses.
    def ensure(self, ref: StackRef) -> None:
        self.run(ref, "select", lambda: self.workspace.ensure(ref))

    def set_config(self, ref: StackRef, values) -> None:
        self.run(ref, "config", lambda: self.workspace.set_config(ref, values))

    def up(self, ref: StackRef) -> dict[str, Any]:
        return self.run(ref, "up", lambda: self.workspace.up(ref))

    def destroy(self, ref: StackRef) -> None:
        self.run(ref, "destroy", lambda: self.workspace.destroy(ref))

    def remove(self, ref: StackRef) -> None:
        self.run(ref, "remove", lambda: self.workspace.remove(ref))

    def outputs(self, ref: StackRef) -> dict[str, Any]:
        return self.run(ref, "outputs", lambda: self.workspace.outputs(ref))

    def export_state(self, ref: StackRef) -> dict[str, Any]:
        return self.run(ref, "export", lambda: self.workspace.export_state(ref))

    def exists(self, ref: StackRef) -> bool:
        return self.run(ref, "lookup", lambda: self.workspace.exists(ref))

    def recover(self, ref: StackRef) -> list[dict[str, Any]]:
        """``recover_pending`` with retries."""
        return self.run(ref, "recover", lambda: self.recover_pending(ref))

    def preview(self, ref: StackRef, *, refresh: bool = True, expect_no_changes: bool = True):
        return self.run(ref, "preview", lambda: self.workspace.preview(
            ref, refresh=refresh, expect_no_changes=expect_no_changes))

    def list_stacks(self, project: str, work_dir: str | None = None) -> list[str]:
        ref = StackRef(project=project, name="*", work_dir=work_dir)
        return self.run(ref, "list", lambda: self.workspace.list_stacks(project, work_dir))
