"""Prometheus metrics of one tenant's agent, served over HTTP for the monitoring host.

Series (the tenant, plan and host labels are added by Prometheus from the server's Hetzner
labels, ``roles/monitoring`` job ``tenant_agent``, so none is repeated here):

* ``hermes_agent_messages_total{channel,outcome}``: envelopes handled; outcome ``final``
  (answered), ``error`` (the LLM failed; the user got the apology), ``command`` (slash
  command), ``replayed`` (a redelivered envelope answered from the ledger) or ``failed`` (an
  exception: Huey retries it).
* ``hermes_agent_turn_duration_seconds``: wall time of a handled envelope, seconds.
* ``hermes_agent_tool_call_duration_seconds{tool,outcome}``: each tool call, ``ok``/``error``
  (unknown tool names are reported as ``unknown`` so a model cannot invent label values).
* ``hermes_agent_llm_tokens_total{model,direction}`` (``in``/``out``) and
  ``hermes_agent_llm_cost_cents_total{model}``: every successful model call (``agent.llm.router``).
* ``hermes_agent_errors_total{kind}``: ``turn`` (a turn raised), ``llm`` (a turn got no model
  answer), ``llm_backend`` (one backend failed; the router tried the next), ``tool`` (a tool
  call failed).

Where it is served: ``serve(config)`` starts prometheus_client's HTTP server on
``HERMES_METRICS_ADDR:HERMES_METRICS_PORT`` in the process that runs turns (``run`` locally,
``worker`` = ``hermes-huey.service`` on a VM); port 0 (the local default) serves nothing.
On a tenant VM the address is ``0.0.0.0`` and the port 9464 (``infra/tenant_config.py``).
That is private because the tenant's Hetzner Cloud Firewall (``infra/components/firewall.py``,
role ``tenant``) opens only SSH from the ops CIDRs and node_exporter's 9100 on the public
interface, so 9464 is closed to the internet; Hetzner firewalls do not filter the private
network, where the monitoring host scrapes it (node_exporter on the image listens the same
way). Other tenants' VMs share that network and could read these counters (no message
content, no secret is in them).
"""

from __future__ import annotations

import contextlib
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry()
"""This process's registry (not prometheus_client's global one, so imports cannot add to it)."""

# Turn latency buckets in seconds: a chat reply takes seconds, a tool-heavy turn a minute or two.
TURN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60)

MESSAGES = Counter("hermes_agent_messages", "Envelopes handled by outcome", ["channel", "outcome"],
                   registry=REGISTRY)
TURN_SECONDS = Histogram("hermes_agent_turn_duration_seconds", "Wall time of a handled envelope",
                         buckets=TURN_BUCKETS, registry=REGISTRY)
TOOL_SECONDS = Histogram("hermes_agent_tool_call_duration_seconds", "Tool call duration",
                         ["tool", "outcome"], buckets=TOOL_BUCKETS, registry=REGISTRY)
TOKENS = Counter("hermes_agent_llm_tokens", "LLM tokens by model and direction",
                 ["model", "direction"], registry=REGISTRY)
COST_CENTS = Counter("hermes_agent_llm_cost_cents", "LLM cost in US cents by model", ["model"],
                     registry=REGISTRY)
ERRORS = Counter("hermes_agent_errors", "Errors by kind", ["kind"], registry=REGISTRY)

_current = threading.local()


@contextlib.contextmanager
def turn(channel: str):
    """Count and time one envelope handled on this thread.

    The outcome is what ``set_outcome`` last said inside the block, ``failed`` when the block
    raised (the exception propagates; ``errors_total{kind="turn"}`` counts it).
    """
    _current.outcome = "failed"
    started = time.monotonic()
    try:
        yield
    except Exception:
        ERRORS.labels("turn").inc()
        _current.outcome = "failed"
        raise
    finally:
        TURN_SECONDS.observe(time.monotonic() - started)
        MESSAGES.labels(channel, _current.outcome).inc()


def set_outcome(outcome: str) -> None:
    """Record the outcome of the envelope this thread is handling (see the module docstring)."""
    _current.outcome = outcome


def tool_call(tool: str, is_error: bool, seconds: float) -> None:
    """Record one tool call of ``seconds``; a failed one also counts as an error."""
    TOOL_SECONDS.labels(tool, "error" if is_error else "ok").observe(seconds)
    if is_error:
        ERRORS.labels("tool").inc()


def llm_call(model: str, input_tokens: int, output_tokens: int, cost_cents: float) -> None:
    """Record one successful model call: tokens in and out, cost in US cents."""
    TOKENS.labels(model, "in").inc(input_tokens)
    TOKENS.labels(model, "out").inc(output_tokens)
    COST_CENTS.labels(model).inc(cost_cents)


def error(kind: str) -> None:
    """Count one error of ``kind`` (``llm``, ``llm_backend``, ...)."""
    ERRORS.labels(kind).inc()


def serve(config):
    """Start the metrics endpoint for ``config`` (an ``AgentConfig``) on a daemon thread.

    Returns:
        The ``http.server`` instance (call ``shutdown()`` to stop it), or None when
        ``metrics_port`` is 0.

    Raises:
        OSError: the address cannot be bound (port taken, address not local).
    """
    if not config.metrics_port:
        return None
    server, _thread = start_http_server(config.metrics_port, addr=config.metrics_addr,
                                        registry=REGISTRY)
    return server
