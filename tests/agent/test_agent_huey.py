"""The inbox listener → SqliteHuey → turn path with a real Huey consumer: ack after durable
queueing, retries then dead-letter with an apology, and start-up recovery of unfinished work."""

from __future__ import annotations

import json
import threading

import pytest

from agent.listener import InboxListener
from agent.tasks import APOLOGY_TEXT, AgentTasks
from wire.protocol import messages_stream


@pytest.fixture
def listening(make_runtime, consumer_of):
    """``(runtime, tasks)`` with the listener running in a thread and a consumer started."""
    threads = []

    def start(**overrides):
        runtime = make_runtime(**overrides)
        tasks = AgentTasks(runtime)
        consumer_of(tasks)
        listener = InboxListener(runtime, tasks)
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        threads.append((listener, thread))
        return runtime, tasks

    yield start
    for listener, thread in threads:
        listener.stop()
        thread.join(5)


def test_envelope_is_answered_through_huey_and_acked(listening, standin, helpers):
    runtime, _ = listening()
    standin.script(["Hello from the worker."])
    env = helpers.envelope("hi there")
    runtime.bus.append(messages_stream("t1"), env.to_json(), idempotency_key=env.id)

    final = helpers.wait_for(lambda: [e for e in helpers.events_for(runtime.bus, env.id) if e.kind == "final"])
    assert final[0].text == "Hello from the worker."
    helpers.wait_for(lambda: runtime.inbox.state(env.id) == "done")
    assert runtime.bus.pending_count(messages_stream("t1"), "agent") == 0


def test_redelivered_envelope_is_answered_once(listening, standin, helpers):
    runtime, _ = listening()
    standin.script(["Only once."])
    env = helpers.envelope("hello")
    runtime.bus.append(messages_stream("t1"), env.to_json())
    helpers.wait_for(lambda: runtime.inbox.state(env.id) == "done")
    runtime.bus.append(messages_stream("t1"), env.to_json())  # a duplicate delivery of the same id
    helpers.wait_for(lambda: runtime.bus.pending_count(messages_stream("t1"), "agent") == 0
                     and runtime.bus.length(messages_stream("t1")) == 2)
    finals = [e for e in helpers.events_for(runtime.bus, env.id) if e.kind == "final"]
    assert [e.text for e in finals] == ["Only once."]
    assert len(standin.requests) == 1


def test_failing_turn_is_retried_then_dead_lettered_with_an_apology(listening, standin, helpers):
    runtime, tasks = listening(task_attempts=3)
    attempts = []

    def broken(envelope):
        attempts.append(envelope.id)
        raise RuntimeError("history database is corrupt")

    tasks.runner.handle = broken
    env = helpers.envelope("are you there?")
    runtime.bus.append(messages_stream("t1"), env.to_json())

    error = helpers.wait_for(lambda: [e for e in helpers.events_for(runtime.bus, env.id) if e.kind == "error"])
    assert error[0].text == APOLOGY_TEXT and len(attempts) == 3
    assert runtime.inbox.state(env.id) == "dead"
    [dead] = [json.loads(d.payload) for d in runtime.bus.read([messages_stream("t1") + ":dead"], "ops", "o")]
    assert dead["envelope"]["id"] == env.id and "corrupt" in dead["reason"] and dead["attempts"] == 3


def test_malformed_and_foreign_entries_are_dead_lettered_not_fatal(listening, standin, helpers):
    runtime, _ = listening()
    runtime.bus.append(messages_stream("t1"), "{not json")
    foreign = helpers.envelope("hi")
    runtime.bus.append(messages_stream("t1"), foreign.to_json().replace('"tenant": "t1"', '"tenant": "t2"'))
    standin.script(["still alive"])
    env = helpers.envelope("ping")
    runtime.bus.append(messages_stream("t1"), env.to_json())
    helpers.wait_for(lambda: runtime.inbox.state(env.id) == "done")
    assert runtime.bus.length(messages_stream("t1") + ":dead") == 2


def test_recover_requeues_envelopes_a_killed_worker_left_running(make_runtime, consumer_of, standin, helpers):
    runtime = make_runtime()
    tasks = AgentTasks(runtime)
    env = helpers.envelope("what did I miss?")
    runtime.inbox.admit(env.id, "telegram:chat-1", env.to_json())
    runtime.inbox.start(env.id)  # taken off Huey's queue by a worker that then died
    assert tasks.recover() == 1
    assert tasks.recover() == 0  # already back in the queue: not enqueued twice
    standin.script(["Recovered answer."])
    consumer_of(tasks)
    helpers.wait_for(lambda: runtime.inbox.state(env.id) == "done")
    assert [e.text for e in helpers.events_for(runtime.bus, env.id) if e.kind == "final"] == ["Recovered answer."]
