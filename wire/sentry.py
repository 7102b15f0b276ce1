"""Sentry error reporting shared by the control plane and the agent (off without a DSN).

Both processes call ``init_sentry`` once at start with their own settings' ``SENTRY_DSN``.
What leaves the process is kept free of secrets in three layers:

* no default PII: ``send_default_pii`` is left at its default (False; sentry-sdk 2.75 deprecates
  passing it): no cookies, no ``Authorization``, no client IP, no user (sentry-sdk docs, "Data
  Collected");
* request bodies are never attached (``max_request_body_size="never"``: webhook bodies carry
  users' messages);
* ``EventScrubber`` with sentry-sdk's default denylist plus our own header and variable names,
  applied recursively, then ``before_send`` replaces every occurrence of a known secret value
  (the caller's API keys, tokens, webhook secrets) anywhere in the event with ``[Filtered]``.
"""

from __future__ import annotations

from collections.abc import Iterable

import sentry_sdk
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

FILTERED = "[Filtered]"
# Names (headers, variables, keys) whose values are secrets in Hermes, lower case; sentry-sdk
# compares lower-cased keys against the denylist.
HERMES_DENYLIST = [
    "x-telegram-bot-api-secret-token", "x_telegram_bot_api_secret_token", "stripe-signature",
    "stripe_signature", "x-api-key", "anthropic_api_key", "openai_api_key", "bus_url",
    "redis_url", "database_url", "hcloud_token", "agent_token", "routing_key", "dsn",
]
MIN_SECRET_CHARS = 8  # shorter "secrets" (test placeholders, "0") would blank ordinary text


def init_sentry(dsn: str, *, environment: str, secrets: Iterable[str] = (),
                integrations: list | None = None, release: str | None = None) -> bool:
    """Start sentry-sdk when ``dsn`` is set.

    Args:
        dsn: the project DSN (``https://<key>@<host>/<project>``); ``""`` leaves Sentry off.
        environment: ``env`` label of the events (staging, prod, local).
        secrets: values that must never leave the process (API keys, tokens); values shorter
            than ``MIN_SECRET_CHARS`` are ignored.
        integrations: extra sentry-sdk integrations (e.g. ``FlaskIntegration()``).
        release: release name, if known.

    Returns:
        True when Sentry was initialised.
    """
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        integrations=integrations or [],
        max_request_body_size="never",
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + HERMES_DENYLIST, recursive=True),
        before_send=secret_filter(secrets),
        traces_sample_rate=0.0,
    )
    return True


def secret_filter(secrets: Iterable[str]):
    """Return a sentry ``before_send`` hook masking each of ``secrets`` wherever it appears.

    Args:
        secrets: exact secret values; each is replaced by ``[Filtered]`` in every string of
            the event (messages, exception values, frame variables, headers, breadcrumbs).

    Returns:
        ``before_send(event, hint) -> event``.
    """
    values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def scrub(node):
        if isinstance(node, str):
            for value in values:
                node = node.replace(value, FILTERED)
            return node
        if isinstance(node, dict):
            return {key: scrub(item) for key, item in node.items()}
        if isinstance(node, list | tuple):
            return [scrub(item) for item in node]
        return node

    def before_send(event, _hint):
        return scrub(event) if values else event

    return before_send
