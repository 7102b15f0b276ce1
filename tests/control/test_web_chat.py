"""The dashboard's quick chat over the ``web`` channel, end to end in one process (issue #10).

Real parts: the control app (``create_app``, SQLite), its bus, the delivery worker, and a real
agent runtime (``agent.runtime.AgentRuntime`` + ``agent.turn.TurnRunner``) reading the
tenant's messages stream.  Only the internet's edge is a stand-in: Anthropic's Messages API
(streaming SSE) and Telegram's Bot API (which the web channel must never call).
"""

from __future__ import annotations

import itertools
import json
import re
import threading

import pytest
from support.dashboard import csrf_token, make_ready, sign_in

from agent.config import AgentConfig
from agent.runtime import AgentRuntime
from agent.turn import TurnRunner
from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.channels.web import WebAdapter
from control.db import database
from control.models import Delivery, Machine, Message, Tenant, Usage
from control.services import web_chat
from control.services.delivery import DeliveryWorker
from standins.anthropic_api import AnthropicStandin, last_user_text, text_reply
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.protocol import AGENT_GROUP, Envelope, messages_stream
from wire.sqlite_bus import SqliteBus

LONG_REPLY = "Here is a reply long enough to arrive in several pieces, one after another."


def slow_echo(request: dict):
    """Echo the user's text, then a long sentence, streamed 6 characters every 40 ms (~0.6 s)."""
    return text_reply(f"echo: {last_user_text(request)}. {LONG_REPLY}", chunk=6, chunk_delay=0.04)


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture(scope="module")
def embedder():
    from agent.memory import default_embedder

    return default_embedder()


@pytest.fixture
def anthropic():
    with AnthropicStandin(responder=slow_echo) as api:
        yield api


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as standin:
        yield standin


class Stack:
    """A signed-in user with a ready machine whose agent and the delivery worker run in threads."""

    def __init__(self, app, client, tenant, anthropic, telegram, embedder, tmp_path):
        self.app, self.client, self.tenant = app, client, tenant
        runtime = app.extensions["hermes"]
        # The control plane's agent settings name the chain this agent runs (the model menu).
        runtime.settings.agent_env.update({"HERMES_LLM": "anthropic",
                                           "ANTHROPIC_BASE_URL": anthropic.base_url})
        self.stopping = threading.Event()
        bus_path = runtime.settings.bus_url.removeprefix("sqlite:///")
        self.agent_bus = SqliteBus(bus_path, visibility_timeout=5, poll_interval=0.01)
        config = AgentConfig(tenant=str(tenant.id), data_dir=str(tmp_path / "agent"),
                             bus_url=runtime.settings.bus_url, llm="anthropic",
                             anthropic_api_key="test-key", anthropic_base_url=anthropic.base_url,
                             memory_extraction=False, delta_interval=0.0, llm_backoff=0.0)
        self.agent = AgentRuntime(config, bus=self.agent_bus, embedder=embedder, sleep=lambda s: None)
        self.turns = TurnRunner(self.agent)
        worker_bus = SqliteBus(bus_path, visibility_timeout=5, poll_interval=0.01)
        self.worker_bus = worker_bus
        client = BotApiClient(telegram.token, telegram.base_url)
        self.delivery = DeliveryWorker(worker_bus, {"telegram": TelegramAdapter(client), "web": WebAdapter()},
                                       lambda: [tenant.id], edit_interval=0.05)
        self.threads = [threading.Thread(target=self._agent_loop, daemon=True),
                        threading.Thread(target=self._delivery_loop, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _agent_loop(self):
        stream = messages_stream(str(self.tenant.id))
        while not self.stopping.is_set():
            for delivery in self.agent_bus.read([stream], AGENT_GROUP, "agent", count=10, block=0.1):
                self.turns.handle(Envelope.from_json(delivery.payload))
                self.agent_bus.ack(delivery.stream, AGENT_GROUP, delivery.entry_id)

    def _delivery_loop(self):
        with database.connection_context():
            self.delivery.run(self.stopping)

    def send(self, text: str, client=None):
        """POST a chat message with the chat page's CSRF token; return the response."""
        client = client or self.client
        token = csrf_token(client, "/dashboard/chat")
        return client.post("/dashboard/chat/messages", json={"text": text}, headers={"X-CSRFToken": token})

    def close(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)
        self.agent.close()
        self.worker_bus.close()


@pytest.fixture
def stack(app, client, anthropic, telegram, embedder, tmp_path):
    tenant = sign_in(client, "chat@example.com")
    make_ready(tenant)
    made = Stack(app, client, tenant, anthropic, telegram, embedder, tmp_path)
    yield made
    made.close()


def sse_events(body: str) -> list[tuple[str, dict]]:
    """Parse an SSE body into ``[(event name, data)]`` (comments and ``retry:`` skipped)."""
    events = []
    for block in body.split("\n\n"):
        name = re.search(r"^event: (\w+)$", block, re.MULTILINE)
        data = re.search(r"^data: (.*)$", block, re.MULTILINE)
        if name and data:
            events.append((name.group(1), json.loads(data.group(1))))
    return events


def test_chat_message_streams_the_agents_reply_and_is_stored(stack, anthropic, telegram):
    sent = stack.send("hello from the web")
    assert sent.status_code == 202, sent.text
    envelope_id = sent.json["envelope_id"]
    stream = stack.client.get(sent.json["stream_url"])
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    body = stream.get_data(as_text=True)
    assert body.startswith("retry: ")
    events = sse_events(body)
    expected = f"echo: hello from the web. {LONG_REPLY}"
    assert events[-1] == ("final", {"text": expected})
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) >= 2, events  # the reply arrived in pieces, not all at once
    assert all(expected.startswith(text) for text in deltas)
    assert all(len(a) < len(b) for a, b in itertools.pairwise(deltas))
    with database.connection_context():
        ledger = Delivery.get(Delivery.envelope_id == envelope_id)
        assert (ledger.state, ledger.last_text) == ("delivered", expected)
        assert ledger.platform_message_id.startswith("web-")
        rows = {m.direction: m for m in Message.select().where(Message.envelope_id == envelope_id)}
        assert rows["in"].text == "hello from the web" and rows["in"].channel == "web"
        assert rows["out"].text == expected and rows["out"].chat_id == f"web-{stack.tenant.id}"
        assert Usage.select().where(Usage.envelope_id == envelope_id).count() == 1
    assert telegram.calls == []  # the web channel has no platform API
    # The page shows the conversation afterwards.
    page = stack.client.get("/dashboard/chat").text
    assert '<p class="bubble user">hello from the web</p>' in page
    assert f'<p class="bubble agent">{expected}</p>' in page
    # A stream opened again after delivery answers the final at once.
    again = sse_events(stack.client.get(sent.json["stream_url"]).get_data(as_text=True))
    assert again == [("final", {"text": expected})]


def test_another_users_stream_is_not_found(stack, app):
    sent = stack.send("private words")
    assert sent.status_code == 202
    stranger = app.test_client()
    sign_in(stranger, "stranger@example.com")
    assert stranger.get(sent.json["stream_url"]).status_code == 404
    assert stranger.get("/dashboard/chat/stream/00000000000000000000000000000000").status_code == 404
    assert "private words" not in stranger.get("/dashboard/chat").text


def test_bad_messages_are_refused_and_nothing_is_published(stack, app):
    token = csrf_token(stack.client, "/dashboard/chat")
    too_long = stack.client.post("/dashboard/chat/messages", json={"text": "x" * 4001},
                                 headers={"X-CSRFToken": token})
    assert too_long.status_code == 400 and too_long.json["error"] == "message_too_long"
    assert stack.client.post("/dashboard/chat/messages", json={"text": "   "},
                             headers={"X-CSRFToken": token}).status_code == 400
    assert stack.client.post("/dashboard/chat/messages", json={"text": "hi"}).status_code == 400  # no CSRF
    with database.connection_context():
        Machine.update(state="booting").where(Machine.tenant == stack.tenant).execute()
    not_ready = stack.send("hi")
    assert not_ready.status_code == 409 and not_ready.json["error"] == "not_ready"
    with database.connection_context():
        Machine.update(state="ready").where(Machine.tenant == stack.tenant).execute()
        Tenant.update(status="canceled", paused_at=Tenant.created_at).where(
            Tenant.id == stack.tenant.id).execute()
    paused = stack.send("hi")
    assert paused.status_code == 409 and paused.json["error"] == "paused"
    with database.connection_context():
        assert Message.select().where(Message.channel == "web").count() == 0
    bus = app.extensions["hermes"].bus
    assert bus.read([messages_stream(str(stack.tenant.id))], "test-probe", "probe", count=10) == []


def test_chosen_time_zone_language_and_model_reach_the_agent(stack, anthropic):
    saved = stack.client.post("/dashboard/settings", data={
        "csrf_token": csrf_token(stack.client, "/dashboard/settings"), "model": "claude-haiku-4-5",
        "timezone": "Pacific/Auckland", "language": "de", "preferences": "I water plants daily."})
    assert saved.status_code == 302
    # A /cron job added from the web chat without tz= takes the dashboard's zone.
    sent = stack.send('/cron add "0 8 * * *" remind me to water the plants')
    reply = sse_events(stack.client.get(sent.json["stream_url"]).get_data(as_text=True))[-1]
    assert reply[0] == "final" and "Pacific/Auckland" in reply[1]["text"], reply
    [job] = stack.agent.cron.list()
    assert job.tz == "Pacific/Auckland"
    # A conversational turn: the system prompt carries the settings; the chosen model is used.
    sent = stack.send("what do you know about me?")
    final = sse_events(stack.client.get(sent.json["stream_url"]).get_data(as_text=True))[-1]
    assert final[0] == "final"
    request = anthropic.requests[-1]["json"]
    system = request["system"] if isinstance(request["system"], str) else \
        "".join(block["text"] for block in request["system"])
    assert "Time zone: Pacific/Auckland" in system
    assert "'de'" in system and "I water plants daily." in system
    assert request["model"] == "claude-haiku-4-5"


def test_stream_times_out_with_an_error_and_heartbeats_meanwhile():
    clock = {"now": 0.0}

    def sleep(seconds):
        clock["now"] += seconds

    body = "".join(web_chat.reply_events(lambda: None, poll=1.0, heartbeat=15.0, timeout=40.0,
                                         clock=lambda: clock["now"], sleep=sleep))
    assert body.count(": heartbeat\n\n") == 2  # at 15 s and 30 s of silence
    assert sse_events(body) == [("error", {"message": web_chat.TIMEOUT_TEXT})]
