"""One turn: an envelope in, a streamed reply (or a command's reply) out as events on the bus.

* Idempotent on envelope id: if the processed ledger already holds a reply (the envelope was
  redelivered after a crash or a lost ack), the stored reply is published again as ``final``
  under the same idempotency key ``{message_id}:final`` — the bus drops the duplicate — and no
  LLM call is made.
* The tenant's dashboard settings on the envelope (``agent.preferences``) are stored first, so
  the turn, its commands and later cron runs follow them.
* Slash commands (``agent.commands``) are answered without the LLM and kept out of history.
* A conversational turn: context (``agent.context``) → tool-use loop (``agent.loop``) with
  cumulative ``delta`` events at most every ``delta_interval`` seconds → history → memory
  extraction → skill learning/refinement → ``final`` with ``usage`` of every LLM call.
* Drafts before questions (``agent.drafts``): a large or open request is told to answer with a
  draft at once and at most 3 questions, which are kept on the chat; the chat's next message
  is taken as the answers and gets the revised draft.
* A tool that writes or sends and is not allowed ends the turn with a confirmation question
  (``agent.tools.permissions``); when the next message in the chat is a yes, that exact call
  runs first and the model continues from its result; anything else cancels it.
* An envelope of kind ``mcp_config`` (``wire.protocol.Envelope``) is configuration, not a
  message: the agent rewrites ``mcp_servers.json`` and reloads its MCP servers, with no model
  call and no reply event.
* Attachments (``agent.media``): voice notes are transcribed and the transcript is the user's
  words, shown as the reply's first line; images go to the model as image blocks (a model that
  cannot see says so); documents' text joins the user turn; a file that could not be used is
  named in the reply, which answers the rest.  With nothing left for the model (e.g. only a
  file that was too large) the reply is just those lines, and no model call is made.
  History and memory keep short descriptions (``[image: photo.jpg]``), never the bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent import commands, drafts, metrics, preferences
from agent.context import CHARS_PER_TOKEN
from agent.goals import GOAL_SENDER
from agent.history import History
from agent.llm.base import BudgetExhausted, LLMError, ToolUse, cannot_see_reply
from agent.mcp_client.config import McpConfigError
from agent.media import MediaPreparer, PreparedMessage
from agent.memory import MemoryRejected, extract_memories
from agent.tools.egress import TurnEgress
from agent.tools.permissions import confirmation_question, is_yes
from agent.tools.registry import ToolContext
from agent.usage import summarise_calls
from wire import logs
from wire.protocol import JOB, MCP_CONFIG, Envelope, Event

log = logging.getLogger(__name__)

LLM_FAILURE_TEXT = "Sorry, I could not reach my language model just now. Please try again in a minute."
STOPPED_SUFFIX = "(stopped)"


class TurnRunner:
    """Runs turns for one tenant and publishes their events.

    Args:
        runtime: the ``agent.runtime.AgentRuntime``.
        delta_interval: minimum seconds between published deltas (the delivery side edits at
            most about once a second per chat, so finer deltas only load the bus).
        stop_poll: seconds between checks for ``/stop``.
        monotonic: monotonic clock in seconds (injectable for tests).
        media: the ``agent.media.MediaPreparer`` (default: from the runtime's configuration,
            documents capped to half the context budget so they fit a small model's window).
    """

    def __init__(self, runtime, *, delta_interval: float | None = None, stop_poll: float = 0.2,
                 monotonic=time.monotonic, media: MediaPreparer | None = None):
        self.runtime = runtime
        self.delta_interval = runtime.config.delta_interval if delta_interval is None else delta_interval
        self.stop_poll = stop_poll
        self.monotonic = monotonic
        self.media = media or MediaPreparer.from_config(
            runtime.config, document_chars=runtime.context.budget_tokens * CHARS_PER_TOKEN // 2)

    def handle(self, envelope: Envelope, *, should_stop: Callable[[], bool] | None = None,
               budget_cents: float | None = None) -> str:
        """Answer ``envelope``; return the reply text (also published as ``final``/``error``).

        Every line logged meanwhile carries the envelope's ``request_id``, ``tenant`` and
        ``envelope_id`` (``wire.logs``).

        Args:
            envelope: the message.
            should_stop: polled with ``/stop`` (every ``stop_poll`` seconds); True ends the turn
                like ``/stop`` (a goal's turn yields to the user this way, ``agent.goal_runner``).
            budget_cents: this turn's spend cap in US cents instead of
                ``HERMES_TURN_BUDGET_CENTS`` (a goal passes what its budget has left).
        """
        with logs.bound(**logs.envelope_ids(envelope)):
            if envelope.kind == MCP_CONFIG:
                return self._configure_tools(envelope)
            log.info("turn started for %s chat %s", envelope.channel, envelope.chat_id)
            with metrics.turn(envelope.channel):
                return self._answer(envelope, should_stop, budget_cents)

    def _configure_tools(self, envelope: Envelope) -> str:
        """Apply an ``mcp_config`` envelope; return ``""`` (nothing is published).

        A configuration that cannot be applied is logged, not retried: retrying the same bad
        mapping cannot succeed, and the control plane's next push replaces it.
        """
        try:
            status = self.runtime.apply_mcp_config(envelope.mcp_servers or {})
        except McpConfigError as exc:
            log.error("MCP configuration %s not applied: %s", envelope.id, exc)
            return ""
        down = sorted(name for name, why in status.items() if why)
        log.info("MCP configuration applied: %d servers%s", len(status),
                 f", unavailable: {', '.join(down)}" if down else "")
        return ""

    def _answer(self, envelope: Envelope, should_stop=None, budget_cents: float | None = None) -> str:
        history = self.runtime.history
        earlier = history.processed_reply(envelope.id)
        if earlier is not None:
            log.info("envelope %s already answered; republishing its reply", envelope.id)
            self._publish(envelope, 0, "final", earlier)
            metrics.set_outcome("replayed")
            return earlier
        preferences.adopt(history, envelope)
        if commands.is_command(envelope.text):
            reply = commands.dispatch(self.runtime, envelope)
            history.mark_processed(envelope.id, reply)
            self._publish(envelope, 0, "final", reply)
            metrics.set_outcome("command")
            return reply
        with self.runtime.router.collect() as calls:
            kind, reply, seq = self._converse(envelope, should_stop, budget_cents)
        self._publish(envelope, seq, kind, reply, summarise_calls(calls))
        metrics.set_outcome(kind)
        return reply

    def _converse(self, envelope: Envelope, should_stop=None,
                  budget_cents: float | None = None) -> tuple[str, str, int]:
        """Run the conversational turn; return ``(event kind, reply text, seq of the last event)``."""
        runtime = self.runtime
        self._publish(envelope, 0, "status", "typing")
        key = History.chat_key(envelope.channel, envelope.chat_id)
        message = self._prepare(envelope)
        text = message.summary or "(empty message)"
        preface = message.preface
        if not message.needs_model and preface:
            runtime.history.record_exchange(key, envelope.id, text, preface)
            return "final", preface, 1
        profile = preferences.profile_section(runtime.preferences(), runtime.clock())
        context = runtime.context.build(key, text, profile=profile, content=message.content() or None)
        tool_ctx = ToolContext(tenant=envelope.tenant, channel=envelope.channel, chat_id=envelope.chat_id,
                               envelope_id=envelope.id, services=runtime.tool_services(),
                               egress=TurnEgress.for_turn(envelope.text, context.memories))
        streamer = _DeltaStreamer(self, envelope, preface)
        confirmed, step = self._confirmed_call(envelope, key, text, tool_ctx)
        drafting, answers, system = self._draft_mode(envelope, key, text, context.system)
        try:
            result = runtime.loop.run(system, context.messages + confirmed, tool_ctx,
                                      on_text=streamer, should_stop=self._stop_check(key, should_stop),
                                      budget_cents=budget_cents)
        except BudgetExhausted as exc:
            reply = _joined(preface, getattr(exc, "partial", ""), str(exc))
            runtime.history.record_exchange(key, envelope.id, text, reply)
            return "final", reply, streamer.seq
        except LLMError as exc:
            log.warning("LLM failed for envelope %s: %s", envelope.id, exc)
            metrics.error("llm")
            reply = _joined(preface, LLM_FAILURE_TEXT)
            runtime.history.mark_processed(envelope.id, reply)
            return "error", reply, streamer.seq
        if step is not None:
            result.steps.insert(0, step)
        if result.confirmation is not None:
            use = result.confirmation
            runtime.tool_permissions.ask(key, use.name, use.input)
            question = confirmation_question(use.name, use.input, runtime.registry.get(use.name))
            reply = _joined(preface, result.text, question)
            runtime.history.record_exchange(key, envelope.id, text, reply)
            return "final", reply, streamer.seq
        if answers:  # taken only now: a turn retried after a failure still sees them
            runtime.drafts.take(key)
        answer = result.text
        if drafting and not result.stopped and result.tripped is None:
            answer = self._draft_reply(key, text, answer)
        reply = _joined(preface, answer or "…")
        if result.stopped:
            reply = _joined(preface, f"{result.text}\n\n{STOPPED_SUFFIX}".strip())
        runtime.history.record_exchange(key, envelope.id, text, reply)
        if not result.stopped and result.tripped is None:  # learn nothing from a runaway loop
            self._remember(envelope, text, reply)
            self._learn(context.skill, text, result)
        return "final", reply, streamer.seq

    def _draft_mode(self, envelope: Envelope, key: str, text: str,
                    system: str) -> tuple[bool, bool, str]:
        """Decide whether this turn drafts first (``agent.drafts``); return ``(drafting,
        answers open questions, the system prompt to use)``.

        A message in a chat with open questions is their answer: the model is told to revise
        its draft (the turn takes the questions once the model answered).  Otherwise a large
        or open request (``drafts.triage``) is told to draft at once and ask at most
        ``MAX_QUESTIONS``.  A goal's own turns and jobs (Jobs API) do neither: nobody is in
        their chat to answer.
        """
        if envelope.sender_id == GOAL_SENDER or envelope.kind == JOB:
            return False, False, system
        opened = self.runtime.drafts.peek(key)
        if opened is not None:
            log.info("message answers %d open questions; revising the draft", len(opened.questions))
            return False, True, system + opened.instruction()
        verdict = drafts.triage(text)
        if not verdict.draft:
            return False, False, system
        log.info("request is %s: drafting before asking", verdict.reason)
        return True, False, system + drafts.DRAFT_INSTRUCTION

    def _draft_reply(self, key: str, request: str, text: str) -> str:
        """Shape a drafting turn's reply: a draft, then at most ``MAX_QUESTIONS`` questions, which
        become the chat's open questions.  A reply that only asked gets a draft from one more
        model call, so the user always gets something usable."""
        shaped = drafts.shape(text)
        if not shaped.draft:
            try:
                draft = self.runtime.router.complete(drafts.DRAFT_ONLY_PROMPT.format(request=request),
                                                     purpose="draft",
                                                     max_tokens=self.runtime.config.max_tokens)
                shaped = drafts.Shaped(draft.strip(), shaped.questions)
            except LLMError as exc:
                log.warning("the model only asked, and the draft call failed: %s", exc)
        if shaped.questions:
            self.runtime.drafts.ask(key, request, shaped.questions)
        return shaped.text()

    def _prepare(self, envelope: Envelope) -> PreparedMessage:
        """Return the envelope's text and attachments made usable (``agent.media``).

        Images are dropped here, with a line saying so, when no backend of the chain can see
        and the message has no words besides them: there is nothing else to answer.
        """
        message = self.media.prepare(envelope.text, envelope.attachments)
        router = self.runtime.router
        if message.images and not router.supports_images and not message.has_words:
            backend, model = router.ordered()[0]
            message.shown.append(cannot_see_reply(model or backend.model))
            message.images = []
        return message

    def _confirmed_call(self, envelope: Envelope, key: str, text: str, tool_ctx: ToolContext):
        """Run the call the user just confirmed; return ``(messages to add, its ToolStep)``.

        ``([], None)`` when the chat had no pending question, or the answer was not a yes (the
        question is then dropped).  The added messages are the assistant's ``tool_use`` and the
        ``tool_result``, so the model continues from the result.
        """
        permissions = self.runtime.tool_permissions
        pending = permissions.take_pending(key)
        if pending is None:
            return [], None
        if not is_yes(text):
            log.info("user did not confirm %s; cancelled", pending.tool)
            return [], None
        permissions.grant_once(key, pending.tool, pending.input)
        use = ToolUse(id=f"toolu_confirmed_{envelope.id}", name=pending.tool, input=pending.input)
        step = self.runtime.loop.execute(use, tool_ctx)
        log.info("user confirmed %s; it ran (%s)", use.name, "failed" if step.is_error else "ok")
        return [{"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name,
                                                    "input": use.input}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                              "content": step.result, "is_error": step.is_error}]}], step

    def _stop_check(self, chat_key: str, extra: Callable[[], bool] | None = None):
        started = time.time()
        state: dict[str, float | bool] = {"next": 0.0, "stop": False}

        def should_stop() -> bool:
            now = self.monotonic()
            if not state["stop"] and now >= state["next"]:
                state["next"] = now + self.stop_poll
                state["stop"] = (self.runtime.inbox.stop_requested(chat_key, started)
                                 or (extra is not None and extra()))
            return bool(state["stop"])
        return should_stop

    def _remember(self, envelope: Envelope, user_text: str, reply: str) -> None:
        """Auto-extraction: the router proposes memories; the store screens and merges them."""
        if not self.runtime.config.memory_extraction:
            return
        try:
            facts = extract_memories(lambda p: self.runtime.router.complete(p, purpose="extract"),
                                     user_text, reply)
            store = self.runtime.memory() if facts else None
            if store is None:
                return
            for fact in facts:
                try:
                    store.remember(fact, source=f"extraction:{envelope.id}")
                except MemoryRejected as exc:
                    log.info("extraction proposal refused: %s", exc.reason)
        except LLMError as exc:
            log.info("memory extraction skipped: %s", exc)
        except Exception:  # memory is an aid: never fail a delivered turn over it
            log.exception("memory extraction failed for envelope %s", envelope.id)

    def _learn(self, skill, request: str, result) -> None:
        """Refine the skill that was used, or learn a new one from a long task."""
        skills = self.runtime.skills
        try:
            ok_steps = [s for s in result.steps if not s.is_error]
            if skill is not None and ok_steps:
                refined = skills.refine(skill, request, ok_steps)
                log.info("skill %s refined to %s", refined.name, refined.version)
            elif skill is None:
                learned = skills.learn(request, ok_steps)
                if learned is not None:
                    log.info("learned skill %s from a %d-step task", learned.name, len(ok_steps))
        except Exception:  # a skill is a bonus: never fail a delivered turn over it
            log.exception("skill learning failed")

    def _publish(self, envelope: Envelope, seq: int, kind: str, text: str, usage: dict | None = None) -> None:
        if kind in ("final", "error"):
            log.info("turn answered: %s event %d, %d characters", kind, seq, len(text))
        self.runtime.publish(Event(message_id=envelope.id, seq=seq, kind=kind, text=text,
                                   tenant=envelope.tenant, channel=envelope.channel,
                                   chat_id=envelope.chat_id, usage=usage))


def _joined(*parts: str) -> str:
    """The non-empty ``parts`` as paragraphs (the reply's first lines, then the answer)."""
    return "\n\n".join(p for p in parts if p)


class _DeltaStreamer:
    """Publishes the cumulative reply (after ``preface``, the reply's first lines) as ``delta``
    events, at most one per interval."""

    def __init__(self, runner: TurnRunner, envelope: Envelope, preface: str = ""):
        self.runner = runner
        self.envelope = envelope
        self.preface = preface
        self.seq = 1
        self.last = runner.monotonic()

    def __call__(self, text: str) -> None:
        now = self.runner.monotonic()
        if text.strip() and now - self.last >= self.runner.delta_interval:
            self.runner._publish(self.envelope, self.seq, "delta", _joined(self.preface, text))
            self.seq += 1
            self.last = now
