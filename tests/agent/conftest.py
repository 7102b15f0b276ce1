"""Fixtures for the agent runtime: a Messages API stand-in, runtimes on temp dirs, bus helpers."""

from __future__ import annotations

import itertools
import signal
import time

import pytest

from agent.config import AgentConfig
from agent.tasks import AgentTasks
from standins.anthropic_api import AnthropicStandin
from wire.protocol import Envelope, Event, events_stream, new_id

TENANT = "t1"
_groups = itertools.count()


@pytest.fixture
def standin():
    """A running Anthropic Messages API stand-in."""
    with AnthropicStandin() as api:
        yield api


@pytest.fixture(scope="session")
def embedder():
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session."""
    from agent.memory import default_embedder

    shared = default_embedder()
    shared.embed(["warm up"])
    return shared


@pytest.fixture
def consumer_of():
    """Return ``start(tasks, workers=1)``: a real Huey consumer (worker threads) for ``tasks``,
    started; at teardown its open goals are cancelled (a failed test does not wait out a goal's
    turn), every consumer is stopped and the signal handlers it installed restored."""
    started = []
    started_tasks = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def start(tasks: AgentTasks, workers: int = 1):
        consumer = tasks.huey.create_consumer(workers=workers, periodic=False, check_worker_health=False,
                                              initial_delay=0.02, max_delay=0.1)
        consumer.start()
        started.append(consumer)
        started_tasks.append(tasks)
        return consumer

    yield start
    for tasks in started_tasks:
        for goal in tasks.runtime.goals.list():
            tasks.runtime.goals.set_state(goal.id, "cancelled", "the test ended")
    for consumer in started:
        consumer.stop(graceful=True)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def agent_config(tmp_path, base_url: str, **overrides) -> AgentConfig:
    """Config of tenant ``t1`` on ``tmp_path`` with the Anthropic backend at ``base_url``."""
    values = {"tenant": TENANT, "data_dir": str(tmp_path / "data"),
              "bus_url": f"sqlite:///{tmp_path / 'bus.db'}", "llm": "anthropic",
              "anthropic_api_key": "test-key", "anthropic_base_url": base_url,
              "memory_extraction": False, "delta_interval": 0.0, "llm_backoff": 0.0,
              "task_retry_delay": 0.0}
    values.update(overrides)
    return AgentConfig(**values)


@pytest.fixture
def make_runtime(tmp_path, standin, embedder):
    """Factory: ``make_runtime(**config_overrides, backends=..., clock=...)`` → ``AgentRuntime``."""
    from agent.runtime import AgentRuntime

    made = []

    def make(backends=None, clock=time.time, registry=None, **overrides):
        config = agent_config(tmp_path, standin.base_url, **overrides)
        runtime = AgentRuntime(config, backends=backends, embedder=embedder, clock=clock,
                               registry=registry, sleep=lambda seconds: None)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


def envelope(text: str, chat_id: str = "chat-1", channel: str = "telegram") -> Envelope:
    """A fresh inbound envelope for tenant ``t1``."""
    return Envelope(id=new_id(), tenant=TENANT, channel=channel, chat_id=chat_id, sender_id="u1", text=text)


def all_events(bus) -> list[Event]:
    """Every event on ``t1``'s events stream, in order (read through a fresh consumer group)."""
    group = f"test-{next(_groups)}"
    out = []
    while True:
        batch = bus.read([events_stream(TENANT)], group, "reader", count=500)
        if not batch:
            return out
        out += [Event.from_json(d.payload) for d in batch]


def events_for(bus, message_id: str) -> list[Event]:
    """The events answering ``message_id``, in order."""
    return [e for e in all_events(bus) if e.message_id == message_id]


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05):
    """Poll ``condition()`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def helpers():
    """Helper functions for test modules (importlib mode cannot import conftest directly)."""
    import types

    return types.SimpleNamespace(envelope=envelope, all_events=all_events, events_for=events_for,
                                 wait_for=wait_for, agent_config=agent_config, TENANT=TENANT)
