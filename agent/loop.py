"""The tool-use loop: stream a model call, run the tools it asks for, feed results back, repeat.

Rules (issue 3, "Tool-use loop"):
* A tool error — an exception, an unknown tool, bad input, a timeout — goes back to the model
  as a ``tool_result`` with ``is_error: true`` and never ends the turn.
* Each tool call gets ``timeout`` seconds (the tool's own or the loop default); the call runs
  on a daemon thread, so a hung tool cannot hold the turn or the process.
* At most ``max_steps`` rounds of tool calls per turn; then the model is asked once more
  without tools, so the user still gets an answer.
* ``should_stop()`` is polled between stream items and tool calls; a stop ends the turn with
  the text so far.
* A tool marked ``confirm`` (it writes or sends) runs only when the ``tool_permissions``
  service (``agent.tools.permissions``) permits that call; otherwise the turn ends there with
  ``LoopResult.confirmation`` set, and the caller asks the user (``agent.turn``).  So does a
  tool that would send the turn's private data to a host the user did not name
  (``agent.tools.egress``, issue 19).
* A ``LoopGuard`` (``agent.loop_guard``, issue 23) ends the turn, with its explanation as the
  last paragraph and no further model call, when the model repeats an identical tool call or a
  tool repeats an identical failure ``REPEAT_LIMIT`` times, or when the turn's model calls
  cost ``budget_cents`` (``HERMES_TURN_BUDGET_CENTS``) before it finished.
The visible reply is the text of every model call in the turn, joined by blank lines, so the
cumulative deltas and the final reply agree.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import metrics
from agent.history import History
from agent.llm.base import Completion, LLMRequest, Notice, TextDelta, ToolUse
from agent.loop_guard import LoopGuard, Trip
from agent.tools.registry import ToolContext, ToolError, ToolRegistry

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 20_000  # a tool result larger than ~5k tokens is truncated for the model


@dataclass(frozen=True)
class ToolStep:
    """One executed tool call: name, input, the result text, whether it failed, and duration (ms)."""

    name: str
    input: dict
    result: str
    is_error: bool
    duration_ms: int
    needs_confirmation: bool = False


@dataclass
class LoopResult:
    """Outcome of one turn's loop.

    Attributes:
        text: the visible reply.
        steps: tool calls executed, in order.
        completions: every model call's ``Completion``.
        stopped: True when ``should_stop`` ended the turn.
        step_limit_hit: True when ``max_steps`` rounds of tool calls were used up.
        confirmation: the tool call that needs the user's yes before it runs (the turn ended
            there), else None.
        tripped: why the loop guard ended the turn (its reason ends ``text``), else None.
        cost_cents: what the turn's model calls cost, US cents.
    """

    text: str = ""
    steps: list[ToolStep] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    stopped: bool = False
    step_limit_hit: bool = False
    confirmation: ToolUse | None = None
    tripped: Trip | None = None
    cost_cents: float = 0.0


class ToolLoop:
    """Runs the loop against ``llm`` (a backend or the router) with the tools in ``registry``.

    Args:
        llm: an ``LLMBackend``.
        registry: the tools offered to the model.
        max_steps: rounds of tool calls allowed per turn.
        tool_timeout: default seconds per tool call.
        max_tokens: output tokens per model call.
        budget_cents: default spend cap per turn, US cents (0: none).
    """

    def __init__(self, llm, registry: ToolRegistry, *, max_steps: int = 8, tool_timeout: float = 20.0,
                 max_tokens: int = 1024, budget_cents: float = 0.0):
        self.llm = llm
        self.registry = registry
        self.max_steps = max_steps
        self.tool_timeout = tool_timeout
        self.max_tokens = max_tokens
        self.budget_cents = budget_cents

    def run(self, system: str, messages: list[dict], ctx: ToolContext, *,
            on_text: Callable[[str], None] = lambda text: None,
            should_stop: Callable[[], bool] = lambda: False,
            budget_cents: float | None = None) -> LoopResult:
        """Run the turn; ``on_text`` gets the cumulative visible text after every piece.

        ``budget_cents`` caps this turn's spend instead of the loop's default (a goal passes
        what is left of its budget when that is less).

        Raises:
            LLMError: a model call failed on every backend (the text so far is in ``exc.partial``).
        """
        result = LoopResult()
        guard = LoopGuard(self.budget_cents if budget_cents is None else budget_cents)
        messages = list(messages)
        segments: list[str] = []
        tools = self.registry.definitions() if getattr(self.llm, "supports_tools", True) else []
        for step in range(self.max_steps + 1):
            offer = tools if step < self.max_steps else []
            request = LLMRequest(system=system, messages=messages, max_tokens=self.max_tokens, tools=offer)
            segments.append("")
            try:
                completion = self._call(request, segments, on_text, should_stop)
            except Exception as exc:
                exc.partial = _join(segments)  # type: ignore[attr-defined]  # read by the caller
                raise
            if completion is None:
                result.stopped = True
                break
            result.completions.append(completion)
            spent = guard.after_model_call(completion.cost_cents)
            result.cost_cents = guard.spent_cents
            if not completion.tool_uses or not offer:
                break
            if spent is not None:
                result.tripped = spent
                break
            messages.append({"role": "assistant", "content": completion.content})
            results = []
            for use in completion.tool_uses:
                if should_stop():
                    result.stopped = True
                    break
                result.tripped = guard.before_call(use.name, use.input)
                if result.tripped is not None:
                    break
                tool_step = self.execute(use, ctx)
                if tool_step.needs_confirmation:
                    result.confirmation = use
                    break
                result.steps.append(tool_step)
                results.append({"type": "tool_result", "tool_use_id": use.id, "content": tool_step.result,
                                "is_error": tool_step.is_error})
                if tool_step.is_error:
                    result.tripped = guard.after_failure(use.name, tool_step.result)
                    if result.tripped is not None:
                        break
            if result.stopped or result.confirmation is not None or result.tripped is not None:
                break
            messages.append({"role": "user", "content": results})
            if step + 1 == self.max_steps:
                result.step_limit_hit = True
                messages[-1]["content"].append({
                    "type": "text",
                    "text": f"(Tool step limit of {self.max_steps} reached: answer now with what you have.)"})
        if result.tripped is not None:
            log.warning("loop guard ended the turn (%s) after %d tool calls, %.4f cents",
                        result.tripped.kind, len(result.steps), guard.spent_cents)
            metrics.error(f"loop_guard_{result.tripped.kind}")
            segments.append(result.tripped.reason)
        result.text = _join(segments)
        return result

    def _call(self, request, segments, on_text, should_stop) -> Completion | None:
        stream = self.llm.stream(request)
        while True:
            if should_stop():
                stream.close()
                return None
            try:
                item = next(stream)
            except StopIteration as stop:
                return stop.value
            if isinstance(item, TextDelta):
                segments[-1] += item.text
                on_text(_join(segments))
            elif isinstance(item, Notice):
                segments.insert(len(segments) - 1, item.text.strip())
                on_text(_join(segments))
            elif isinstance(item, ToolUse):
                log.debug("model asks for tool %s", item.name)

    def execute(self, use: ToolUse, ctx: ToolContext) -> ToolStep:
        """Run one tool call (within its timeout); return its step, errors as ``is_error``.

        A ``confirm`` tool, or one ``ctx.egress`` says needs consent, that is not permitted is
        not run: the step has ``needs_confirmation`` set.
        """
        started = time.monotonic()
        tool = self.registry.get(use.name)
        if (tool is not None and (tool.confirm or ctx.egress.needs_consent(tool, use.input))
                and not _permitted(use, ctx)):
            return ToolStep(use.name, use.input, "", False, 0, needs_confirmation=True)
        if tool is None:
            text, is_error = f"unknown tool {use.name!r}; available: {', '.join(self.registry.names())}", True
        else:
            text, is_error = self._run_with_timeout(tool, use.input, ctx, tool.timeout or self.tool_timeout)
            ctx.egress.note(tool)
        if len(text) > MAX_RESULT_CHARS:
            text = text[:MAX_RESULT_CHARS] + f"\n[truncated at {MAX_RESULT_CHARS} characters]"
        if is_error:
            log.info("tool %s failed: %s", use.name, text)
        seconds = time.monotonic() - started
        metrics.tool_call(use.name if tool is not None else "unknown", is_error, seconds)
        return ToolStep(use.name, use.input, text, is_error, int(seconds * 1000))

    @staticmethod
    def _run_with_timeout(tool, args: dict, ctx: ToolContext, timeout: float) -> tuple[str, bool]:
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = tool.handler(args, ctx)
            except ToolError as exc:
                outcome["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a tool bug becomes an error result
                outcome["error"] = f"{type(exc).__name__}: {exc}"

        worker = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return f"tool {tool.name} timed out after {timeout:g} s", True
        if "error" in outcome:
            return outcome["error"], True
        value = outcome.get("value")
        return (value if isinstance(value, str) else json.dumps(value, default=str)), False


def _permitted(use: ToolUse, ctx: ToolContext) -> bool:
    permissions = ctx.services.get("tool_permissions")
    return (permissions is not None and
            permissions.permits(History.chat_key(ctx.channel, ctx.chat_id), use.name, use.input))


def _join(segments: list[str]) -> str:
    return "\n\n".join(s.strip() for s in segments if s.strip())
