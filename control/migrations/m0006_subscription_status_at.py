"""Subscription status time: the Stripe event time of each subscription's status (issue #10).

``subscription`` gains ``status_at`` (naive UTC, nullable): the ``created`` time of the event
that set ``status``, so an older event delivered late never changes it
(https://docs.stripe.com/webhooks#event-ordering).
"""

from __future__ import annotations

from peewee import DateTimeField

from control.migrations import add_column_if_absent


def upgrade(migrator, database) -> None:
    """Add ``subscription.status_at`` when absent."""
    add_column_if_absent(migrator, database, "subscription", "status_at", DateTimeField(null=True))
