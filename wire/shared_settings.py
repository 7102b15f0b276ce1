"""Settings the control plane (``control.settings.Settings``) and the agent
(``agent.config.AgentConfig``) both read, declared once: one variable, one default, one meaning.

Each function returns a fresh ``wire.declared.setting`` field (a dataclass field belongs to one
class), so both classes write ``heartbeat_interval: float = shared_settings.heartbeat_interval()``.
"""

from __future__ import annotations

from typing import Any

from wire import logs
from wire.declared import setting


def heartbeat_interval() -> Any:
    """``HERMES_HEARTBEAT_INTERVAL``: seconds between an agent's heartbeats (float)."""
    return setting(
        "HERMES_HEARTBEAT_INTERVAL", 30.0, parse=float,
        doc="seconds between an agent's lifecycle heartbeats on its events stream; the control "
            "plane hands its own value to every agent and marks a machine unhealthy after "
            "`HERMES_MISSED_HEARTBEATS` missed ones")


def visibility_timeout() -> Any:
    """``HERMES_VISIBILITY_TIMEOUT``: seconds before an unacknowledged bus entry is redelivered."""
    return setting(
        "HERMES_VISIBILITY_TIMEOUT", 30.0, parse=float,
        doc="seconds before an unacknowledged bus entry (an envelope for the agent, an event for "
            "the delivery worker) is redelivered")


def bus_ca_file() -> Any:
    """``HERMES_BUS_CA_FILE``: the PEM CA verifying a ``rediss://`` bus (path, ``""``: system CAs)."""
    return setting(
        "HERMES_BUS_CA_FILE", "",
        doc="PEM CA that verifies a `rediss://` bus (issued by `roles/redis`); unset → system CAs")


def log_format() -> Any:
    """``HERMES_LOG_FORMAT``: ``console`` or ``json`` (``wire.logs.format_from_env``)."""
    return setting(
        "HERMES_LOG_FORMAT", "console", read=logs.format_from_env,
        shown="`console` (`json` on the control host and tenant VMs)",
        doc="log lines of control and agent (`wire/logs.py`): `json` is one object per line with "
            "`request_id`, `tenant`, `envelope_id`, so `grep <envelope_id>` follows one message "
            "from webhook to agent turn to delivery; `console` is readable lines; the control "
            "plane passes it to the agents it starts; answers carry `X-Request-ID` (an incoming "
            "well-formed one is kept)")


def sentry_dsn() -> Any:
    """``SENTRY_DSN``: the Sentry project of unhandled errors (``""``: off)."""
    return setting(
        "SENTRY_DSN", "", shown="unset (off)",
        doc="control and agent: Sentry project for unhandled errors, without request bodies, "
            "cookies, `Authorization` or any configured secret (`wire/sentry.py`); agents' "
            "events say `environment=agent`")
