"""The tenant's dashboard settings as the agent applies them to each turn (issue #10).

The control plane puts the settings on every envelope it publishes (``Envelope.preferences``,
keys ``wire.protocol.PREFERENCE_KEYS``).  The agent stores the newest set it received in its
history prefs, so turns without them (cron runs, envelopes from an older control plane) follow
the same settings.  A value the agent cannot use (an unknown time zone) falls back to the
agent's own default rather than failing the turn: the dashboard validates it already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wire.protocol import PREFERENCE_KEYS, Envelope

STORE_KEY = "dashboard_preferences"
"""History pref under which the newest received settings are kept (JSON object)."""

ABOUT_MAX_CHARS = 1000
"""The dashboard's limit on the "about me" text; longer text is cut, never sent to the model whole."""


@dataclass(frozen=True)
class Preferences:
    """Settings of one turn.

    Attributes:
        timezone: the IANA zone to use (the dashboard's, else ``HERMES_TZ``).
        language: BCP 47 tag of the reply language, or None (answer in the user's language).
        model: the dashboard's model choice (a ``/model`` argument), or None.
        about: the user's text about themselves and how to answer, or None.
        chosen: True when the user set any of them on the dashboard.
    """

    timezone: str
    language: str | None = None
    model: str | None = None
    about: str | None = None
    chosen: bool = False


def adopt(history, envelope: Envelope) -> None:
    """Store ``envelope.preferences`` as the tenant's settings when it carries them.

    Args:
        history: the tenant's ``agent.history.History``.
        envelope: the envelope being answered; ``preferences`` None leaves the stored ones.
    """
    if envelope.preferences is None:
        return
    kept = {k: str(v) for k, v in envelope.preferences.items() if k in PREFERENCE_KEYS and v}
    encoded = json.dumps(kept, sort_keys=True)
    if history.pref(STORE_KEY) != encoded:
        history.set_pref(STORE_KEY, encoded)


def current(history, default_tz: str) -> Preferences:
    """Return the stored settings with ``default_tz`` (``HERMES_TZ``) where no usable zone is set."""
    raw = history.pref(STORE_KEY)
    try:
        stored = json.loads(raw) if raw else {}
    except ValueError:
        stored = {}
    zone = stored.get("timezone") or default_tz
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = default_tz
    about = stored.get("about")
    return Preferences(timezone=zone, language=stored.get("language") or None,
                       model=stored.get("model") or None,
                       about=about[:ABOUT_MAX_CHARS] if about else None, chosen=bool(stored))


def profile_section(prefs: Preferences, now: float) -> str:
    """Return the system prompt section describing the user's settings ("" when none are set).

    The date (not the time, so the prompt stays the same all day) is given in the user's zone;
    the ``current_time`` tool answers the exact time in the same zone.

    Args:
        prefs: the turn's settings.
        now: Unix seconds.
    """
    if not prefs.chosen:
        return ""
    today = datetime.fromtimestamp(now, UTC).astimezone(ZoneInfo(prefs.timezone))
    lines = [(f"- Time zone: {prefs.timezone} (today is {today:%A, %Y-%m-%d} there); give times "
             "and dates in it.")]
    if prefs.language:
        lines.append(f"- Reply in the language with BCP 47 tag {prefs.language!r} unless asked otherwise.")
    if prefs.about:
        lines.append("- What the user wrote about themselves and how they like answers:\n"
                     + "\n".join(f"  > {line}" for line in prefs.about.splitlines()))
    return "\n\n## The user's settings\n" + "\n".join(lines)
