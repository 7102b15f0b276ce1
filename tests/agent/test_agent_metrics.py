"""Agent metrics (agent/metrics.py): what a turn, a tool call and a model call add, served by
the process that runs turns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent import metrics
from agent.turn import LLM_FAILURE_TEXT, TurnRunner
from standins.anthropic_api import error_reply, text_reply, tool_reply
from wire.protocol import messages_stream
from wire.sqlite_bus import SqliteBus

REPO = Path(__file__).resolve().parents[2]


def sample(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of the endpoint on ``port``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_failed_tool_and_failed_model_are_counted_as_errors(make_runtime, standin, helpers):
    runtime = make_runtime(llm_retries=1)
    runner = TurnRunner(runtime)
    before = {"tool": sample("hermes_agent_errors_total", kind="tool"),
              "llm": sample("hermes_agent_errors_total", kind="llm"),
              "error": sample("hermes_agent_messages_total", channel="web", outcome="error"),
              "unknown": sample("hermes_agent_tool_call_duration_seconds_count", tool="unknown",
                                outcome="error")}
    standin.script([tool_reply(("no_such_tool", {})), text_reply("Could not do it.")])
    assert runner.handle(helpers.envelope("use a tool", channel="web")) == "Could not do it."
    standin.script([error_reply(500)])
    assert runner.handle(helpers.envelope("again", channel="web")) == LLM_FAILURE_TEXT

    assert sample("hermes_agent_errors_total", kind="tool") - before["tool"] == 1
    assert sample("hermes_agent_tool_call_duration_seconds_count", tool="unknown",
                  outcome="error") - before["unknown"] == 1
    assert sample("hermes_agent_errors_total", kind="llm") - before["llm"] == 1
    assert sample("hermes_agent_messages_total", channel="web",
                  outcome="error") - before["error"] == 1


def test_vm_worker_serves_turn_tool_and_token_metrics_the_listener_serves_none(
        tmp_path, standin, helpers):
    """The VM layout: ``listen`` (hermes-agent.service) and ``worker`` (hermes-huey.service)
    share one agent.env with HERMES_METRICS_PORT; only the worker, which runs turns, binds it."""
    port = free_port()
    env = {**os.environ, "HERMES_TENANT": "t1", "HERMES_DATA_DIR": str(tmp_path / "data"),
           "HERMES_BUS_URL": f"sqlite:///{tmp_path / 'bus.db'}", "HERMES_LLM": "anthropic",
           "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": standin.base_url,
           "HERMES_MEMORY_EXTRACTION": "0", "HERMES_WORKERS": "1", "PYTHONPATH": str(REPO),
           "HERMES_METRICS_PORT": str(port), "HERMES_METRICS_ADDR": "127.0.0.1"}
    bus = SqliteBus(tmp_path / "bus.db")
    procs = []
    ready = tmp_path / "data" / "agent.ready"
    try:
        for command in ("listen", "worker"):
            ready.unlink(missing_ok=True)
            with open(tmp_path / f"{command}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "agent.main", command],
                                              cwd=REPO, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
            helpers.wait_for(lambda: ready.exists() or procs[-1].poll() is not None, timeout=60)
            assert procs[-1].poll() is None, (tmp_path / f"{command}.log").read_text()
            if command == "listen":
                with socket.socket() as probe:  # the listener left the port free
                    probe.bind(("127.0.0.1", port))

        standin.script([tool_reply(("calculate", {"expression": "6 * 7"})),
                        text_reply("It is 42.")])
        envelope = helpers.envelope("six times seven?")
        bus.append(messages_stream("t1"), envelope.to_json(), idempotency_key=envelope.id)
        final = ("hermes_agent_messages_total", (("channel", "telegram"), ("outcome", "final")))
        scraped = helpers.wait_for(lambda: (s := scrape(port)).get(final) == 1 and s, timeout=60)

        assert scraped[("hermes_agent_turn_duration_seconds_count", ())] == 1
        assert scraped[("hermes_agent_tool_call_duration_seconds_count",
                        (("outcome", "ok"), ("tool", "calculate")))] == 1
        tokens = {labels: value for (name, labels), value in scraped.items()
                  if name == "hermes_agent_llm_tokens_total"}
        models = {dict(labels)["model"] for labels in tokens}
        assert len(models) == 1
        (model,) = models
        assert tokens[(("direction", "in"), ("model", model))] > 0
        assert tokens[(("direction", "out"), ("model", model))] > 0
        assert scraped[("hermes_agent_llm_cost_cents_total", (("model", model),))] > 0
        assert not any(name == "hermes_agent_errors_total" and value
                       for (name, _), value in scraped.items())
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(40) == 0
