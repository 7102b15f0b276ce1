"""A real agent process reports its lifecycle on its events stream: ``ready`` once it can
answer, then heartbeats; one that cannot start exits non-zero with one log line and reports
``failed`` with that reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wire.sqlite_bus import SqliteBus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def agent_env(tmp_path, standin):
    return {**os.environ, "HERMES_TENANT": "t1", "HERMES_DATA_DIR": str(tmp_path / "data"),
            "HERMES_BUS_URL": f"sqlite:///{tmp_path / 'bus.db'}", "HERMES_LLM": "anthropic",
            "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": standin.base_url,
            "HERMES_MEMORY_EXTRACTION": "0", "HERMES_WORKERS": "1", "PYTHONPATH": str(REPO)}


def lifecycle(bus, helpers) -> list:
    return [e for e in helpers.all_events(bus) if e.kind == "lifecycle"]


def run_to_exit(env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.main", "run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_agent_reports_ready_then_heartbeats_then_stops_cleanly(tmp_path, agent_env, helpers):
    agent_env["HERMES_HEARTBEAT_INTERVAL"] = "0.3"
    bus = SqliteBus(tmp_path / "bus.db")
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent.main", "run"], cwd=REPO, env=agent_env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        events = helpers.wait_for(
            lambda: (ev := lifecycle(bus, helpers)) and len(ev) >= 3 and ev, timeout=90)
        assert [e.lifecycle for e in events[:3]] == ["ready", "heartbeat", "heartbeat"]
        assert "anthropic" in events[0].text and events[0].tenant == "t1"
        assert events[0].chat_id == "" and events[0].at <= events[1].at <= events[2].at
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(("broken", "reason"), [
    ({"ANTHROPIC_API_KEY": None}, "ANTHROPIC_API_KEY"),
    ({"HERMES_LLM": "local", "HERMES_MODEL": "{tmp}/missing.gguf"}, "missing.gguf"),
], ids=["anthropic_chain_without_a_key", "missing_local_model"])
def test_an_agent_whose_backend_cannot_start_exits_with_one_line_and_reports_failed(
        tmp_path, agent_env, helpers, broken, reason):
    for name, value in broken.items():
        if value is None:
            del agent_env[name]
        else:
            agent_env[name] = value.format(tmp=tmp_path)
    done = run_to_exit(agent_env)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "agent cannot start" in lines[0] and reason in lines[0]
    [failed] = lifecycle(SqliteBus(tmp_path / "bus.db"), helpers)
    assert failed.lifecycle == "failed" and reason in failed.text
