"""Sentry for the control plane (``SENTRY_DSN``; off when unset).

Unhandled errors in a route are rendered by ``control.errors.register_error_handlers`` as a
generic 500 and logged with their traceback; sentry-sdk's logging integration turns that log
record into an event and ``FlaskIntegration`` adds the request (method, route, headers without
cookies or ``Authorization``). Scrubbing rules: ``wire.sentry``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from control.settings import Settings
from wire.sentry import init_sentry


def init_app(settings: Settings) -> bool:
    """Start Sentry for this process when ``settings.sentry_dsn`` is set; return True if so."""
    if not settings.sentry_dsn:
        return False
    from sentry_sdk.integrations.flask import FlaskIntegration

    return init_sentry(settings.sentry_dsn, environment=settings.env, secrets=secrets_of(settings),
                       integrations=[FlaskIntegration()])


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value ``settings`` holds: tokens, keys, passphrases, URL passwords."""
    urls = (settings.database_url, settings.bus_url, settings.smtp_url,
            settings.rate_limit_storage)
    return [
        settings.secret_key, settings.stripe_secret_key, *settings.encryption_keys,
        settings.stripe_webhook_secret, settings.telegram_bot_token,
        settings.telegram_webhook_secret, settings.hcloud_token,
        settings.pulumi_config_passphrase, settings.archive_access_key,
        settings.archive_secret_key, settings.sentry_dsn,
        settings.llm_anthropic_api_key, settings.llm_openai_api_key,
        settings.llm_transcribe_api_key,
        *(urlsplit(url).password or "" for url in urls),
    ]
