"""Telling a tenant what happens to their agent (issue 20, "notices").

One catalogue of texts, one ``tell``: every chat the tenant linked on every platform (through
the ``send_notice`` task and that platform's adapter), the dashboard's web chat when the tenant
has a web account, and the account e-mail through the outbox (``control.services.mail``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from control.channels import web as web_channel
from control.channels.base import ChannelAdapter
from control.models import Account, ChatIdentity, Message, Tenant
from control.services import mail
from control.services.attention import raise_attention

log = logging.getLogger(__name__)

#: ``send(channel, identity, text)``: tell one linked person on one platform (the
#: ``send_notice`` Huey task: the adapter's ``direct_chat`` then ``send``, retried).
Send = Callable[[str, str, str], object]


class Notice(StrEnum):
    """What a tenant can be told; each has a subject and a text per language in ``CATALOGUE``."""

    READY = "ready"
    RESUMED = "resumed"
    RESTORED = "restored"
    FAILED = "failed"
    PAUSED = "paused"
    ARCHIVED = "archived"
    ENDED = "ended"
    PAYMENT_FAILED = "payment_failed"
    BUDGET_WARNING = "budget_warning"


DEFAULT_LANGUAGE = "en"

# (subject, text) per language (BCP 47 primary subtag) and notice.  Fields: ``{url}`` the
# billing page, ``{until}`` a UTC time, ``{retry}`` Stripe's next attempt (or ""), and the
# budget's ``{percent}``, ``{spent}`` and ``{budget}`` (US dollars).
CATALOGUE: dict[str, dict[Notice, tuple[str, str]]] = {
    "en": {
        Notice.READY: ("Your Hermes agent is ready", "Your Hermes agent is ready. Say hello!"),
        Notice.RESUMED: ("Your Hermes agent is back",
                         ("Welcome back! Your Hermes agent is running again, with everything it "
                         "knew.")),
        Notice.RESTORED: ("Your Hermes agent is restored",
                          ("Welcome back! Your Hermes agent was restored from its archive: its "
                          "memories, skills, scheduled jobs and history are back.")),
        Notice.FAILED: ("We could not start your Hermes agent",
                        ("Sorry, we could not start your Hermes agent. Our team has been alerted "
                        "and is on it; we will write to you here when it is up.")),
        Notice.PAUSED: ("Your Hermes agent is paused",
                        ("Your Hermes subscription has ended, so your agent is paused and will not "
                        "answer. Your memories, skills, scheduled jobs and history are kept until "
                        "{until} (UTC). Resubscribe at {url} to continue where you left off.")),
        Notice.ARCHIVED: ("Your Hermes agent was archived",
                          ("Your Hermes subscription has ended and your agent was shut down. Its "
                          "memories, skills, scheduled jobs and history are archived until "
                          "{until} (UTC). Resubscribe at {url} to get them back.")),
        Notice.ENDED: ("Your Hermes subscription has ended",
                       ("Your Hermes subscription has ended. Resubscribe at {url} to talk to your "
                       "agent again.")),
        Notice.PAYMENT_FAILED: ("Your Hermes payment failed",
                                ("The latest payment for your Hermes subscription failed{retry}. "
                                "Your agent keeps working while the payment is retried. Please "
                                "check your payment method at {url} .")),
        Notice.BUDGET_WARNING: ("Your Hermes agent used {percent} % of today's budget",
                                ("Heads-up: your agent has used {percent} % of today's model "
                                "budget (${spent:.2f} of ${budget:.2f}). It renews at 00:00 UTC; "
                                "past it your agent answers with the free local model or says "
                                "so.")),
    },
    "de": {
        Notice.READY: ("Dein Hermes-Agent ist bereit", "Dein Hermes-Agent ist bereit. Sag Hallo!"),
        Notice.RESUMED: ("Dein Hermes-Agent ist zurück",
                         ("Willkommen zurück! Dein Hermes-Agent läuft wieder, mit allem, was er "
                         "wusste.")),
        Notice.RESTORED: ("Dein Hermes-Agent ist wiederhergestellt",
                          ("Willkommen zurück! Dein Hermes-Agent wurde aus seinem Archiv "
                          "wiederhergestellt: Erinnerungen, Skills, geplante Aufgaben und Verlauf "
                          "sind wieder da.")),
        Notice.FAILED: ("Wir konnten deinen Hermes-Agenten nicht starten",
                        ("Leider konnten wir deinen Hermes-Agenten nicht starten. Unser Team ist "
                        "informiert und kümmert sich darum; wir melden uns hier, sobald er läuft.")),
        Notice.PAUSED: ("Dein Hermes-Agent ist pausiert",
                        ("Dein Hermes-Abo ist beendet, daher ist dein Agent pausiert und antwortet "
                        "nicht. Erinnerungen, Skills, geplante Aufgaben und Verlauf bleiben bis "
                        "{until} (UTC) erhalten. Schließ unter {url} wieder ein Abo ab, um dort "
                        "weiterzumachen, wo du aufgehört hast.")),
        Notice.ARCHIVED: ("Dein Hermes-Agent wurde archiviert",
                          ("Dein Hermes-Abo ist beendet und dein Agent wurde abgeschaltet. "
                          "Erinnerungen, Skills, geplante Aufgaben und Verlauf sind bis {until} "
                          "(UTC) archiviert. Schließ unter {url} wieder ein Abo ab, um sie "
                          "zurückzubekommen.")),
        Notice.ENDED: ("Dein Hermes-Abo ist beendet",
                       ("Dein Hermes-Abo ist beendet. Schließ unter {url} wieder ein Abo ab, um "
                       "mit deinem Agenten zu sprechen.")),
        Notice.PAYMENT_FAILED: ("Deine Hermes-Zahlung ist fehlgeschlagen",
                                ("Die letzte Zahlung für dein Hermes-Abo ist fehlgeschlagen{retry}. "
                                "Dein Agent arbeitet weiter, während die Zahlung wiederholt wird. "
                                "Bitte prüfe deine Zahlungsmethode unter {url} .")),
        Notice.BUDGET_WARNING: ("Dein Hermes-Agent hat {percent} % des Tagesbudgets verbraucht",
                                ("Hinweis: Dein Agent hat {percent} % des heutigen Modellbudgets "
                                "verbraucht (${spent:.2f} von ${budget:.2f}). Es erneuert sich um "
                                "00:00 UTC; danach antwortet dein Agent mit dem kostenlosen "
                                "lokalen Modell oder sagt es dir.")),
    },
    "es": {
        Notice.READY: ("Tu agente Hermes está listo", "Tu agente Hermes está listo. ¡Salúdalo!"),
        Notice.RESUMED: ("Tu agente Hermes ha vuelto",
                         ("¡Bienvenido de nuevo! Tu agente Hermes vuelve a funcionar, con todo lo "
                         "que sabía.")),
        Notice.RESTORED: ("Tu agente Hermes se ha restaurado",
                          ("¡Bienvenido de nuevo! Tu agente Hermes se restauró desde su archivo: "
                          "sus recuerdos, habilidades, tareas programadas e historial han vuelto.")),
        Notice.FAILED: ("No pudimos iniciar tu agente Hermes",
                        ("Lo sentimos, no pudimos iniciar tu agente Hermes. Nuestro equipo ya está "
                        "avisado y trabajando en ello; te escribiremos aquí cuando funcione.")),
        Notice.PAUSED: ("Tu agente Hermes está en pausa",
                        ("Tu suscripción a Hermes ha terminado, así que tu agente está en pausa y "
                        "no responderá. Sus recuerdos, habilidades, tareas programadas e historial "
                        "se conservan hasta el {until} (UTC). Vuelve a suscribirte en {url} para "
                        "continuar donde lo dejaste.")),
        Notice.ARCHIVED: ("Tu agente Hermes se ha archivado",
                          ("Tu suscripción a Hermes ha terminado y tu agente se apagó. Sus "
                          "recuerdos, habilidades, tareas programadas e historial están archivados "
                          "hasta el {until} (UTC). Vuelve a suscribirte en {url} para "
                          "recuperarlos.")),
        Notice.ENDED: ("Tu suscripción a Hermes ha terminado",
                       ("Tu suscripción a Hermes ha terminado. Vuelve a suscribirte en {url} para "
                       "hablar de nuevo con tu agente.")),
        Notice.PAYMENT_FAILED: ("Falló tu pago de Hermes",
                                ("El último pago de tu suscripción a Hermes falló{retry}. Tu agente "
                                "sigue funcionando mientras se reintenta el pago. Revisa tu método "
                                "de pago en {url} .")),
        Notice.BUDGET_WARNING: ("Tu agente Hermes usó el {percent} % del presupuesto de hoy",
                                ("Aviso: tu agente ha usado el {percent} % del presupuesto de "
                                "modelos de hoy (${spent:.2f} de ${budget:.2f}). Se renueva a las "
                                "00:00 UTC; después tu agente responde con el modelo local "
                                "gratuito o te lo dice.")),
    },
}


def language_of(tag: str | None) -> str:
    """Return the catalogue language for a BCP 47 tag (``de-AT`` → ``de``; RFC 5646 §2.1: the
    primary subtag comes first), ``DEFAULT_LANGUAGE`` when none is set or it is not offered."""
    primary = (tag or "").split("-")[0].lower()
    return primary if primary in CATALOGUE else DEFAULT_LANGUAGE


def render(notice: Notice, language: str | None = None, **fields) -> tuple[str, str]:
    """Return ``(subject, text)`` of ``notice`` in ``language`` (a BCP 47 tag or None).

    Raises:
        KeyError: a field the text names is missing.
    """
    subject, text = CATALOGUE[language_of(language)][notice]
    return subject.format(**fields), text.format(**fields)


@dataclass
class Told:
    """Where ``tell`` sent a notice: ``chats`` ``[(channel, identity)]`` queued, whether the web
    chat got it, and the address e-mailed (None: no address on record)."""

    chats: list[tuple[str, str]] = field(default_factory=list)
    web: bool = False
    email: str | None = None

    @property
    def count(self) -> int:
        """How many places were told (chats, web chat, e-mail)."""
        return len(self.chats) + int(self.web) + int(self.email is not None)


def tell(tenant: Tenant, notice: Notice, send: Send, **fields) -> Told:
    """Tell ``tenant`` ``notice`` everywhere it can be reached, in its language.

    * every ``ChatIdentity`` of the tenant, whatever the platform: ``send(channel, identity,
      text)`` (the ``send_notice`` task opens the direct conversation and sends);
    * the dashboard's web chat, when the tenant has a web account: an outgoing ``Message`` of
      the web conversation, shown the next time the chat page is open;
    * the tenant's e-mail address through the outbox (``mail.queue_mail``, in the caller's
      transaction when there is one).

    A tenant with none of these raises the attention item ``notice_undelivered`` so an
    operator knows the user was not told; a deleted tenant is told nothing.

    Args:
        tenant: the tenant.
        notice: what to tell.
        send: the ``send_notice`` task (or any ``Send``).
        **fields: the notice's text fields (``CATALOGUE``).

    Returns:
        A ``Told``.

    Raises:
        KeyError: a field the text names is missing.
    """
    told = Told()
    if tenant.deleted_at is not None:
        return told
    subject, text = render(notice, tenant.language, **fields)
    for chat in (ChatIdentity.select().where(ChatIdentity.tenant == tenant.id)
                 .order_by(ChatIdentity.linked_at, ChatIdentity.id)):
        send(chat.channel, chat.chat_id, text)
        told.chats.append((chat.channel, chat.chat_id))
    if Account.select().where(Account.tenant == tenant.id).exists():
        Message.create(tenant=tenant.id, envelope_id=f"control-{uuid.uuid4().hex}", direction="out",
                       channel=web_channel.CHANNEL, chat_id=web_channel.chat_id(tenant.id), text=text)
        told.web = True
    if tenant.email:
        mail.queue_mail(tenant.email, subject, f"Hello,\n\n{text}\n\nHermes Max\n")
        told.email = tenant.email
    if not told.count:
        raise_attention("notice_undelivered", str(tenant.id),
                        f"{notice}: the tenant has no linked chat, web account or e-mail: {text}")
    log.info("tenant %s told %s: %d chat(s), web %s, e-mail %s", tenant.id, notice,
             len(told.chats), told.web, told.email is not None)
    return told


def send_direct(adapter: ChannelAdapter, identity: str, text: str) -> Message:
    """Send ``text`` to the linked person ``identity`` on ``adapter``'s platform, in the bot's
    direct conversation with them (``ChannelAdapter.direct_chat``), and log it as a
    control-plane answer (``Message`` ``control-…``, which delivery recovery skips).

    Args:
        adapter: the platform's adapter.
        identity: ``ChatIdentity.chat_id`` of the linked person.
        text: the notice.

    Returns:
        The logged ``Message`` (its ``platform_message_id`` the platform's id).

    Raises:
        ChannelError: the platform refused (``permanent``) or could not be reached.
    """
    chat_id = adapter.direct_chat(identity)
    message_id = adapter.send(chat_id, text[:adapter.limits.max_text])
    linked = ChatIdentity.get_or_none((ChatIdentity.channel == adapter.name)
                                      & (ChatIdentity.chat_id == identity))
    return Message.create(tenant=linked.tenant_id if linked else None,
                          envelope_id=f"control-{uuid.uuid4().hex}", direction="out",
                          channel=adapter.name, chat_id=chat_id, text=text,
                          platform_message_id=message_id)
