"""``hermes llm``: the LLM backend registry (issue 23, ``control.services.llm_registry``)."""

from __future__ import annotations

import json

import click

from cli.context import open_runtime


@click.group()
def llm():
    """The LLM gateway's backends."""


@llm.command()
@click.option("--probe", is_flag=True, help="Probe every configured provider route first.")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as one JSON object.")
@click.option("--calls", default=10, show_default=True, type=click.IntRange(0, 500),
              help="How many of the latest calls (and why each went where it did) to list.")
def backends(probe: bool, as_json: bool, calls: int):
    """Each provider route's health, each backend's calls, error rate and latency over the last
    hour, the reasons calls went where they did, and the latest calls."""
    # deferred: keeps `hermes --help` light: loads peewee, httpx (~80 ms)
    from control.services import llm_registry

    runtime = open_runtime()
    with runtime.db.connection_context():
        if probe:
            llm_registry.probe(runtime.settings)
        health = llm_registry.health()
        stats = llm_registry.stats()
        reasons = llm_registry.reasons()
        latest = llm_registry.selections(calls)
    if as_json:
        click.echo(json.dumps({
            "health": [{"api": h.api, "ok": h.ok, "status": h.status, "latency_ms": h.latency_ms,
                        "detail": h.detail, "checked_at": h.checked_at.isoformat(),
                        "last_ok_at": h.last_ok_at.isoformat() if h.last_ok_at else None} for h in health],
            "backends": [{"api": s.api, "model": s.model, "calls": s.calls, "errors": s.errors,
                          "error_rate": s.error_rate, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms}
                         for s in stats],
            "reasons": dict(reasons),
            "calls": [{"at": c.created_at.isoformat(), "tenant": c.tenant_id, "api": c.api,
                       "model": c.model, "status": c.status, "reason": c.reason} for c in latest]},
            sort_keys=True))
        return
    for h in health:
        state = "healthy" if h.ok else f"DOWN ({h.detail})"
        click.echo(f"{h.api:14}{state:30} probed {h.checked_at:%Y-%m-%d %H:%M:%S} in {h.latency_ms} ms")
    if not health:
        click.echo("no probe yet (or no provider configured)")
    for s in stats:
        click.echo(f"{s.api:14}{s.model:28}{s.calls:>6} calls {s.error_rate:>6.1%} errors  "
                   f"p50 {s.p50_ms} ms  p95 {s.p95_ms} ms")
    if reasons:
        click.echo("reasons: " + ", ".join(f"{reason or 'not given'} {n}" for reason, n in reasons))
    for c in latest:
        click.echo(f"{c.created_at:%H:%M:%S} tenant {c.tenant_id} {c.api}/{c.model} {c.status} "
                   f"{c.reason or 'not given'}")
