"""The inbox listener: bus ``hermes:messages:{tenant}`` → durable Huey task, then ack.

Each envelope is recorded in the inbox ledger and queued in SqliteHuey before the bus entry is
acknowledged, so a crash between the two means a redelivery (deduplicated by the ledger),
never a loss.  ``/stop`` is answered here at once — the turn it stops is busy in a worker —
and malformed or foreign entries are moved to the dead-letter stream.
"""

from __future__ import annotations

import logging
import threading

from agent import commands
from wire.errors import MalformedMessage, WireError
from wire.protocol import AGENT_GROUP, Envelope, messages_stream

log = logging.getLogger(__name__)

INBOX_GROUP = AGENT_GROUP


class InboxListener:
    """Consumes one tenant's inbox.

    Args:
        runtime: the ``agent.runtime.AgentRuntime``.
        tasks: the ``agent.tasks.AgentTasks`` to queue envelopes on.
    """

    def __init__(self, runtime, tasks):
        self.runtime = runtime
        self.tasks = tasks
        self.stream = messages_stream(runtime.tenant)
        self.stopping = threading.Event()

    def run(self) -> None:
        """Loop until ``stop()``: read, queue durably, acknowledge."""
        config = self.runtime.config
        while not self.stopping.is_set():
            try:
                deliveries = self.runtime.bus.read([self.stream], INBOX_GROUP, config.consumer,
                                                   count=10, block=1.0)
            except WireError as exc:
                log.warning("bus read failed (%s); retrying", exc)
                self.stopping.wait(1.0)
                continue
            for delivery in deliveries:
                self.handle(delivery)

    def handle(self, delivery) -> None:
        """Process one bus delivery (see the module docstring)."""
        bus = self.runtime.bus
        try:
            envelope = Envelope.from_json(delivery.payload)
        except MalformedMessage as exc:
            log.error("dead-lettering malformed entry %s: %s", delivery.entry_id, exc)
            bus.dead_letter(delivery, INBOX_GROUP, str(exc))
            return
        if envelope.tenant != self.runtime.tenant:
            log.error("dead-lettering envelope %s for another tenant", envelope.id)
            bus.dead_letter(delivery, INBOX_GROUP, "wrong tenant")
            return
        if commands.is_command(envelope.text) and commands.parse(envelope).name == "stop":
            self.tasks.runner.handle(envelope)
        else:
            self.tasks.submit(envelope)
        bus.ack(delivery.stream, INBOX_GROUP, delivery.entry_id)

    def stop(self, *_args) -> None:
        """Ask the loop to end after the current batch."""
        self.stopping.set()
