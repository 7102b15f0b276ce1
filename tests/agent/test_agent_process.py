"""A real agent subprocess (``python -m agent.main run``) against a SqliteBus file: SIGKILL mid-turn
→ after restart the message is answered exactly once; SIGTERM stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from standins.anthropic_api import text_reply
from wire.protocol import messages_stream
from wire.sqlite_bus import SqliteBus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def agent_process(tmp_path, standin, helpers):
    """Factory starting the agent subprocess; every process is killed at teardown."""
    procs = []
    env = {**os.environ, "HERMES_TENANT": "t1", "HERMES_DATA_DIR": str(tmp_path / "data"),
           "HERMES_BUS_URL": f"sqlite:///{tmp_path / 'bus.db'}", "HERMES_LLM": "anthropic",
           "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": standin.base_url,
           "HERMES_MEMORY_EXTRACTION": "0", "HERMES_DELTA_INTERVAL": "0", "HERMES_WORKERS": "1",
           "PYTHONPATH": str(REPO)}

    def start(command="run"):
        ready = tmp_path / "data" / "agent.ready"
        ready.unlink(missing_ok=True)
        with open(tmp_path / f"agent-{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "agent.main", command], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        helpers.wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, (tmp_path / f"agent-{len(procs) - 1}.log").read_text()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigkill_mid_turn_then_restart_answers_exactly_once(tmp_path, agent_process, standin, helpers):
    bus = SqliteBus(tmp_path / "bus.db")
    standin.script([text_reply("A slow answer that never finishes " * 20, chunk=3, chunk_delay=0.05)])
    first = agent_process()
    env = helpers.envelope("tell me something")
    bus.append(messages_stream("t1"), env.to_json(), idempotency_key=env.id)
    helpers.wait_for(lambda: any(e.kind == "delta" for e in helpers.events_for(bus, env.id)), timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert not any(e.kind == "final" for e in helpers.events_for(bus, env.id))

    standin.script(["The answer, after a restart."])
    second = agent_process()
    finals = helpers.wait_for(
        lambda: [e for e in helpers.events_for(bus, env.id) if e.kind == "final"], timeout=60)
    assert [e.text for e in finals] == ["The answer, after a restart."]
    assert len(standin.requests) == 2
    second.send_signal(signal.SIGTERM)
    assert second.wait(40) == 0
    assert [e.text for e in helpers.events_for(bus, env.id) if e.kind == "final"] == ["The answer, after a restart."]
    assert bus.pending_count(messages_stream("t1"), "agent") == 0


def test_listen_and_worker_processes_split_the_work(tmp_path, agent_process, standin, helpers):
    """The VM layout: hermes-agent.service runs ``listen``, hermes-huey.service runs ``worker``."""
    bus = SqliteBus(tmp_path / "bus.db")
    listener = agent_process("listen")
    env = helpers.envelope("hello split")
    bus.append(messages_stream("t1"), env.to_json())
    helpers.wait_for(lambda: bus.pending_count(messages_stream("t1"), "agent") == 0
                     and bus.length(messages_stream("t1")) == 1, timeout=30)
    assert helpers.events_for(bus, env.id) == []  # queued durably in Huey, not answered yet
    standin.script(["Answered by the worker."])
    worker = agent_process("worker")
    finals = helpers.wait_for(
        lambda: [e for e in helpers.events_for(bus, env.id) if e.kind == "final"], timeout=60)
    assert [e.text for e in finals] == ["Answered by the worker."]
    for proc in (listener, worker):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0


def test_a_burst_of_stop_signals_still_stops_the_agent(agent_process):
    """PDEATHSIG and systemd's SIGTERM can land together; the agent must not deadlock."""
    proc = agent_process()
    for _ in range(50):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
    assert proc.wait(40) == 0
