"""The control plane's long-lived parts, built once from ``Settings``.

``Runtime`` owns the database, the bus, the Huey queue and its tasks, the Bot API client and
(lazily) the provisioner; the Flask app, the workers and the CLI all share one instance.
"""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path

from control.channels.discord import DiscordAdapter, DiscordRestClient
from control.channels.telegram import BotApiClient
from control.db import init_database
from control.services import agent_settings, discord_interactions, routing
from control.services.secrets_box import box_from_settings
from control.services.whatsapp_window import in_window
from control.settings import Settings
from control.tasks import PROVISION_QUEUE, ControlTasks, create_huey
from wire.factory import bus_from_url


class Runtime:
    """Shared control-plane resources.

    Args:
        settings: the configuration.
        provisioner: a ``Provisioner``; default built from ``settings.provisioner`` on first use.
        upgrade_schema: apply pending database migrations (embedded mode); when False (the
            default, production) raise ``SchemaOutOfDate`` if any are pending.
    """

    def __init__(self, settings: Settings, provisioner=None, upgrade_schema: bool = False):
        self.settings = settings
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.db = init_database(settings.database_url, upgrade=upgrade_schema)
        self.bus = bus_from_url(settings.bus_url, visibility_timeout=settings.visibility_timeout,
                                ca_file=settings.bus_ca_file)
        self.huey = create_huey(settings)
        self.provision_huey = create_huey(settings, name=PROVISION_QUEUE)
        self.tasks = ControlTasks(self)
        self._provisioner = provisioner
        self._lock = threading.Lock()
        self.workers: dict[str, threading.Thread] = {}

    @property
    def provisioner(self):
        """The machine provider (``LocalProvisioner`` unless configured otherwise)."""
        with self._lock:
            if self._provisioner is None:
                # deferred: the provisioner stack (tenacity, infra: ~60 ms) loads only once one is built
                from control.providers.factory import provisioner_from_settings

                self._provisioner = provisioner_from_settings(self.settings)
            return self._provisioner

    @cached_property
    def bot(self) -> BotApiClient:
        """The Telegram Bot API client."""
        return BotApiClient(self.settings.telegram_bot_token, self.settings.telegram_api_base)

    @cached_property
    def envelope_key(self) -> bytes:
        """The key of platform envelope ids (``routing.envelope_key`` of ``HERMES_SECRET_KEY``).

        Raises:
            ConfigError: no secret key outside local mode (``control.web.auth.secret_key``).
        """
        # deferred: web stack (flask-login, flask-wtf, flask-limiter: ~0.25 s); most Runtime users skip it
        from control.web.auth import secret_key

        return routing.envelope_key(secret_key(self.settings))

    @cached_property
    def secrets_box(self):
        """The ``SecretsBox`` for stored third-party secrets (``box_from_settings``)."""
        return box_from_settings(self.settings)

    @cached_property
    def discord_rest(self):
        """The Discord REST client (``DISCORD_BOT_TOKEN``, ``DISCORD_API_BASE``)."""
        return DiscordRestClient(self.settings.discord_bot_token, self.settings.discord_api_base)

    @cached_property
    def discord_adapter(self):
        """The ``DiscordAdapter`` (interaction tokens read back through ``secrets_box``)."""
        return DiscordAdapter(self.discord_rest, discord_interactions.target_lookup(self.secrets_box))

    def channel_adapters(self) -> dict:
        """The delivery worker's adapters besides Telegram's: ``{channel: ChannelAdapter}`` for
        every platform that is configured (Discord: ``DISCORD_BOT_TOKEN`` set; Slack:
        ``SLACK_SIGNING_SECRET`` set, tokens from the installation store; WhatsApp:
        ``WHATSAPP_APP_SECRET``, ``WHATSAPP_ACCESS_TOKEN`` and ``WHATSAPP_PHONE_NUMBER_ID`` set)."""
        adapters = {}
        if self.settings.discord_bot_token:
            adapters["discord"] = self.discord_adapter
        if self.settings.slack_signing_secret:
            # deferred: slack_bolt, slack_sdk (~50 ms): workers and the CLI load them only for Slack
            from control.services.slack_install import slack_adapter

            adapters["slack"] = slack_adapter(self.secrets_box, self.settings.slack_api_base)
        if self.whatsapp_adapter is not None:
            adapters["whatsapp"] = self.whatsapp_adapter
        return adapters

    @cached_property
    def whatsapp_adapter(self):
        """The ``WhatsAppAdapter`` when WhatsApp is configured (``WhatsAppConfig.enabled``), else None."""
        # deferred: pywa (~0.2 s): workers and the CLI load it only when WhatsApp is configured
        from control.channels.whatsapp import Template, WhatsAppAdapter, WhatsAppConfig

        config = WhatsAppConfig.from_settings(self.settings)
        if not config.enabled:
            return None
        return WhatsAppAdapter(config.access_token, config.phone_number_id, in_window,
                               config.api_base, Template.parse(config.template))

    def agent_env(self) -> dict[str, str]:
        """Environment handed to every agent, whatever its plan (``agent_settings.base_agent_env``):
        bus URL, redelivery timeout, control URL, time zone, Redis CA path, LLM settings and the
        per-plan budgets that ``agent_settings.agent_env_for`` resolves once the plan is known.

        ``HERMES_BUS_URL`` here is the control plane's own bus URL; for a Redis bus
        ``provisioning.run_provisioning`` replaces it with the tenant's ACL user's URL, so no
        agent ever receives the admin credentials.
        """
        return agent_settings.base_agent_env(self.settings)

    def workers_alive(self) -> dict[str, bool]:
        """Return ``{worker name: alive}`` for the background workers started by ``hermes serve``."""
        return {name: thread.is_alive() for name, thread in self.workers.items()}

    def close(self) -> None:
        """Release the provisioner (stopping local agents), the bus and the Bot API client."""
        if self._provisioner is not None:
            self._provisioner.close()
        self.bus.close()
        if "bot" in self.__dict__:
            self.bot.close()
        if "discord_rest" in self.__dict__:
            self.discord_rest.close()
        if self.__dict__.get("whatsapp_adapter") is not None:
            self.whatsapp_adapter.close()
        self.db.close()
