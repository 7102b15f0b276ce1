"""One conversational turn: history + user message → streamed reply events on the bus.

The runner is idempotent on envelope id: if the ledger already holds a reply for the
envelope (it was redelivered after a crash or a lost ack), the stored reply is published
again as ``final`` — the delivery side is idempotent on message id — and no LLM call is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.history import History
from agent.llm.base import LLMBackend, LLMError, LLMRequest, TextDelta
from agent.llm.pricing import cost_cents
from wire.protocol import Envelope, Event

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are Hermes, the user's personal AI agent. You run on the user's own server and talk "
    "with them in a chat app. Be helpful, concise and friendly; answer in the user's language."
)

LLM_FAILURE_TEXT = "Sorry, I could not reach my language model just now. Please try again in a minute."


class TurnRunner:
    """Runs turns for one tenant and publishes their events.

    Args:
        llm: the chat model.
        history: the tenant's history and processed ledger.
        publish: called with every ``Event`` in order; must be durable when it returns.
        history_turns: previous messages of the chat to include.
        max_tokens: output token limit per reply.
        delta_interval: minimum seconds between published deltas (the delivery side edits at
            most once a second per chat, so finer deltas only load the bus).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, llm: LLMBackend, history: History, publish: Callable[[Event], None], *,
                 history_turns: int = 20, max_tokens: int = 1024, delta_interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        self.llm = llm
        self.history = history
        self.publish = publish
        self.history_turns = history_turns
        self.max_tokens = max_tokens
        self.delta_interval = delta_interval
        self.clock = clock

    def handle(self, envelope: Envelope) -> str:
        """Answer ``envelope``; return the final reply text (also published as ``final``)."""
        earlier = self.history.processed_reply(envelope.id)
        if earlier is not None:
            log.info("envelope %s already answered; republishing its reply", envelope.id)
            self.publish(self._event(envelope, 0, "final", earlier))
            return earlier
        self.publish(self._event(envelope, 0, "status", "typing"))
        key = History.chat_key(envelope.channel, envelope.chat_id)
        messages = self.history.recent(key, self.history_turns)
        messages.append({"role": "user", "content": envelope.text or "(empty message)"})
        request = LLMRequest(system=SYSTEM_PROMPT, messages=messages, max_tokens=self.max_tokens)
        started = self.clock()
        try:
            reply, completion, seq = self._stream(envelope, request)
        except LLMError as exc:
            log.warning("LLM failed for envelope %s: %s", envelope.id, exc)
            self.publish(self._event(envelope, 1, "error", LLM_FAILURE_TEXT))
            return LLM_FAILURE_TEXT
        usage = {
            "model": completion.model,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cost_cents": cost_cents(completion.model, completion.input_tokens, completion.output_tokens),
            "latency_ms": int((self.clock() - started) * 1000),
        }
        self.history.record_exchange(key, envelope.id, envelope.text, reply)
        self.publish(self._event(envelope, seq, "final", reply, usage))
        return reply

    def _stream(self, envelope: Envelope, request: LLMRequest):
        parts: list[str] = []
        seq = 1
        last_published = self.clock()
        stream = self.llm.stream(request)
        while True:
            try:
                piece = next(stream)
            except StopIteration as stop:
                completion = stop.value
                break
            if isinstance(piece, TextDelta):
                parts.append(piece.text)
                if self.clock() - last_published >= self.delta_interval and "".join(parts).strip():
                    self.publish(self._event(envelope, seq, "delta", "".join(parts)))
                    seq += 1
                    last_published = self.clock()
        reply = (completion.text or "".join(parts)).strip() or "…"
        return reply, completion, seq

    @staticmethod
    def _event(envelope: Envelope, seq: int, kind: str, text: str, usage: dict | None = None) -> Event:
        return Event(message_id=envelope.id, seq=seq, kind=kind, text=text, tenant=envelope.tenant,
                     channel=envelope.channel, chat_id=envelope.chat_id, usage=usage)
