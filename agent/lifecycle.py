"""The agent's lifecycle reports on its events stream: ``ready``, ``heartbeat``, ``failed``.

The control plane marks a machine ready only when its agent said so (DESIGN.md, "Agent
lifecycle"), unhealthy when heartbeats stop, and failed with the agent's own reason when it
cannot start.  Only the process that owns the LLM backend reports (``run`` locally, ``worker``
on a VM): ready means ready to answer.
"""

from __future__ import annotations

import logging
import threading

from wire.bus import Bus
from wire.errors import WireError
from wire.protocol import Event, events_stream

log = logging.getLogger(__name__)


def publish(bus: Bus, tenant: str, state: str, text: str = "") -> None:
    """Append one lifecycle event (``ready``/``heartbeat``/``failed``) to ``tenant``'s events stream.

    Raises:
        WireError: the bus refused or could not be reached.
    """
    bus.append(events_stream(tenant), Event.lifecycle_event(tenant, state, text).to_json())


class Heartbeat:
    """Publishes a ``heartbeat`` every ``interval`` seconds from a daemon thread until stopped.

    A bus error skips one beat (logged) rather than stopping the agent: a short Redis outage
    shows up as missed heartbeats on the control plane, which is the truth.

    Args:
        bus: the agent's bus (its connections are per thread; this thread closes its own).
        tenant: the tenant id.
        interval: seconds between beats.
    """

    def __init__(self, bus: Bus, tenant: str, interval: float):
        self.bus = bus
        self.tenant = tenant
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        """Start beating (the first beat comes ``interval`` seconds after the ready event)."""
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    publish(self.bus, self.tenant, "heartbeat")
                except WireError as exc:
                    log.warning("heartbeat not published: %s", exc)
        finally:
            self.bus.close()

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most one bus call long)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
