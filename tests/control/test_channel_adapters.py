"""Channel adapters against their stand-ins: Telegram parity, Discord sends, edits and rate
limits; Discord long replies continued in a thread, and lost sends found after a crash."""

from __future__ import annotations

import time
from unittest.mock import ANY

import pytest
from support.delivery import delivered, publish, run_until

from control.channels.base import ChannelError
from control.channels.discord import DiscordAdapter, DiscordRestClient, InteractionTarget
from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import database
from control.models import Delivery, Message
from control.services.delivery import DeliveryWorker
from standins.discord_api import DiscordApiStandin, command_interaction
from standins.telegram_bot_api import TelegramBotApiStandin

DM = "319674150115610528"
USER = "53908232506183680"


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as standin:
        yield standin


@pytest.fixture
def discord_api():
    with DiscordApiStandin() as standin:
        yield standin


def discord_adapter(api, targets=None) -> DiscordAdapter:
    def unknown(interaction_id):
        raise ChannelError("unknown interaction", status=401, permanent=True)

    return DiscordAdapter(DiscordRestClient(api.bot_token, api.base_url), targets or unknown)


def test_telegram_adapter_sends_edits_and_classifies_errors_like_the_bot_api(telegram):
    adapter = TelegramAdapter(BotApiClient(telegram.token, telegram.base_url))
    message_id = adapter.send("42", "first")
    adapter.edit("42", message_id, "second")
    adapter.edit("42", message_id, "second")  # unchanged text: not an error
    adapter.typing("42")
    [shown] = telegram.chat_messages("42")
    assert (str(shown.message_id), shown.text) == (message_id, "second")
    assert [c.method for c in telegram.calls].count("sendChatAction") == 1

    with pytest.raises(ChannelError) as gone:
        adapter.edit("42", "999", "x")
    assert gone.value.message_gone and not gone.value.permanent and gone.value.answered
    telegram.rate_limit_next(3)
    with pytest.raises(ChannelError) as limited:
        adapter.send("42", "third")
    assert limited.value.rate_limited and limited.value.retry_after == 3
    assert adapter.split("a" * 5000) == ["a" * 4096, "a" * 904]


def test_telegram_transport_failure_is_transient_and_unanswered():
    adapter = TelegramAdapter(BotApiClient("1:X", "http://127.0.0.1:9", timeout=0.5))
    with pytest.raises(ChannelError) as failed:
        adapter.send("42", "hello")
    assert failed.value.transient and not failed.value.answered


def test_discord_dm_send_is_deduplicated_by_its_nonce(discord_api):
    adapter = discord_adapter(discord_api)
    first = adapter.send(DM, "Hello there", reply_to="77")
    again = adapter.send(DM, "Hello there", reply_to="77")  # a retry whose answer was lost
    other = adapter.send(DM, "Hello there", reply_to="78")  # another user message: a new reply
    assert first == again != other
    adapter.edit(DM, first, "Hello again")
    adapter.typing(DM)
    adapter.typing("interaction:1")  # the deferred response shows progress: no call
    assert discord_api.typing == [DM]
    assert [m.content for m in discord_api.channel_messages(DM)] == ["Hello again", "Hello there"]
    with pytest.raises(ChannelError) as gone:
        adapter.edit(DM, "123", "x")
    assert gone.value.message_gone


def test_discord_429_carries_retry_after_from_the_json_body(discord_api):
    adapter = discord_adapter(discord_api)
    discord_api.rate_limit_next(0.75)
    with pytest.raises(ChannelError) as limited:
        adapter.send(DM, "hi")
    assert limited.value.rate_limited and limited.value.retry_after == 0.75
    calls = len(discord_api.requests)
    with pytest.raises(ChannelError) as again:  # within the window: refused without a call
        adapter.send(DM, "hi")
    assert again.value.rate_limited and len(discord_api.requests) == calls
    assert discord_api.channel_messages(DM) == []
    time.sleep(again.value.retry_after)
    assert adapter.send(DM, "hi")


def test_discord_spent_bucket_waits_for_its_reset_without_calling(discord_api):
    adapter = discord_adapter(discord_api)
    discord_api.spend_bucket(0.4)
    adapter.send(DM, "one")
    calls = len(discord_api.requests)
    with pytest.raises(ChannelError) as limited:
        adapter.send(DM, "two")
    assert limited.value.rate_limited and 0 < limited.value.retry_after <= 0.4
    assert len(discord_api.requests) == calls  # refused locally: no 429 earned
    time.sleep(limited.value.retry_after)  # the reset the platform announced
    adapter.send(DM, "two")
    assert [m.content for m in discord_api.channel_messages(DM)] == ["one", "two"]


def test_discord_interaction_reply_edits_the_original_and_follows_up_ephemerally(discord_api):
    interaction = discord_api.expect_interaction(command_interaction("memory", "5"))
    discord_api.respond(interaction, {"type": 5, "data": {"flags": 64}})
    target = InteractionTarget(discord_api.application_id, interaction["token"], ephemeral=True)
    adapter = discord_adapter(discord_api, lambda interaction_id: target)
    chat = f"interaction:{interaction['id']}"
    assert adapter.existing_message(chat) == "@original"
    adapter.edit(chat, "@original", "part one")
    follow_up = adapter.send(chat, "part two")
    original, second = discord_api.interaction_messages(interaction["id"])
    assert (original.content, original.flags) == ("part one", 64)
    assert (second.id, second.content, second.flags) == (follow_up, "part two", 64)
    assert adapter.split("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]


def test_discord_expired_interaction_token_is_a_permanent_failure(discord_api):
    adapter = discord_adapter(discord_api, lambda interaction_id: InteractionTarget(
        discord_api.application_id, "expired-token"))
    with pytest.raises(ChannelError) as refused:
        adapter.edit("interaction:1", "@original", "late")
    assert refused.value.permanent and refused.value.status == 401


def test_delivery_worker_waits_out_a_discord_429_and_delivers_a_long_dm_once(runtime, tenant,
                                                                              discord_api, telegram):
    from control.db import database
    from control.models import Delivery, DeliveryState, Message
    from control.services.delivery import DeliveryWorker
    from wire.protocol import Event, events_stream

    with database.connection_context():  # the user's DM, as routing records it
        Message.create(tenant=tenant, envelope_id="env-discord-long", direction="in",
                       channel="discord", chat_id=DM, text="tell me a long story")
    adapter = discord_adapter(discord_api)
    worker = DeliveryWorker(runtime.bus, {"discord": adapter}, lambda: [tenant.id], edit_interval=0.0)
    text = "\n".join(f"line {i:04d} " + "x" * 90 for i in range(30))  # about 3000 characters
    runtime.bus.append(events_stream(str(tenant.id)), Event(
        "env-discord-long", 0, "final", text, str(tenant.id), "discord", DM).to_json())
    discord_api.rate_limit_next(0.5)
    started = time.monotonic()
    with database.connection_context():
        while (row := Delivery.get_or_none(Delivery.envelope_id == "env-discord-long")) is None \
                or row.state != DeliveryState.DELIVERED:
            assert time.monotonic() - started < 10, "the reply was not delivered"
            worker.step(block=0.05)
    assert time.monotonic() - started >= 0.5  # Discord's retry_after was honoured
    shown = [m.content for m in discord_api.channel_messages(DM)]
    assert len(shown) == 2 and all(len(part) <= 2000 for part in shown)
    assert "\n".join(shown) == text
    assert row.channel == "discord" and row.platform_message_id == discord_api.channel_messages(DM)[0].id
    assert telegram.calls == []


# Long replies and crash recovery through the delivery worker.

def _worker(runtime, tenant, adapter, telegram):
    return DeliveryWorker(runtime.bus, {"discord": adapter}, lambda: [tenant.id], edit_interval=0.0)


def _asked(tenant, envelope_id: str, chat_id: str, platform_id: str) -> None:
    """The user's message (or slash command) in the conversation log, as routing records it."""
    with database.connection_context():
        Message.create(tenant=tenant, envelope_id=envelope_id, direction="in", channel="discord",
                       chat_id=chat_id, text="a question", platform_message_id=platform_id)


def _ledger(envelope_id: str):
    with database.connection_context():
        return Delivery.get(Delivery.envelope_id == envelope_id)


def _deferred_command(api, guild_id: str | None = "290926798626357999") -> tuple[dict, str]:
    """A slash command Discord sent, answered with a deferred response; returns the
    interaction and its chat id."""
    interaction = api.expect_interaction(command_interaction(
        "ask", USER, {"question": "tell me a long story"}, guild_id=guild_id))
    api.respond(interaction, {"type": 5})
    return interaction, f"interaction:{interaction['id']}"


def _command_adapter(api, interaction: dict) -> DiscordAdapter:
    """A fresh adapter (a new worker process) that knows ``interaction``'s token."""
    target = InteractionTarget(api.application_id, interaction["token"])
    return discord_adapter(api, lambda _: target)


STORY = "Once upon a time\n" + "\n".join(f"line {i:04d} " + "x" * 90 for i in range(45))


def test_long_reply_to_a_command_in_a_guild_channel_continues_in_a_thread(
        runtime, tenant, discord_api, telegram):
    interaction, chat = _deferred_command(discord_api)
    adapter = _command_adapter(discord_api, interaction)
    _asked(tenant, "env-thread", chat, interaction["id"])
    publish(runtime.bus, tenant, "env-thread", 0, "final", STORY, channel="discord", chat_id=chat)
    run_until(_worker(runtime, tenant, adapter, telegram), delivered("env-thread"))
    [original] = discord_api.interaction_messages(interaction["id"])  # no follow-up
    thread = discord_api.threads[original.id]
    assert (original.channel_id, thread["parent_id"]) == (interaction["channel_id"],) * 2
    assert thread["name"] == "Once upon a time"
    continued = discord_api.channel_messages(original.id)
    assert len(continued) == 2 and all(len(m.content) <= 2000 for m in continued)
    assert "\n".join([original.content, *(m.content for m in continued)]) == STORY
    assert _ledger("env-thread").chunk_message_ids == ",".join(
        f"{original.id}:{m.id}" for m in continued)


def test_long_reply_to_a_command_in_a_dm_continues_in_follow_ups(
        runtime, tenant, discord_api, telegram):
    """Discord has no threads in DMs: the reply goes on below the original response."""
    interaction, chat = _deferred_command(discord_api, guild_id=None)
    adapter = _command_adapter(discord_api, interaction)
    _asked(tenant, "env-dm-command", chat, interaction["id"])
    publish(runtime.bus, tenant, "env-dm-command", 0, "final", STORY, channel="discord",
            chat_id=chat)
    run_until(_worker(runtime, tenant, adapter, telegram), delivered("env-dm-command"))
    shown = [m.content for m in discord_api.interaction_messages(interaction["id"])]
    assert len(shown) == 3 and "\n".join(shown) == STORY
    assert discord_api.threads == {}


def test_dm_message_whose_answer_was_lost_is_found_after_the_nonce_window(runtime, tenant,
                                                                           telegram):
    """Past Discord's nonce window a repeated send makes a second message: the worker reads
    the DM first and adopts the message the crashed worker's send created."""
    with DiscordApiStandin(nonce_window=0) as api:
        adapter = discord_adapter(api)
        asked = api.user_message(DM, USER, "what is the capital of France?")
        _asked(tenant, "env-lost", DM, asked.id)
        lost = adapter.send(DM, "Paris.", reply_to=asked.id)  # the crashed worker's send
        with database.connection_context():
            Delivery.create(envelope_id="env-lost", tenant=tenant, channel="discord", chat_id=DM,
                            reply_to=asked.id, pending_text="Paris.", pending_after=asked.id)
        api.user_message(DM, USER, "hello?")  # the user wrote again before the restart
        publish(runtime.bus, tenant, "env-lost", 0, "final", "Paris.", channel="discord",
                chat_id=DM)
        run_until(_worker(runtime, tenant, adapter, telegram), delivered("env-lost"))
        assert [m.content for m in api.channel_messages(DM)] == ["Paris."]
        assert _ledger("env-lost").platform_message_id == lost
        assert [r for r in api.requests if r[0] == "POST" and r[1] == f"/channels/{DM}/messages"] \
            == [("POST", f"/channels/{DM}/messages", {"content": "Paris.", "nonce": ANY,
                                                      "enforce_nonce": True})]


def test_continuation_lost_in_the_thread_is_found_instead_of_posted_twice(runtime, tenant,
                                                                          telegram):
    with DiscordApiStandin(nonce_window=0) as api:
        interaction, chat = _deferred_command(api)
        _asked(tenant, "env-thread-lost", chat, interaction["id"])
        crashed = _command_adapter(api, interaction)
        first, second, third = crashed.split(STORY)
        crashed.edit(chat, "@original", first)  # what the crashed worker had done
        lost = crashed.send(chat, second, reply_to=interaction["id"])
        with database.connection_context():
            Delivery.create(envelope_id="env-thread-lost", tenant=tenant, channel="discord",
                            chat_id=chat, reply_to=interaction["id"], platform_message_id="@original",
                            last_text=first, pending_text=second, pending_after=interaction["id"])
        publish(runtime.bus, tenant, "env-thread-lost", 0, "final", STORY, channel="discord",
                chat_id=chat)
        restarted = _command_adapter(api, interaction)
        run_until(_worker(runtime, tenant, restarted, telegram), delivered("env-thread-lost"))
        [original] = api.interaction_messages(interaction["id"])
        assert [m.content for m in api.channel_messages(original.id)] == [second, third]
        assert lost.startswith(f"{original.id}:")
        assert _ledger("env-thread-lost").chunk_message_ids.split(",")[0] == lost
