"""Initial schema: the tables of the first release (commit a4f4793).

A frozen copy of that release's models, so this step keeps creating the same schema however
``control/models.py`` changes later.  Later steps hold every change since.
"""

from __future__ import annotations

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


class _Base(Model):
    pass


class Tenant(_Base):
    email = CharField(null=True, unique=True)
    stripe_customer_id = CharField(null=True, unique=True)
    plan = CharField(null=True)
    status = CharField(default="pending")
    created_at = DateTimeField()
    updated_at = DateTimeField()


class Subscription(_Base):
    stripe_subscription_id = CharField(unique=True)
    tenant = ForeignKeyField(Tenant, null=True)
    stripe_customer_id = CharField(null=True, index=True)
    status = CharField(default="incomplete")
    plan = CharField(null=True)
    price_id = CharField(null=True)
    current_period_end = DateTimeField(null=True)
    created_at = DateTimeField()
    updated_at = DateTimeField()


class Machine(_Base):
    tenant = ForeignKeyField(Tenant, unique=True)
    plan = CharField()
    state = CharField(default="requested")
    address = CharField(null=True)
    detail = TextField(default="")
    attempts = IntegerField(default=0)
    requested_at = DateTimeField()
    provisioning_at = DateTimeField(null=True)
    ready_at = DateTimeField(null=True)
    failed_at = DateTimeField(null=True)
    updated_at = DateTimeField()


class WebhookEvent(_Base):
    provider = CharField()
    event_id = CharField()
    event_type = CharField(default="")
    received_at = DateTimeField()

    class Meta:
        indexes = ((("provider", "event_id"), True),)


class LinkToken(_Base):
    token = CharField(unique=True)
    tenant = ForeignKeyField(Tenant)
    created_at = DateTimeField()
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class ChatIdentity(_Base):
    channel = CharField()
    chat_id = CharField()
    user_id = CharField(default="")
    tenant = ForeignKeyField(Tenant)
    linked_at = DateTimeField()

    class Meta:
        indexes = ((("channel", "chat_id"), True),)


class Message(_Base):
    tenant = ForeignKeyField(Tenant)
    envelope_id = CharField()
    direction = CharField()
    channel = CharField()
    chat_id = CharField()
    text = TextField(default="")
    platform_message_id = CharField(null=True)
    created_at = DateTimeField()

    class Meta:
        indexes = ((("envelope_id", "direction"), True),)


class Delivery(_Base):
    envelope_id = CharField(unique=True)
    tenant = ForeignKeyField(Tenant)
    channel = CharField()
    chat_id = CharField()
    platform_message_id = CharField(null=True)
    last_text = TextField(default="")
    state = CharField(default="sending")
    recovered = BooleanField(default=False)
    created_at = DateTimeField()
    delivered_at = DateTimeField(null=True)


class Usage(_Base):
    tenant = ForeignKeyField(Tenant)
    envelope_id = CharField(null=True)
    model = CharField(default="")
    input_tokens = IntegerField(default=0)
    output_tokens = IntegerField(default=0)
    cost_cents = FloatField(default=0.0)
    latency_ms = IntegerField(default=0)
    created_at = DateTimeField()


class AttentionItem(_Base):
    kind = CharField()
    subject = CharField(default="")
    detail = TextField(default="")
    created_at = DateTimeField()
    resolved_at = DateTimeField(null=True)


MODELS = [Tenant, Subscription, Machine, WebhookEvent, LinkToken, ChatIdentity, Message,
          Delivery, Usage, AttentionItem]


def upgrade(migrator, database) -> None:
    """Create the first release's tables (``safe``: a table that exists is left alone)."""
    with database.bind_ctx(MODELS):
        database.create_tables(MODELS, safe=True)
