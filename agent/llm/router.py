"""The LLM router: an ordered failover chain with retries, circuit breakers, cost accounting
and a per-tenant daily budget.  It is itself an ``LLMBackend``, so the tool loop cannot tell.

* Order: ``quality_first`` keeps the configured chain order; ``cost_first`` puts the cheapest
  backend first (free/local before paid).  A tenant's ``/model`` choice moves its backend to
  the front and overrides that backend's model.
* Retries: a retryable ``LLMError`` (429, 5xx, 529 overloaded, connection) before any output is
  retried with exponential backoff (tenacity), then the next backend is tried.  An error after
  output was streamed is not retried (the user already saw part of the reply).
* Circuit breaker (pybreaker) per backend: ``fail_max`` consecutive failures open it for
  ``reset_timeout`` seconds, during which the backend is skipped.
* Budget: a paid backend (non-zero price) is refused once the tenant spent
  ``daily_budget_cents`` today (UTC); a free backend answers instead, with a ``Notice`` for the
  user, or ``BudgetExhausted`` carries a clear message when there is none.
* Accounting: every successful call is recorded in the ``UsageLedger`` and in the calling
  thread's collector (``collect()``), so a turn can publish its calls.
* Images: a request carrying ``image`` blocks tries the backends that can see first (chain
  order kept among them).  A backend that cannot see gets each image replaced by a text note,
  and the reply starts with a ``Notice`` saying it did not look (once per turn: only when the
  user's message is the last one, not on tool-loop continuations).
* Selection reason: each call carries why its backend was chosen (``wire.route_reasons``:
  the chain's first, ``cost_first``, the user's ``/model``, ``vision``, or a fallback after an
  error, an open circuit or the budget); the LLM gateway records it for operators.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pybreaker
import tenacity

from agent import metrics
from agent.llm.base import (
    BudgetExhausted,
    Completion,
    LLMBackend,
    LLMError,
    LLMRequest,
    Notice,
    cannot_see_notice,
    complete_text,
    has_images,
    without_images,
)
from agent.usage import CallRecord, UsageLedger
from wire import route_reasons
from wire.pricing import cost_cents, is_paid

log = logging.getLogger(__name__)


def _not_counted(exc: BaseException) -> bool:
    # Our own bad requests and generator closes say nothing about the backend's health.
    return isinstance(exc, GeneratorExit) or (isinstance(exc, LLMError) and not exc.retryable)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, LLMError) and exc.retryable


class Router(LLMBackend):
    """Failover over ``backends`` for one tenant.

    Args:
        backends: the chain, primary first.
        usage: where call records go (and today's spend is read).
        tenant: tenant id the budget applies to.
        policy: ``quality_first`` or ``cost_first``.
        daily_budget_cents: paid spend allowed per UTC day, in cents; 0 = unlimited.
        prices: ``{model: (in, out)}`` cents per million tokens.
        retries: attempts per backend on retryable errors.
        backoff: first retry wait in seconds (doubles up to ``max_backoff``).
        breaker_fail_max, breaker_reset: circuit breaker failures and open time (seconds).
        preference: returns the tenant's ``/model`` choice (``backend``, ``backend:model`` or
            ``model``) or None.
        sleep: the retry sleep (injectable for tests).
    """

    name = "router"

    def __init__(self, backends: list[LLMBackend], usage: UsageLedger, tenant: str, *,
                 policy: str = "quality_first", daily_budget_cents: float = 0.0,
                 prices: dict[str, tuple[float, float]] | None = None, retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 8.0, breaker_fail_max: int = 5,
                 breaker_reset: float = 60.0, preference: Callable[[], str | None] = lambda: None,
                 sleep: Callable[[float], None] = time.sleep):
        if not backends:
            raise ValueError("the router needs at least one backend")
        self.backends = list(backends)
        self.usage = usage
        self.tenant = tenant
        self.policy = policy
        self.daily_budget_cents = daily_budget_cents
        self.prices = prices
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.preference = preference
        self.sleep = sleep
        self.breakers = {id(b): pybreaker.CircuitBreaker(fail_max=breaker_fail_max,
                                                         reset_timeout=breaker_reset,
                                                         exclude=[_not_counted],
                                                         name=b.name) for b in self.backends}
        self._local = threading.local()
        self.model = self.backends[0].model

    @property
    def supports_tools(self) -> bool:  # type: ignore[override]
        """True when any backend can call tools (the router strips tools for those that cannot)."""
        return any(b.supports_tools for b in self.backends)

    @property
    def supports_images(self) -> bool:  # type: ignore[override]
        """True when any backend can see images (image turns are routed to it)."""
        return any(b.supports_images for b in self.backends)

    @property
    def context_window(self) -> int:  # type: ignore[override]
        """The window of the backend tried first; a smaller failover target (the local model)
        trims the context to its own window."""
        return self.ordered()[0][0].context_window

    def is_paid(self, backend: LLMBackend, model: str | None = None) -> bool:
        """Return True when calls to ``backend`` (with ``model``) cost money."""
        return is_paid(model or backend.model, self.prices)

    def budget_left_cents(self) -> float | None:
        """Return the cents left today, or None when there is no budget limit."""
        if not self.daily_budget_cents:
            return None
        return self.daily_budget_cents - self.usage.spent_today(self.tenant)

    def ordered(self) -> list[tuple[LLMBackend, str | None]]:
        """Return ``[(backend, model_override)]`` in the order they will be tried."""
        return self.ordered_for(self.preference())

    def ordered_for(self, choice: str | None) -> list[tuple[LLMBackend, str | None]]:
        """Return the order ``ordered`` would give if the model choice were ``choice``."""
        chain = list(self.backends)
        if self.policy == "cost_first":
            chain.sort(key=lambda b: cost_cents(b.model, 1_000_000, 1_000_000, self.prices))
        order: list[tuple[LLMBackend, str | None]] = [(b, None) for b in chain]
        if choice:
            name, _, model = choice.partition(":")
            target = next((b for b in chain if b.name == name), None)
            if target is None:  # a bare model id: the first backend that is not local
                target, model = next((b for b in chain if b.name != "local"), chain[0]), choice
            order = [(target, model or None)] + [(b, None) for b in chain if b is not target]
        return order

    @contextlib.contextmanager
    def collect(self):
        """Collect this thread's ``CallRecord``s while the block runs; yields the list.

        Blocks nest: an enclosing block also gets the records of the inner one (a goal step
        counts the calls of the turn it runs).
        """
        calls: list[CallRecord] = []
        previous = getattr(self._local, "calls", None)
        self._local.calls = calls
        try:
            yield calls
        finally:
            self._local.calls = previous
            if previous is not None:
                previous.extend(calls)

    @contextlib.contextmanager
    def attributed(self, *, goal_id: int | None = None, job_id: str | None = None):
        """Mark this thread's calls while the block runs as working for a goal or a job, so
        ``/usage`` and the dashboard show spend by goal and by job (issue 23).

        Args:
            goal_id: the goal's number (``agent.goals``), or None.
            job_id: the job's id (Jobs API), or None.
        """
        previous = getattr(self._local, "attribution", (None, None))
        self._local.attribution = (goal_id, job_id)
        try:
            yield
        finally:
            self._local.attribution = previous

    def complete(self, prompt: str, *, purpose: str = "extract", max_tokens: int = 512) -> str:
        """One tool-less call on ``prompt``; returns the text (``Callable[[str], str]`` for helpers).

        Raises:
            LLMError: every backend failed (``BudgetExhausted`` when the budget blocked them).
        """
        self._local.purpose = purpose
        try:
            return complete_text(self, prompt, max_tokens=max_tokens)
        finally:
            self._local.purpose = "turn"

    def stream(self, request: LLMRequest):
        """See ``LLMBackend.stream``; may also yield one ``Notice`` before the reply."""
        refused_paid = False
        last_error: LLMError | None = None
        images = has_images(request.messages)
        choice = self.preference()
        order = self.ordered_for(choice)
        chain_first = order[0][0]
        if images:  # stable: the backends that can see first, each group in chain order
            order.sort(key=lambda pair: not pair[0].supports_images)
        reason = (route_reasons.VISION if order[0][0] is not chain_first
                  else route_reasons.USER_CHOICE if choice
                  else route_reasons.COST_FIRST if self.policy == "cost_first" else route_reasons.PRIMARY)
        for backend, model in order:
            if self.is_paid(backend, model) and self._over_budget():
                refused_paid = True
                reason = route_reasons.BUDGET
                continue
            blind = images and not backend.supports_images
            call_request = replace(request, model=model or request.model,
                                   tools=request.tools if backend.supports_tools else [],
                                   messages=without_images(request.messages) if blind
                                   else request.messages, route_reason=reason)
            started = time.monotonic()
            try:
                first, events = self._open(backend, call_request)
            except pybreaker.CircuitBreakerError:
                log.warning("circuit open for backend %s; skipping", backend.name)
                reason = route_reasons.FALLBACK_CIRCUIT
                continue
            except LLMError as exc:
                log.warning("backend %s failed: %s", backend.name, exc)
                metrics.error("llm_backend")
                last_error = exc
                reason = route_reasons.FALLBACK_ERROR
                continue
            if refused_paid:
                yield Notice(self._budget_notice(backend))
            if blind and has_images(request.messages[-1:]):
                yield Notice(cannot_see_notice(model or request.model or backend.model))
            completion = yield from self._drain(first, events)
            return self._account(backend, completion, started)
        if refused_paid and last_error is None:
            raise BudgetExhausted(self._budget_message())
        raise last_error or LLMError("no LLM backend is available right now", retryable=True)

    def _open(self, backend: LLMBackend, request: LLMRequest):
        breaker = self.breakers[id(backend)]

        def attempt():
            events = breaker.call(self._events, backend, request)
            return next(events), events

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=tenacity.retry_if_exception(_retryable), reraise=True, sleep=self.sleep,
            before_sleep=lambda state: log.info("retrying %s after: %s", backend.name,
                                                state.outcome and state.outcome.exception()))
        return retrying(attempt)

    @staticmethod
    def _events(backend: LLMBackend, request: LLMRequest):
        # The breaker wraps generators but drops their return value: yield the Completion last.
        completion = yield from backend.stream(request)
        yield completion

    @staticmethod
    def _drain(first, events):
        item = first
        while True:
            if isinstance(item, Completion) or item is None:
                events.close()
                return item
            yield item
            item = next(events)

    def _account(self, backend: LLMBackend, completion: Completion, started: float) -> Completion:
        cost = cost_cents(completion.model, completion.input_tokens, completion.output_tokens, self.prices)
        latency = int((time.monotonic() - started) * 1000)
        goal_id, job_id = getattr(self._local, "attribution", (None, None))
        record = self.usage.record(CallRecord(
            tenant=self.tenant, backend=backend.name, model=completion.model,
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
            cost_cents=cost, latency_ms=latency, purpose=getattr(self._local, "purpose", "turn"),
            goal_id=goal_id, job_id=job_id))
        metrics.llm_call(completion.model, completion.input_tokens, completion.output_tokens, cost)
        calls = getattr(self._local, "calls", None)
        if calls is not None:
            calls.append(record)
        return replace(completion, backend=backend.name, cost_cents=cost, latency_ms=latency)

    def _over_budget(self) -> bool:
        left = self.budget_left_cents()
        return left is not None and left <= 0

    def _budget_message(self) -> str:
        return (f"Your daily AI budget (${self.daily_budget_cents / 100:.2f}) is used up, so I can't "
                "call the paid model again today. It resets at 00:00 UTC; commands like /memory, "
                "/cron and /usage still work.")

    def _budget_notice(self, backend: LLMBackend) -> str:
        return (f"(Today's AI budget of ${self.daily_budget_cents / 100:.2f} is used up, so the free "
                f"{backend.name} model is answering until 00:00 UTC.)\n\n")
