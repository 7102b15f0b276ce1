"""Agent process entry point: ``python -m agent.main run``.

``run`` reads the tenant's inbox (``hermes:messages:{tenant}``, consumer group ``agent``),
answers each envelope with one turn and acknowledges it only after the final event is on the
bus, so a crash mid-turn means redelivery, never loss.  SIGTERM/SIGINT stop it after the
current turn.  Readiness is reported by writing ``<data_dir>/agent.ready`` once the bus and the
model are loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from agent.config import AgentConfig, AgentConfigError
from agent.history import History
from agent.llm import backend_from_config
from agent.turn import TurnRunner
from wire.errors import MalformedMessage, WireError
from wire.factory import bus_from_url
from wire.protocol import Envelope, events_stream, messages_stream

log = logging.getLogger("agent")

INBOX_GROUP = "agent"
READY_FILE = "agent.ready"


class InboxListener:
    """Consumes one tenant's inbox and runs a turn per envelope.

    Args:
        config: the agent configuration.
        bus: a ``wire.bus.Bus``.
        runner: the ``TurnRunner`` answering envelopes.
    """

    def __init__(self, config: AgentConfig, bus, runner: TurnRunner):
        self.config = config
        self.bus = bus
        self.runner = runner
        self.stream = messages_stream(config.tenant)
        self.stopping = threading.Event()

    def run(self) -> None:
        """Loop until ``stop()``: read, answer, acknowledge."""
        while not self.stopping.is_set():
            for delivery in self.bus.read([self.stream], INBOX_GROUP, self.config.consumer,
                                          count=1, block=1.0):
                self._handle(delivery)

    def _handle(self, delivery) -> None:
        try:
            envelope = Envelope.from_json(delivery.payload)
        except MalformedMessage as exc:
            log.error("dead-lettering malformed entry %s: %s", delivery.entry_id, exc)
            self.bus.dead_letter(delivery, INBOX_GROUP, str(exc))
            return
        if envelope.tenant != self.config.tenant:
            log.error("dead-lettering envelope %s for another tenant", envelope.id)
            self.bus.dead_letter(delivery, INBOX_GROUP, "wrong tenant")
            return
        self.runner.handle(envelope)
        self.bus.ack(delivery.stream, INBOX_GROUP, delivery.entry_id)

    def stop(self, *_args) -> None:
        """Ask the loop to end after the current envelope."""
        self.stopping.set()


def build_listener(config: AgentConfig) -> InboxListener:
    """Wire bus, model, history and runner for ``config``; load the model eagerly."""
    bus = bus_from_url(config.bus_url, visibility_timeout=config.visibility_timeout)
    bus.ping()
    llm = backend_from_config(config)
    history = History(Path(config.data_dir) / "history.db")
    outbox = events_stream(config.tenant)

    def publish(event):
        key = f"{event.message_id}:final" if event.kind in ("final", "error") else None
        bus.append(outbox, event.to_json(), idempotency_key=key)

    runner = TurnRunner(llm, history, publish, history_turns=config.history_turns,
                        max_tokens=config.max_tokens, delta_interval=config.delta_interval)
    warm = getattr(llm, "_llama", None)
    if warm is not None:
        warm()
    return InboxListener(config, bus, runner)


def _write_ready(config: AgentConfig) -> None:
    path = Path(config.data_dir) / READY_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "llm": config.llm}))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m agent.main run``; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="agent", description="Hermes Max tenant agent")
    parser.add_argument("command", choices=["run"], help="run: inbox listener answering turns")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    try:
        config = AgentConfig.from_env()
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
        listener = build_listener(config)
    except (AgentConfigError, WireError) as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, listener.stop)
    _write_ready(config)
    log.info("agent for tenant %s ready (llm=%s)", config.tenant, config.llm)
    listener.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
