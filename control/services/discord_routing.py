"""Discord inbound: a verified interaction → its HTTP response; a Gateway DM → an answer or an envelope.

Interaction responses (https://discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction):
PING gets PONG (type 1).  A slash command for the agent gets a deferred response (type 5: the
user sees "Hermes is thinking..."), returned in the webhook's own HTTP answer well inside the
3-second limit; the delivery worker then edits that original response with the streamed reply.
Its token is stored first (encrypted, ``discord_interactions``), so the reply can always be
delivered.  ``/link``, ``/help`` and an unlinked user are answered at once (type 4),
ephemeral (flag 64: a link code is nobody else's business); ``/usage`` and ``/memory`` defer
ephemerally, so the agent's answer is private too.

Ack first: with a queue (``respond``'s ``queue``, the ``route_discord_interaction`` task) a
linked user's command is acknowledged after one read (is the user linked?) and its writes (the
token, the webhook key, the message log, the envelope) happen in ``route_deferred`` right
after, off the request; a paused tenant's notice then edits the deferred response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from control.channels import discord
from control.channels.base import ChannelAdapter
from control.channels.discord import EPHEMERAL, Interaction
from control.db import write_transaction
from control.models import Tenant
from control.services import channel_texts, discord_interactions, lifecycle, linking
from control.services.channel_routing import route_inbound
from control.services.secrets_box import SecretsBox
from wire.bus import Bus

NOT_A_COMMAND = "Hermes answers its slash commands and direct messages only."


def respond(interaction: Interaction, bus: Bus, box: SecretsBox, *, envelope_key: bytes,
            paused_notice: Callable[[Tenant], str] | None = None,
            queue: Callable[[Interaction], object] | None = None) -> dict:
    """Return the interaction response (JSON object) for a verified ``interaction``.

    ``envelope_key`` and ``paused_notice`` are as for ``route_inbound``.  With ``queue`` (the
    ``route_discord_interaction`` task), a linked user's command for the agent is handed to it
    with its token encrypted (``route_deferred`` does the writes) and deferred at once.

    Raises:
        wire.errors.BusUnavailable: the command could not be published (the webhook answers
            503; nothing was recorded).
    """
    if interaction.type == discord.PING:
        return {"type": discord.PONG}
    if interaction.type != discord.APPLICATION_COMMAND:
        return _message(NOT_A_COMMAND)
    ephemeral = interaction.name in discord.EPHEMERAL_COMMANDS
    if queue is not None and interaction.name not in discord.CONTROL_COMMANDS:
        tenant = linking.tenant_for_chat("discord", interaction.user_id)
        if tenant is not None and not lifecycle.is_paused(tenant):
            queue(replace(interaction, token=box.encrypt(interaction.token)))
            return _deferred(ephemeral)
    with write_transaction():  # one commit for the token and the routing
        if interaction.name not in discord.CONTROL_COMMANDS:
            discord_interactions.remember(interaction, ephemeral, box)
        result = route_inbound(discord.interaction_message(interaction), bus, channel_texts.DISCORD,
                               envelope_key=envelope_key, paused_notice=paused_notice)
    if result.outcome in ("published", "duplicate"):
        return _deferred(ephemeral)
    return _message(result.answer or "There was nothing to send to your agent.")


def route_deferred(interaction: Interaction, bus: Bus, adapter: ChannelAdapter, *,
                   envelope_key: bytes, paused_notice: Callable[[Tenant], str] | None = None) -> str:
    """The queued half of ``respond``: store the token (``interaction.token`` is already
    encrypted), record and publish the command; a control-plane answer instead of the agent's
    (paused since the ack, nothing to send) replaces the deferred response's "thinking".

    Returns:
        The routing outcome.

    Raises:
        wire.errors.BusUnavailable: the bus is down (nothing recorded; the task retries within
            the token's 15 minutes).
        ChannelError: the answer could not be shown (the task retries; routing is idempotent).
    """
    ephemeral = interaction.name in discord.EPHEMERAL_COMMANDS
    message = discord.interaction_message(interaction)
    with write_transaction():
        discord_interactions.remember(interaction, ephemeral, None)
        result = route_inbound(message, bus, channel_texts.DISCORD, envelope_key=envelope_key,
                               paused_notice=paused_notice)
    if result.answer or result.outcome not in ("published", "duplicate"):
        adapter.edit(message.chat_id, "@original", result.answer or "There was nothing to send to your agent.")
    return result.outcome


def _deferred(ephemeral: bool) -> dict:
    return {"type": discord.DEFERRED_CHANNEL_MESSAGE, **({"data": {"flags": EPHEMERAL}} if ephemeral else {})}


def _message(text: str) -> dict:
    return {"type": discord.CHANNEL_MESSAGE, "data": {"content": text, "flags": EPHEMERAL}}


def on_gateway_dispatch(kind: str, data: dict, bus: Bus, send: Callable[[str, str], object], *,
                        envelope_key: bytes,
                        paused_notice: Callable[[Tenant], str] | None = None,
                        ingest_media: Callable[[str], object] | None = None) -> str | None:
    """Route one Gateway dispatch; DMs only (``discord.dm_message``), everything else ignored.

    Args:
        kind: the dispatch type (``MESSAGE_CREATE``, ...).
        data: its ``d``.
        bus: where envelopes go.
        send: ``send(channel_id, text)`` delivers the control plane's answer (REST).
        envelope_key: as for ``route_inbound``.
        paused_notice: as for ``route_inbound``.
        ingest_media: as for ``route_inbound`` (a DM's attachments).

    Returns:
        The routing outcome, or None for a dispatch that is not a person's DM.  A replayed
        dispatch (after RESUME) is a ``duplicate``: its message id is the idempotency key.
    """
    if kind != "MESSAGE_CREATE":
        return None
    message = discord.dm_message(data)
    if message is None:
        return None
    result = route_inbound(message, bus, channel_texts.DISCORD, envelope_key=envelope_key,
                           paused_notice=paused_notice, ingest_media=ingest_media)
    if result.answer:
        send(message.chat_id, result.answer)
    return result.outcome
