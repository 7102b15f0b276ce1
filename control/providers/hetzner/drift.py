"""Drift checks: does the real infrastructure still match the Pulumi stacks?

Each stack is previewed with ``refresh`` (read every resource from Hetzner first) and
``expect_no_changes`` (Pulumi CLI ``preview --refresh --expect-no-changes``): any proposed
create/update/delete/replace is drift.  Previews are staggered by ``delay`` seconds because a
refresh reads every resource of the stack from the Hetzner API, which allows 3600 requests per
hour per project (docs.hetzner.cloud, "Rate Limiting").  The orphan sweep runs last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from control.errors import ProvisioningError
from control.providers.hetzner.reconcile import SweepReport
from control.providers.hetzner.stacks import StackRunner
from control.providers.hetzner.workspace import StackRef


@dataclass(frozen=True)
class StackDrift:
    """The drift check of one stack.

    Attributes:
        project: Pulumi project.
        stack: stack name.
        changes: proposed operation → count (empty when in sync).
        error: why the preview could not run, if it could not.
    """

    project: str
    stack: str
    changes: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the stack previewed cleanly with no change."""
        return not self.changes and self.error is None


@dataclass
class DriftReport:
    """All stacks' drift checks plus the orphan sweep."""

    stacks: list[StackDrift] = field(default_factory=list)
    sweep: SweepReport | None = None
    sweep_error: str | None = None

    @property
    def ok(self) -> bool:
        """True when no stack drifted or failed and the sweep found no orphan."""
        sweep_ok = self.sweep_error is None and (self.sweep is None or not self.sweep.orphans)
        return sweep_ok and all(s.ok for s in self.stacks)

    def render(self) -> str:
        """Return the human-readable report (one line per stack, then the sweep)."""
        drifted = [s for s in self.stacks if not s.ok]
        lines = [f"drift check: {len(self.stacks)} stack(s), {len(drifted)} with drift or errors"]
        for s in self.stacks:
            if s.error:
                lines.append(f"  ERROR  {s.project}/{s.stack}: {s.error}")
            elif s.changes:
                ops = ", ".join(f"{op} {n}" for op, n in sorted(s.changes.items()))
                lines.append(f"  DRIFT  {s.project}/{s.stack}: {ops}")
            else:
                lines.append(f"  ok     {s.project}/{s.stack}")
        if self.sweep_error:
            lines.append(f"orphan sweep failed: {self.sweep_error}")
        elif self.sweep is not None:
            lines.append(self.sweep.render())
        lines.append("result: " + ("no drift" if self.ok else "DRIFT FOUND"))
        return "\n".join(lines)


def check_drift(
    runner: StackRunner,
    shared: StackRef | None,
    tenants: Sequence[StackRef],
    *,
    delay: float,
    sleep: Callable[[float], None],
    sweep: Callable[[], SweepReport] | None = None,
) -> DriftReport:
    """Preview ``shared`` then every tenant stack, ``delay`` seconds apart, then ``sweep()``.

    Retryable failures are retried by ``runner``; a stack that still fails is reported as an
    error (and makes the report not ``ok``) without stopping the other checks.
    """
    report = DriftReport()
    refs = ([shared] if shared is not None else []) + list(tenants)
    for index, ref in enumerate(refs):
        if index:
            sleep(delay)
        try:
            outcome = runner.preview(ref, refresh=True, expect_no_changes=True)
            report.stacks.append(StackDrift(ref.project, ref.name, outcome.changes))
        except ProvisioningError as err:
            report.stacks.append(StackDrift(ref.project, ref.name, error=str(err)))
    if sweep is not None:
        try:
            report.sweep = sweep()
        except Exception as err:  # noqa: BLE001 - the stack results must still reach the report
            report.sweep_error = str(err)
    return report
