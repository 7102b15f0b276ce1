"""End to end on Discord: `hermes serve` + `hermes discord gateway` as subprocesses, a real agent.

Only the internet's edge is replaced: Discord's REST API and Gateway by local stand-ins speaking
their wire formats (interactions signed with Ed25519 as Discord signs them), Telegram's and
Anthropic's APIs by theirs.  One user links with ``/link``, asks with ``/ask`` and sees the
streamed answer edit the deferred response; then talks in direct messages through the Gateway
while the connection drops mid-conversation and the client resumes, losing no message.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.serve import ROOT, ServeProcess, wait_until

from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, echo_responder, last_user_text, text_reply
from standins.discord_api import (
    DiscordApiStandin,
    DiscordGatewayStandin,
    InteractionSigner,
    command_interaction,
)
from standins.telegram_bot_api import TelegramBotApiStandin

USER, DM_CHANNEL = "53908232506183680", "319674150115610528"
STREAMED = "A streamed answer that arrives in many small pieces, edited in place."


def responder(request: dict):
    """Echo, except the /ask question, answered slowly in small chunks (to be seen streaming)."""
    if last_user_text(request) == "tell me slowly":
        return text_reply(STREAMED, chunk=8, chunk_delay=0.15)
    return echo_responder(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    signer = InteractionSigner()
    with TelegramBotApiStandin() as telegram, AnthropicStandin(responder=responder) as anthropic, \
            DiscordApiStandin() as api, DiscordGatewayStandin(heartbeat_interval=500) as gateway:
        env = {"DISCORD_PUBLIC_KEY": signer.public_key_hex, "DISCORD_BOT_TOKEN": api.bot_token,
               "DISCORD_APPLICATION_ID": api.application_id, "DISCORD_API_BASE": api.base_url,
               "DISCORD_GATEWAY_URL": gateway.url}
        tmp = tmp_path_factory.mktemp("discord")
        serve = ServeProcess(tmp, telegram, anthropic, extra_env=env)
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 (closed below)
        gateway_process = subprocess.Popen([sys.executable, "-m", "cli.main", "discord", "gateway"],
                                           env=serve.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        yield serve, api, gateway, signer
        gateway_process.terminate()
        gateway_process.wait(30)
        log.close()
        serve.stop()


def interact(serve, signer, payload: dict):
    import json

    body = json.dumps(payload).encode()
    return serve.http.post("/webhooks/discord", content=body, headers=signer.headers(body))


def test_link_ask_and_direct_messages_across_a_gateway_drop(stack):
    serve, api, gateway, signer = stack
    customer = "cus_discord"
    for event in (se.subscription_created(customer=customer, subscription="sub_d", plan="light",
                                          event_id="evt_s_d"),
                  se.checkout_completed(email="dee@example.com", customer=customer,
                                        subscription="sub_d", event_id="evt_c_d")):
        assert serve.stripe(event).status_code == 200
    printed = wait_until(lambda: (r := serve.cli("tenants", "link-token", "dee@example.com")).returncode == 0
                         and r.stdout, 180, "the machine to become ready")
    token = printed.split("token:")[1].split()[0]

    linked = interact(serve, signer, command_interaction("link", USER, {"code": token})).json()
    assert linked["type"] == 4 and linked["data"]["content"].startswith("Linked!")

    ask = api.expect_interaction(command_interaction("ask", USER, {"question": "tell me slowly"}))
    deferred = interact(serve, signer, ask).json()
    assert deferred == {"type": 5}
    api.respond(ask, deferred)
    wait_until(lambda: (m := api.original(ask["id"])) and m.content == STREAMED, 60,
               "the streamed answer in the original response")
    history = api.original(ask["id"]).history
    assert history[0] == "" and len(history) >= 3, history  # placeholder, partial texts, final
    assert all(STREAMED.startswith(text) for text in history)

    wait_until(lambda: gateway.connected and gateway.identifies == 1, 60, "the gateway session")
    gateway.dm(USER, DM_CHANNEL, "first direct message")
    wait_until(lambda: _texts(api) >= {"echo: first direct message"}, 60, "the first DM answer")
    gateway.drop(hold=True)
    gateway.dm(USER, DM_CHANNEL, "sent while the connection was down")
    gateway.release()
    wait_until(lambda: gateway.resumes >= 1 and gateway.connected, 60, "the client to resume")
    gateway.dm(USER, DM_CHANNEL, "after the resume")
    wait_until(lambda: len(_texts(api)) == 3, 60, "every DM answered")
    assert [m.content for m in api.channel_messages(DM_CHANNEL)] == [
        "echo: first direct message", "echo: sent while the connection was down",
        "echo: after the resume"]
    assert gateway.identifies == 1  # resumed, never a new session


def _texts(api) -> set[str]:
    return {m.content for m in api.channel_messages(DM_CHANNEL)}
