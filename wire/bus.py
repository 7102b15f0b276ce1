"""The bus contract: durable, per-tenant streams with consumer groups and acknowledgement.

Semantics (DESIGN.md, "Contracts"; modelled on Redis Streams consumer groups):

* ``append`` adds an entry to a stream and returns its id; ids increase within a stream.
* ``read`` hands each consumer group every entry once, in order; a read entry is *pending*
  for that group until ``ack``.  Different groups read the same stream independently.
* An entry pending for longer than ``visibility_timeout`` seconds is handed out again
  (to any consumer of the group): at-least-once delivery.  Consumers are idempotent on the
  envelope id.
* ``append`` with an ``idempotency_key`` appends at most once per key and stream (``RedisBus``
  remembers a key for ``idempotency_ttl`` seconds, 7 days by default).
* ``dead_letter`` moves an entry that can never be processed to ``<stream>:dead`` and acks it.
* ``delete_stream`` forgets a stream for good (a deleted account's data, issue #19).

``SqliteBus`` (embedded default) and ``RedisBus`` (production) implement this; one contract
test suite runs against both.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One entry handed to a consumer.

    Attributes:
        stream: the stream name it was read from.
        entry_id: the bus's id of the entry (pass it to ``ack``).
        payload: the entry's text exactly as appended.
        attempts: how many times this entry has been handed to this group (1 on first read).
    """

    stream: str
    entry_id: str
    payload: str
    attempts: int


class Bus(abc.ABC):
    """Abstract bus; see the module docstring for the semantics every implementation keeps."""

    visibility_timeout: float = 30.0

    @abc.abstractmethod
    def append(self, stream: str, payload: str, idempotency_key: str | None = None) -> str:
        """Append ``payload`` (JSON text) to ``stream``; return the new entry id.

        When ``idempotency_key`` (e.g. the envelope id) was already appended to ``stream``,
        nothing is appended and the earlier entry's id is returned, so a retried webhook never
        publishes the same envelope twice.

        Raises:
            BusUnavailable: the backend cannot be reached, or refuses new entries for now
                (``RedisBus`` raises its subclass ``BusBackpressure`` when a consumer group is
                too far behind); nothing was appended, so the caller answers 503 and the sender
                retries.
        """

    @abc.abstractmethod
    def read(
        self,
        streams: list[str],
        group: str,
        consumer: str,
        count: int = 10,
        block: float = 0.0,
    ) -> list[Delivery]:
        """Hand out up to ``count`` entries of each of ``streams`` to ``consumer`` of ``group``.

        ``count`` bounds the entries taken from each stream (Redis ``XREADGROUP COUNT``
        semantics, https://redis.io/commands/xreadgroup): every entry a read takes is returned,
        never dropped, so a read of several streams may return more than ``count`` entries in
        all.  Implementations may return fewer (``SqliteBus`` returns at most ``count`` in all).
        Entries pending longer than ``visibility_timeout`` seconds are redelivered first, then
        new entries in order.  ``block`` is how long to wait, in seconds, when nothing is
        available (0 = return at once).  The group is created on first use, starting at the
        beginning of each stream.
        """

    def append_many(
        self, stream: str, payloads: list[str], idempotency_keys: list[str | None] | None = None
    ) -> list[str]:
        """Append each of ``payloads`` to ``stream`` in order, as ``append`` would; return their ids.

        ``idempotency_keys``, when given, has one key (or ``None``) per payload.  Backends
        override this to batch the round trips (one transaction or one pipeline).  When it
        raises, a prefix of the batch may already be appended: pass idempotency keys to make a
        retry of the whole batch safe.

        Raises:
            BusUnavailable: the backend cannot be reached.
            ValueError: ``idempotency_keys`` does not have one entry per payload.
        """
        keys = idempotency_keys if idempotency_keys is not None else [None] * len(payloads)
        return [self.append(stream, payload, key) for payload, key in zip(payloads, keys, strict=True)]

    @abc.abstractmethod
    def ack(self, stream: str, group: str, entry_id: str) -> None:
        """Mark ``entry_id`` as processed by ``group``; it is never handed out again."""

    def ack_many(self, stream: str, group: str, entry_ids: list[str]) -> None:
        """Acknowledge every id of ``entry_ids`` (one round trip where the backend allows it)."""
        for entry_id in entry_ids:
            self.ack(stream, group, entry_id)

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, group: str, reason: str) -> None:
        """Copy ``delivery`` with ``reason`` to ``<stream>:dead`` and ack it for ``group``."""

    @abc.abstractmethod
    def delete_stream(self, stream: str) -> None:
        """Delete ``stream`` with its dead letters (``<stream>:dead``), its idempotency keys and
        every consumer group's state; idempotent (a stream that does not exist is fine).

        A consumer still reading ``stream`` afterwards finds it empty (a read creates its group
        again, with no entries).

        Raises:
            BusUnavailable: the backend cannot be reached; nothing or part was deleted (retry).
        """

    @abc.abstractmethod
    def dead_letter_streams(self) -> list[str]:
        """Return the names of the dead-letter streams (``<stream>:dead``) holding entries, sorted
        (mission control, issue 21)."""

    @abc.abstractmethod
    def entries(self, stream: str, count: int = 100) -> list[tuple[str, str]]:
        """Return up to ``count`` entries of ``stream``, oldest first, as ``(entry id, payload)``;
        no consumer group is involved and nothing changes (Redis ``XRANGE``)."""

    @abc.abstractmethod
    def remove(self, stream: str, entry_id: str) -> bool:
        """Delete one entry of ``stream`` (Redis ``XDEL``; only ever a dead letter, a stream no
        group reads); return True when it was there."""

    @abc.abstractmethod
    def pending_count(self, stream: str, group: str) -> int:
        """Return how many entries of ``stream`` are read but not acknowledged by ``group``."""

    @abc.abstractmethod
    def length(self, stream: str) -> int:
        """Return how many entries ``stream`` currently holds."""

    @abc.abstractmethod
    def count_since(self, stream: str, since: float) -> int:
        """Return how many entries still in ``stream`` were appended at or after ``since`` (Unix
        seconds); the dead-letter rate of the SLOs (issue 21) counts ``<stream>:dead`` with it.
        Redis reads it from the entry ids, which are milliseconds since the epoch (``XRANGE``).

        Raises:
            BusUnavailable: the backend cannot be reached.
        """

    @abc.abstractmethod
    def ping(self) -> None:
        """Check the backend is reachable.

        Raises:
            BusUnavailable: it is not.
        """

    def close(self) -> None:
        """Release connections; the default has none to release."""
