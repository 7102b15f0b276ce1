"""The control plane's long-lived parts, built once from ``Settings``.

``Runtime`` owns the database, the bus, the Huey queue and its tasks, the Bot API client and
(lazily) the provisioner; the Flask app, the workers and the CLI all share one instance.
"""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path

from control.channels.telegram import BotApiClient
from control.db import init_database
from control.services import agent_settings
from control.settings import Settings
from control.tasks import ControlTasks, create_huey
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
        self.tasks = ControlTasks(self)
        self._provisioner = provisioner
        self._lock = threading.Lock()
        self.workers: dict[str, threading.Thread] = {}

    @property
    def provisioner(self):
        """The machine provider (``LocalProvisioner`` unless configured otherwise)."""
        with self._lock:
            if self._provisioner is None:
                from control.providers.factory import provisioner_from_settings

                self._provisioner = provisioner_from_settings(self.settings)
            return self._provisioner

    @cached_property
    def bot(self) -> BotApiClient:
        """The Telegram Bot API client."""
        return BotApiClient(self.settings.telegram_bot_token, self.settings.telegram_api_base)

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
        self.db.close()
