"""Discord inbound: a verified interaction → its HTTP response; a Gateway DM → an answer or an envelope.

Interaction responses (https://discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction):
PING gets PONG (type 1).  A slash command for the agent gets a deferred response (type 5: the
user sees "Hermes is thinking..."), returned in the webhook's own HTTP answer well inside the
3-second limit; the delivery worker then edits that original response with the streamed reply.
Its token is stored first (encrypted, ``discord_interactions``), so the reply can always be
delivered.  ``/link``, ``/help``, an unlinked user and a paused tenant are answered at once
(type 4), ephemeral (flag 64: a link code is nobody else's business); ``/usage`` and
``/memory`` defer ephemerally, so the agent's answer is private too.
"""

from __future__ import annotations

from collections.abc import Callable

from control.channels import discord
from control.channels.discord import EPHEMERAL, Interaction
from control.db import write_transaction
from control.models import Tenant
from control.services import channel_texts, discord_interactions
from control.services.channel_routing import route_inbound
from control.services.secrets_box import SecretsBox
from wire.bus import Bus

NOT_A_COMMAND = "Hermes answers its slash commands and direct messages only."


def respond(interaction: Interaction, bus: Bus, box: SecretsBox, *, envelope_key: bytes,
            paused_notice: Callable[[Tenant], str] | None = None) -> dict:
    """Return the interaction response (JSON object) for a verified ``interaction``.

    ``envelope_key`` and ``paused_notice`` are as for ``route_inbound``.

    Raises:
        wire.errors.BusUnavailable: the command could not be published (the webhook answers
            503; nothing was recorded).
    """
    if interaction.type == discord.PING:
        return {"type": discord.PONG}
    if interaction.type != discord.APPLICATION_COMMAND:
        return _message(NOT_A_COMMAND)
    ephemeral = interaction.name in discord.EPHEMERAL_COMMANDS
    with write_transaction():  # one commit for the token and the routing
        if interaction.name not in discord.CONTROL_COMMANDS:
            discord_interactions.remember(interaction, ephemeral, box)
        result = route_inbound(discord.interaction_message(interaction), bus, channel_texts.DISCORD,
                               envelope_key=envelope_key, paused_notice=paused_notice)
    if result.outcome in ("published", "duplicate"):
        return {"type": discord.DEFERRED_CHANNEL_MESSAGE,
                **({"data": {"flags": EPHEMERAL}} if ephemeral else {})}
    return _message(result.answer or "There was nothing to send to your agent.")


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
