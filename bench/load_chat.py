"""Load scenario 1 (seed 000 §5.3, issue 22): concurrent users chatting, end to end.

Run through ``bench/load.py --scenario 1``; it imports locust (gevent's monkey patching)
before this module, so the stand-ins' threads here are greenlets.

What runs: ``hermes serve`` (``bench_support.Stack``: control plane, delivery worker, local
agents) on a private Redis bus, the Telegram Bot API stand-in and the Anthropic stand-in
answering every request after ``llm_latency`` seconds (the time to first token; the whole
reply is one text delta, so first token = complete text).  ``users`` Telegram users, each the
one person of their own tenant, send a message through ``POST /webhooks/telegram``, wait until
the complete reply shows in their chat on the stand-in, think 1-3 s and repeat, for
``seconds``; locust (``LocalRunner``, headless) spawns them all at once.

The agents: on a VM each tenant's agent has the machine to itself, but here one agent process
takes ~0.9 GB and ~20 s to start, so ``real_agents`` tenants (default 1) get a real
``agent.main run`` process, and every other tenant's agent is ``AgentStandin``: it consumes the
tenant's envelopes on the bus, makes the streaming Messages API call the agent makes (the
``anthropic`` SDK, to the same stand-in) and publishes the reply's ``delta`` and ``final``
events, as the agent does.  So the shared path (webhook, bus, delivery worker, Bot API) carries
all ``users``; the real agents' replies are reported apart (``real_agent_p99_ms``).

End to end: from the webhook POST to the stand-in applying the ``sendMessage`` or
``editMessageText`` showing the complete reply (``bench_support.ReplyClock``).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import anthropic
import gevent
from locust import User, between, events, task
from locust.env import Environment

# isort: split
from bench_support import PrivateRedis, Stack, percentile, wait_until

from standins.anthropic_api import last_user_text, text_reply

REPLY_TIMEOUT = 30.0  # seconds a user waits for a reply before counting it lost
FIRST_CHAT = 700_000
HEARTBEAT_INTERVAL = 10.0  # seconds; the control plane's default expects one every 30 s


def fixed_latency(seconds: float, asked_at: dict[str, float]):
    """An Anthropic stand-in responder answering ``echo: <question>`` in one text delta after
    ``seconds`` (the model's time to first token); records in ``asked_at`` when each question
    first reached it (monotonic s)."""
    def respond(request: dict):
        question = last_user_text(request)
        asked_at.setdefault(question, time.monotonic())
        return text_reply(f"echo: {question}", chunk=4096, delay=seconds)
    return respond


class AgentStandin(threading.Thread):
    """The agents of ``tenants``: one reader of their messages streams (consumer group
    ``agent``), one thread per envelope making the agent's streaming LLM call and publishing
    the reply as ``delta`` then ``final`` events on the tenant's events stream, and a lifecycle
    ``heartbeat`` per tenant every ``HEARTBEAT_INTERVAL`` seconds."""

    def __init__(self, bus_url: str, tenants: list[str], llm_url: str):
        super().__init__(daemon=True)
        from wire.factory import bus_from_url

        self.bus = bus_from_url(bus_url)
        self.tenants = tenants
        self.llm = anthropic.Anthropic(api_key="sk-ant-bench", base_url=llm_url)  # SDK retries
        self.stopping = threading.Event()

    def run(self) -> None:
        from wire.protocol import AGENT_GROUP, Event, events_stream, messages_stream

        streams = [messages_stream(t) for t in self.tenants]
        beat_at = 0.0
        while not self.stopping.is_set():
            if time.monotonic() >= beat_at:  # as each agent's Heartbeat does: machines stay healthy
                for tenant in self.tenants:
                    self.bus.append(events_stream(tenant), Event.lifecycle_event(tenant, "heartbeat").to_json())
                beat_at = time.monotonic() + HEARTBEAT_INTERVAL
            for delivery in self.bus.read(streams, AGENT_GROUP, "bench-agents", count=100, block=0.05):
                threading.Thread(target=self._answer, args=(delivery,), daemon=True).start()

    def _answer(self, delivery) -> None:
        from wire.protocol import AGENT_GROUP, Envelope, Event, events_stream

        envelope = Envelope.from_json(delivery.payload)
        seq, text = 0, ""

        def publish(kind: str, body: str) -> None:
            event = Event(message_id=envelope.id, seq=seq, kind=kind, text=body, tenant=envelope.tenant,
                          channel=envelope.channel, chat_id=envelope.chat_id)
            self.bus.append(events_stream(envelope.tenant), event.to_json(),
                            idempotency_key=f"{envelope.id}:{seq}")

        with self.llm.messages.stream(model="claude-sonnet-4-5", max_tokens=1024,
                                      messages=[{"role": "user", "content": envelope.text}]) as stream:
            for piece in stream.text_stream:
                text += piece
                publish("delta", text)
                seq += 1
        publish("final", text)
        self.bus.ack(delivery.stream, AGENT_GROUP, delivery.entry_id)


def _standin_tenant(stack: Stack, chat: int) -> int:
    """An active tenant with a ready machine (so the delivery worker reads its events stream)
    and ``chat`` linked; its agent is ``AgentStandin``.  Returns the tenant id."""
    from control.models import Machine, MachineState, utcnow

    tenant = stack.tenant_without_agent(f"load{chat}@example.com")
    with stack.db().connection_context():
        Machine.create(tenant=tenant, plan="light", state=MachineState.READY, ready_at=utcnow())
    stack.link_chats(tenant, [chat])
    return tenant


class Results:
    """Reply latencies (ms) by kind of agent, webhook round trips and webhook-to-LLM times (ms),
    and the messages that got no reply."""

    def __init__(self):
        self.standin_ms: list[float] = []
        self.real_ms: list[float] = []
        self.webhook_ms: list[float] = []
        self.to_llm_ms: list[float] = []  # webhook POST -> the question reaches the LLM
        self.asked_at: dict[str, float] = {}  # question -> when it reached the LLM stand-in
        self.lost = 0


def run(users: int, seconds: float, llm_latency: float, real_agents: int) -> dict:
    """Run the scenario; return its result record (see ``load.py`` for the shared keys)."""
    redis = PrivateRedis()
    try:
        stack = Stack(bus="redis", redis_url=redis.admin_url)
    except BaseException:
        redis.close()
        raise
    results = Results()
    stack.anthropic.responder = fixed_latency(llm_latency, results.asked_at)
    agents = None
    try:
        chats = list(range(FIRST_CHAT, FIRST_CHAT + users))
        real = {}
        for n in range(real_agents):  # sign-up starts a real agent process (about 20 s each)
            real[chats[n]] = stack.signup(n + 1)
            stack.link_chats(real[chats[n]], [chats[n]])
        standin_tenants = [str(_standin_tenant(stack, chat)) for chat in chats[real_agents:]]
        agents = AgentStandin(redis.admin_url, standin_tenants, stack.anthropic.base_url)
        agents.start()
        started = time.monotonic()
        figures = _swarm(stack, chats, set(real), seconds, results)
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # a duplicate reply would show by now
    finally:
        if agents is not None:
            agents.stopping.set()
        stack.close()
        redis.close()
    every = results.standin_ms + results.real_ms
    p99 = percentile(every, 99)
    return {
        "scenario": 1, "target": "p99 end to end < 2000 ms (aim < 1.2 x LLM latency)",
        "value": round(p99, 1), "unit": "ms", "passed": bool(every) and p99 < 2000 and results.lost == 0,
        "users": users, "llm_latency_ms": round(llm_latency * 1000), "seconds": round(elapsed, 1),
        "replies": len(every), "lost": results.lost, "duplicates": stack.duplicates(),
        "p50_ms": round(percentile(every, 50), 1), "max_ms": round(max(every, default=0.0), 1),
        "aim_met": bool(every) and p99 < 1.2 * llm_latency * 1000,
        "webhook_p99_ms": round(percentile(results.webhook_ms, 99), 1),
        "to_llm_p50_ms": round(percentile(results.to_llm_ms, 50), 1),
        "to_llm_p99_ms": round(percentile(results.to_llm_ms, 99), 1),
        "real_agents": real_agents, "real_agent_replies": len(results.real_ms),
        "real_agent_p99_ms": round(percentile(results.real_ms, 99), 1),
        "webhook_errors": {str(k): v for k, v in stack.webhook_errors.items()}, **figures,
    }


def _swarm(stack: Stack, chats: list[int], real_chats: set[int], seconds: float,
           results: Results) -> dict:
    """Run ``len(chats)`` locust users, one per chat, for ``seconds``; fill ``results``."""
    free = list(chats)
    run_id = uuid.uuid4().hex[:6]

    class Chatter(User):
        wait_time = between(1, 3)

        def on_start(self) -> None:
            self.chat = free.pop()
            self.sent = 0

        @task
        def chat_once(self) -> None:
            self.sent += 1
            text = f"l{run_id}-{self.chat}-{self.sent}"
            sent_at, webhook_s, status = stack.send(self.chat, text)
            results.webhook_ms.append(webhook_s * 1000)
            shown = None
            if status == 200:
                with contextlib.suppress(TimeoutError):
                    # The stand-in stamps the reply itself: polling less often costs no accuracy.
                    shown = wait_until(lambda: stack.reply_at(text), REPLY_TIMEOUT, text, interval=0.05)
            if shown is None:
                results.lost += 1
                events.request.fire(request_type="chat", name="reply", response_time=0,
                                    response_length=0, exception=TimeoutError(text), context={})
                return
            ms = (shown - sent_at) * 1000
            if text in results.asked_at:
                results.to_llm_ms.append((results.asked_at[text] - sent_at) * 1000)
            (results.real_ms if self.chat in real_chats else results.standin_ms).append(ms)
            events.request.fire(request_type="chat", name="reply", response_time=ms,
                                response_length=len(text), exception=None, context={})

    environment = Environment(user_classes=[Chatter], events=events)
    runner = environment.create_local_runner()
    runner.start(len(chats), spawn_rate=len(chats))
    gevent.sleep(seconds)
    runner.stop()  # users in the middle of a message are killed; their message is not counted
    stats = environment.stats.total
    return {"locust_requests": stats.num_requests, "locust_failures": stats.num_failures}
