"""The tokens of Discord interactions being answered: stored encrypted until the reply is done.

A slash command's reply is written through the interaction's webhook token, which the agent
never sees (the envelope carries ``interaction:<id>`` as its chat id).  The webhook handler
stores the token, encrypted with ``control.services.secrets_box`` (it lets anyone edit the
reply for 15 minutes), before it publishes the envelope; the delivery worker's
``DiscordAdapter`` reads it back.  Rows older than the token's life are useless and deleted by
``prune`` (the channel watchdog's periodic task calls it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from control.channels.base import ChannelError
from control.channels.discord import INTERACTION_TOKEN_TTL, Interaction, InteractionTarget
from control.models import DiscordInteraction, utcnow
from control.services.secrets_box import SecretsBox


def remember(interaction: Interaction, ephemeral: bool, box: SecretsBox | None) -> None:
    """Store ``interaction``'s token, encrypted with ``box`` (None: ``interaction.token`` is
    already ``box.encrypt``-ed, as ``discord_routing`` queues it); a retried interaction keeps
    the first row."""
    token = box.encrypt(interaction.token) if box is not None else interaction.token
    DiscordInteraction.insert(interaction_id=interaction.id,
                              application_id=interaction.application_id,
                              token=token, ephemeral=ephemeral,
                              ).on_conflict_ignore().execute()


def target_lookup(box: SecretsBox) -> Callable[[str], InteractionTarget]:
    """Return ``interaction id -> InteractionTarget`` for ``DiscordAdapter``.

    The returned function raises ``ChannelError`` (permanent, 401 as Discord answers an
    expired token) for an unknown interaction or one older than ``INTERACTION_TOKEN_TTL``.
    """

    def lookup(interaction_id: str) -> InteractionTarget:
        row = DiscordInteraction.get_or_none(DiscordInteraction.interaction_id == interaction_id)
        if row is None or row.created_at < utcnow() - timedelta(seconds=INTERACTION_TOKEN_TTL):
            raise ChannelError(f"interaction {interaction_id}: token unknown or expired (15 min)",
                               status=401, permanent=True)
        return InteractionTarget(row.application_id, box.decrypt(row.token), row.ephemeral)

    return lookup


def prune(now=None) -> int:
    """Delete the rows whose token has expired; return how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=INTERACTION_TOKEN_TTL)
    return DiscordInteraction.delete().where(DiscordInteraction.created_at < cutoff).execute()
